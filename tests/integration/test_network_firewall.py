"""The firewall with real traffic: a real bridge, netns as instances, packets sent and dropped.

Spoofing tests first send the spoofed traffic while the sender's NIC is not policed (it must get
through: the test can fail), then police the NIC and send it again (it must not).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterator

import pytest

from jaula.errors import Exists
from jaula.network import nft
from jaula.network.firewall import Firewall
from jaula.network.plan import HOST_ALL, HOST_DNS, HOST_NONE, ISOLATE, PortForward
from tests.support.firewall_topology import Topology, leftovers, sh, wait_for

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: netns, bridges, nftables")]

TABLE = f"jt{os.getpid()}"


@pytest.fixture
def topo() -> Iterator[Topology]:
    host_nat = sh("nft", "-j", "list", "table", "ip", "nat", check=False).stdout
    t = Topology()
    fw = Firewall(TABLE)
    try:
        yield t
    finally:
        fw.destroy()
        t.close()
    assert leftovers(table=TABLE) == []
    assert sh("nft", "-j", "list", "table", "ip", "nat", check=False).stdout == host_nat, "host's ip nat touched"


@pytest.fixture
def fw() -> Firewall:
    return Firewall(TABLE)


def police(fw: Firewall, t: Topology, *names: str, **net: object) -> None:
    n = t.network(**net)
    fw.ensure_network(n)
    for name in names:
        fw.add_nic(n, t.nics[name])


# --- anti-spoofing -------------------------------------------------------------------------------------
def test_spoofed_ipv4_source_dropped(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "b")
    spoof = f"{topo.ip4('a').rsplit('.', 1)[0]}.50"
    topo.run("a", "ip", "addr", "add", f"{spoof}/25", "dev", "eth0")
    assert topo.ping("a", topo.ip4("b"), source=spoof), "control: unpoliced spoofing gets through"
    fw.add_nic(topo.network(), topo.nics["a"])
    topo.flush_neighbours()
    assert not topo.ping("a", topo.ip4("b"), source=spoof, tries=1)
    assert not topo.ping("a", topo.gw4, source=spoof, tries=1)
    assert topo.ping("a", topo.ip4("b"), source=topo.ip4("a")), "its own address still works"


def test_spoofed_ipv6_source_dropped(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "b")
    spoof = f"{topo.ip6('a')[:-1]}50"
    topo.run("a", "ip", "addr", "add", f"{spoof}/64", "dev", "eth0", "nodad")
    assert topo.ping("a", topo.ip6("b"), source=spoof), "control: unpoliced spoofing gets through"
    fw.add_nic(topo.network(), topo.nics["a"])
    topo.flush_neighbours()
    assert not topo.ping("a", topo.ip6("b"), source=spoof, tries=1)
    assert topo.ping("a", topo.ip6("b"), source=topo.ip6("a")), "its own address (and link-local ND) still works"


def test_spoofed_mac_dropped(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "b")
    topo.run("a", "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99")
    topo.flush_neighbours()
    assert topo.ping("a", topo.ip4("b")), "control: unpoliced spoofing gets through"
    fw.add_nic(topo.network(), topo.nics["a"])
    topo.flush_neighbours()
    assert not topo.ping("a", topo.ip4("b"), tries=1)
    topo.run("a", "ip", "link", "set", "eth0", "address", topo.nics["a"].mac)
    assert topo.ping("a", topo.ip4("b")), "back to its own MAC it works"


def test_gratuitous_arp_for_anothers_address_dropped(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "b")
    b_ip, b_mac, a_mac = topo.ip4("b"), topo.nics["b"].mac, topo.nics["a"].mac

    def host_sees(mac: str) -> bool:
        out = sh("ip", "neigh", "show", b_ip, "dev", topo.bridge).stdout
        return f"lladdr {mac}" in out

    def claim() -> None:
        assert sh("busybox", "ping", "-c1", "-W1", b_ip).returncode == 0
        assert host_sees(b_mac)
        topo.run("a", "ip", "addr", "add", f"{b_ip}/32", "dev", "eth0")
        topo.run("a", "busybox", "arping", "-U", "-c", "2", "-w", "1", "-I", "eth0", "-s", b_ip, b_ip)
        topo.run("a", "ip", "addr", "del", f"{b_ip}/32", "dev", "eth0")

    claim()
    assert wait_for(lambda: host_sees(a_mac)), "control: unpoliced, the host's neighbour table is poisoned"
    sh("ip", "neigh", "flush", "dev", topo.bridge)
    fw.add_nic(topo.network(), topo.nics["a"])
    claim()
    assert host_sees(b_mac) and not wait_for(lambda: host_sees(a_mac), 1.0)


def test_neighbour_advertisement_for_anothers_address_dropped(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "b")
    b6, b_mac, a_mac = topo.ip6("b"), topo.nics["b"].mac, topo.nics["a"].mac

    def host_sees(mac: str) -> bool:
        return f"lladdr {mac}" in sh("ip", "-6", "neigh", "show", b6, "dev", topo.bridge).stdout

    def claim() -> None:
        assert sh("busybox", "ping", "-c1", "-W1", b6).returncode == 0
        assert host_sees(b_mac)
        topo.send_nd("a", "na", target=b6)

    claim()
    assert wait_for(lambda: host_sees(a_mac)), "control: unpoliced, the host's neighbour table is poisoned"
    sh("ip", "-6", "neigh", "flush", "dev", topo.bridge)
    fw.add_nic(topo.network(), topo.nics["a"])
    claim()
    assert host_sees(b_mac) and not wait_for(lambda: host_sees(a_mac), 1.0)


def test_router_advertisement_from_an_instance_dropped(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "b")
    topo.run("b", "sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=1")

    def b_routes_via_a() -> bool:
        return "default via fe80::" in topo.run("b", "ip", "-6", "route", "show", "default").stdout

    topo.send_nd("a", "ra")
    assert wait_for(b_routes_via_a), "control: unpoliced, b takes a as its IPv6 router"
    topo.run("b", "ip", "-6", "route", "flush", "default")
    fw.add_nic(topo.network(), topo.nics["a"])
    topo.send_nd("a", "ra")
    assert not wait_for(b_routes_via_a, 1.0)


def test_dhcp_server_replies_from_an_instance_dropped(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "a", "b")
    topo.serve("b", "udp", "0.0.0.0", 68)
    assert topo.ask("a", "udp", topo.ip4("b"), 68, sport=6767) == topo.ip4("a"), "control: another source port"
    assert topo.ask("a", "udp", topo.ip4("b"), 68, sport=67, tries=1) is None


# --- isolation, host protection ----------------------------------------------------------------------
def test_isolation_both_ways_and_live(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "a", "b")
    assert topo.ping("a", topo.ip4("b")) and topo.ping("b", topo.ip4("a"))
    fw.update_network(topo.network(isolation=ISOLATE))
    assert not topo.ping("a", topo.ip4("b"), tries=1)
    assert not topo.ping("b", topo.ip4("a"), tries=1)
    assert not topo.ping("b", topo.ip6("a"), tries=1)
    assert topo.ping("a", topo.gw4), "the gateway stays reachable"
    fw.add_nic(topo.network(isolation=ISOLATE), topo.nics["c"])
    assert not topo.ping("c", topo.ip4("a"), tries=1), "a NIC added later is isolated too"
    fw.update_network(topo.network())
    assert topo.ping("a", topo.ip4("b")) and topo.ping("c", topo.ip4("a"))


def test_host_access_none_dns_all(topo: Topology, fw: Firewall) -> None:
    for proto in ("tcp", "udp"):
        topo.serve(None, proto, topo.gw4, 53)
        topo.serve(None, proto, topo.gw6, 53)
    topo.serve(None, "tcp", topo.gw4, 8081)
    topo.serve(None, "tcp", topo.host_out, 8082)
    topo.serve("a", "tcp", "0.0.0.0", 7000)
    police(fw, topo, "a", host_access=HOST_DNS)
    a4 = topo.ip4("a")
    assert topo.ask("a", "tcp", topo.gw4, 53) == a4
    assert topo.ask("a", "udp", topo.gw4, 53) == a4
    assert topo.ask("a", "udp", topo.gw6, 53) == topo.ip6("a")
    assert topo.ping("a", topo.gw4) and topo.ping("a", topo.gw6)
    assert topo.ask("a", "tcp", topo.gw4, 8081, tries=1) is None
    assert topo.ask("a", "tcp", topo.host_out, 8082, tries=1) is None, "the host's other addresses are protected too"
    assert topo.ask(None, "tcp", a4, 7000) == topo.gw4, "the host reaches the instance: replies pass"

    fw.update_network(topo.network(host_access=HOST_ALL))
    assert topo.ask("a", "tcp", topo.gw4, 8081) == a4
    assert topo.ask("a", "tcp", topo.host_out, 8082) == a4

    fw.update_network(topo.network(host_access=HOST_NONE))
    assert topo.ask("a", "udp", topo.gw4, 53, tries=1) is None
    assert topo.ask("a", "tcp", topo.gw4, 53, tries=1) is None
    assert not topo.ping("a", topo.gw4, tries=1)
    assert topo.ping("a", topo.ip6("b")) and topo.ping("b", topo.ip6("a")), "ND between instances works"
    assert topo.ask(None, "tcp", a4, 7000) == topo.gw4


# --- NAT and port forwards ---------------------------------------------------------------------------
def test_outbound_nat_masquerades_and_can_be_turned_off(topo: Topology, fw: Firewall) -> None:
    topo.serve("o", "tcp", "0.0.0.0", 9000)
    assert topo.ask("a", "tcp", topo.outside_ip, 9000, tries=1) is None, "control: without NAT no way back"
    police(fw, topo, "a")
    assert topo.ask("a", "tcp", topo.outside_ip, 9000) == topo.host_out
    topo.serve("o", "tcp", "::", 9001)
    assert topo.ask("a", "tcp", topo.outside_ip6, 9001) == topo.host_out6, "IPv6 is masqueraded too"
    assert topo.ask("b", "tcp", topo.outside_ip, 9000) == topo.host_out, "unpoliced NIC, same subnet: NAT too"
    fw.update_network(topo.network(nat=False))
    assert topo.ask("a", "tcp", topo.outside_ip, 9000, tries=1) is None
    assert topo.ask("a", "tcp", topo.outside_ip6, 9001, tries=1) is None


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_port_forward_from_outside_host_and_neighbour_then_removed(topo: Topology, fw: Firewall,
                                                                  proto: str) -> None:
    police(fw, topo, "a", "b")
    topo.serve("a", proto, "0.0.0.0", 8000)
    fwd = PortForward(instance=topo.nics["a"].instance, proto=proto, host_port=18080,
                      address=topo.ip4("a"), port=8000)
    fw.add_forward(fwd)
    fw.add_forward(fwd)  # idempotent
    assert topo.ask("o", proto, topo.host_out, 18080) == topo.outside_ip
    assert topo.ask(None, proto, topo.host_out, 18080) == topo.host_out, "from the host itself"
    assert topo.ask(None, proto, topo.gw4, 18080) == topo.gw4
    assert topo.ask("b", proto, topo.gw4, 18080) == topo.gw4, "hairpin from a neighbour (masqueraded)"
    # its own forward: with br_netfilter (bridge-nf-call-iptables=1) the DNAT happens as the frame is
    # bridged, and the bridge sends a frame back out of the port it came in only in hairpin mode,
    # which links.attach sets on the port (the topology plugs its NICs with it)
    assert topo.ask("a", proto, topo.gw4, 18080) == topo.gw4, "an instance reaching its own forward"
    with pytest.raises(Exists, match="already forwarded"):
        fw.add_forward(fwd.replace(instance="other"))
    fw.remove_forward(fwd)
    assert not [r for r in fw.rules_for(fwd.instance) if "fwd" in r]
    assert topo.ask("o", proto, topo.host_out, 18080, tries=1) is None
    assert topo.ask(None, proto, topo.host_out, 18080, tries=1) is None


def test_port_forward_on_one_host_address_and_ipv6(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "a")
    topo.serve("a", "tcp", "0.0.0.0", 8000)
    topo.serve("a", "tcp", "::", 8001)
    one = PortForward(instance="x", proto="tcp", host_port=18081, address=topo.ip4("a"), port=8000,
                      host_address=topo.host_out)
    six = PortForward(instance="x", proto="tcp", host_port=18082, address=topo.ip6("a"), port=8001)
    fw.add_forward(one)
    fw.add_forward(six)
    assert topo.ask("o", "tcp", topo.host_out, 18081) == topo.outside_ip
    assert topo.ask(None, "tcp", topo.gw4, 18081, tries=1) is None, "another host address: not forwarded"
    assert topo.ask(None, "tcp", topo.gw6, 18082) == topo.gw6
    assert topo.ask("o", "tcp", topo.host_out6, 18082) == topo.outside_ip6
    fw.remove_forward(one)
    fw.remove_forward(six)
    assert topo.ask("o", "tcp", topo.host_out, 18081, tries=1) is None
    assert topo.ask(None, "tcp", topo.gw6, 18082, tries=1) is None
    assert topo.ask("o", "tcp", topo.host_out6, 18082, tries=1) is None


def _localnet(bridge: str) -> str:
    with open(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet") as f:
        return f.read().strip()


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_port_forward_from_the_hosts_loopback_then_removed(topo: Topology, fw: Firewall, proto: str) -> None:
    police(fw, topo, "a")
    topo.serve("a", proto, "0.0.0.0", 8000)
    assert _localnet(topo.bridge) == "0"
    every = PortForward(instance="x", proto=proto, host_port=18084, address=topo.ip4("a"), port=8000)
    lo_only = PortForward(instance="x", proto=proto, host_port=18085, address=topo.ip4("a"), port=8000,
                          host_address="127.0.0.1")
    fw.add_forward(every)
    assert _localnet(topo.bridge) == "1"
    # the instance sees the bridge's address (masqueraded): 127.0.0.1 would be its own loopback
    assert topo.ask(None, proto, "127.0.0.1", 18084) == topo.gw4
    assert topo.ask(None, proto, "127.0.0.2", 18084) == topo.gw4
    assert topo.ask(None, proto, topo.host_out, 18084) == topo.host_out, "its host addresses still"
    fw.add_forward(lo_only)
    assert topo.ask(None, proto, "127.0.0.1", 18085) == topo.gw4
    assert topo.ask("o", proto, topo.host_out, 18085, tries=1) is None, "127.0.0.1 only"
    fw.remove_forward(every)
    assert _localnet(topo.bridge) == "1", "the loopback-only forward still needs it"
    assert topo.ask(None, proto, "127.0.0.1", 18084, tries=1) is None
    fw.remove_forward(lo_only)
    assert _localnet(topo.bridge) == "0", "no forward from loopback left: the kernel's default again"
    assert topo.ask(None, proto, "127.0.0.1", 18085, tries=1) is None
    assert not [r for r in fw.rules_for("x") if "fwd" in r]


def test_loopback_forward_opens_no_way_to_the_hosts_loopback(topo: Topology, fw: Firewall) -> None:
    """route_localnet on the bridge would let an instance reach the host's 127.0.0.1 services (the
    class of CVE-2020-8558); the guard chain drops it, and a control without the guard gets there."""
    police(fw, topo, "a", host_access=HOST_ALL)
    fw.add_forward(PortForward(instance="x", proto="tcp", host_port=18086, address=topo.ip4("a"), port=8000))
    assert _localnet(topo.bridge) == "1"
    topo.serve(None, "tcp", "127.0.0.1", 18087)           # a host service on loopback only
    # a's root sends to 127.0.0.0/8 through its eth0 to the host's bridge
    topo.run("a", "sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1")
    topo.run("a", "ip", "addr", "del", "127.0.0.1/8", "dev", "lo")      # its local routes of 127/8 go with it
    topo.run("a", "ip", "route", "add", "127.0.0.0/8", "via", topo.gw4, "dev", "eth0")
    assert topo.ask("a", "tcp", "127.0.0.1", 18087, tries=1) is None
    nft.run([{"flush": {"chain": {"family": "inet", "table": TABLE, "name": "guard"}}}])
    try:    # control: without the guard it gets there
        assert topo.ask("a", "tcp", "127.0.0.1", 18087) == topo.ip4("a")
    finally:
        Firewall(TABLE).ensure_network(topo.network(host_access=HOST_ALL))   # re-makes the fixed part
    assert topo.ask("a", "tcp", "127.0.0.1", 18087, tries=1) is None


def test_forward_on_ipv6_loopback_refused() -> None:
    from jaula.errors import ConfigError
    with pytest.raises(ConfigError, match="IPv6's loopback"):
        Firewall(TABLE).add_forward(PortForward(instance="x", proto="tcp", host_port=1, address="fd00::2", port=2,
                                                host_address="::1"))


# --- the instance's own firewall, clean-up ------------------------------------------------------------
def test_instance_own_firewall_inside_its_netns(topo: Topology, fw: Firewall) -> None:
    police(fw, topo, "a", "b")
    topo.serve("a", "tcp", "0.0.0.0", 8000)
    topo.serve("a", "tcp", "0.0.0.0", 8001)
    code = ("from jaula.network import nft; t = {'family': 'inet', 'table': 'own'}; nft.run(["
            "{'add': {'table': {'family': 'inet', 'name': 'own'}}},"
            "{'add': {'chain': dict(t, name='in', type='filter', hook='input', prio=0, policy='accept')}},"
            "{'add': {'rule': dict(t, chain='in', expr=[{'match': {'op': '==', 'left': {'payload': "
            "{'protocol': 'tcp', 'field': 'dport'}}, 'right': 8001}}, {'drop': None}])}}])")
    assert topo.ask("b", "tcp", topo.ip4("a"), 8001) == topo.ip4("b")
    topo.run("a", sys.executable, "-c", code)
    assert topo.ask("b", "tcp", topo.ip4("a"), 8001, tries=1) is None
    assert topo.ask("b", "tcp", topo.ip4("a"), 8000) == topo.ip4("b")
    assert "table inet own" not in sh("nft", "list", "tables").stdout, "it stayed inside the instance"


def test_removal_leaves_nothing_and_destroy_removes_tables(topo: Topology, fw: Firewall) -> None:
    net = topo.network(isolation=ISOLATE)
    police(fw, topo, "a", "b", isolation=ISOLATE)
    fwd = PortForward(instance=topo.nics["a"].instance, proto="tcp", host_port=18083, address=topo.ip4("a"),
                      port=80)
    fw.add_forward(fwd)
    assert len(fw.rules_for(topo.nics["a"].instance)) > 5
    fw.remove_forward(fwd)
    fw.remove_nic(topo.nics["a"])
    fw.remove_nic(topo.nics["a"])      # idempotent
    assert fw.rules_for(topo.nics["a"].instance) == []
    assert fw.rules_for(topo.nics["b"].instance) != []
    fw.remove_network(net)             # b is still on it: its elements go too
    assert fw.rules_for(topo.nics["b"].instance) == []
    fw.remove_nic(topo.nics["b"])
    listing = sh("nft", "list", "table", "bridge", TABLE).stdout + sh("nft", "list", "table", "inet", TABLE).stdout
    assert "elements" not in listing and "chain nd-" not in listing
    fw.destroy()
    fw.destroy()
    tables = sh("nft", "list", "tables").stdout
    assert TABLE not in tables and "table ip nat" in tables


def test_nft_batch_is_all_or_nothing() -> None:
    """A batch the kernel refuses half-way (the last command: an element that exists) leaves nothing."""
    t = {"family": "inet", "table": f"{TABLE}x"}
    batch = [{"add": {"table": {"family": "inet", "name": t["table"]}}},
             {"add": {"set": dict(t, name="s", type="ipv4_addr")}},
             {"add": {"element": dict(t, name="s", elem=["192.0.2.7"])}},
             {"create": {"element": dict(t, name="s", elem=["192.0.2.7"])}}]
    try:
        with pytest.raises(nft.NftError, match="File exists"):
            nft.run(batch)
        assert f"{TABLE}x" not in sh("nft", "list", "tables").stdout
    finally:
        nft.run([{"add": {"table": {"family": "inet", "name": t["table"]}}},
                 {"delete": {"table": {"family": "inet", "name": t["table"]}}}])


# --- the kept libnftables context -------------------------------------------------------------------
def _is_socket(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    except OSError:
        return False     # the fd of the listing itself, gone


def test_nft_kept_context_sees_changes_made_elsewhere_and_stays_out_of_exec() -> None:
    """One context serves the process; another process's change is seen at once, its socket is
    close-on-exec, and a forked child answers with a context of its own."""
    t = {"family": "inet", "table": f"{TABLE}k"}
    listed = {"list": {"set": dict(t, name="s")}}
    try:
        nft.run([{"add": {"table": {"family": "inet", "name": t["table"]}}},
                 {"add": {"set": dict(t, name="s", type="ipv4_addr")}}])
        assert nft.items(nft.run(listed), "set")[0].get("elem") is None
        sh("nft", "add", "element", "inet", t["table"], "s", "{ 192.0.2.9 }")
        assert nft.items(nft.run(listed), "set")[0]["elem"] == ["192.0.2.9"], "no stale cache"
        sockets = [fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_socket(fd)]
        assert sockets and not [fd for fd in sockets if os.get_inheritable(fd)], "close-on-exec"
        pid = os.fork()
        if pid == 0:
            try:
                ok = nft.items(nft.run(listed), "set")[0]["elem"] == ["192.0.2.9"]
                nft.run({"add": {"element": dict(t, name="s", elem=["192.0.2.10"])}})
            finally:
                os._exit(0 if ok else 1)
        assert os.waitpid(pid, 0)[1] == 0
        assert nft.items(nft.run(listed), "set")[0]["elem"] == ["192.0.2.9", "192.0.2.10"]
    finally:
        nft.run([{"add": {"table": {"family": "inet", "name": t["table"]}}},
                 {"delete": {"table": {"family": "inet", "name": t["table"]}}}])


def test_nft_from_a_thread_in_an_instance_netns(topo: Topology) -> None:
    """A thread that entered an instance's namespace gets a context there, for that call only (a kept
    one would keep the namespace and its veth alive: the fixture checks no link is left)."""
    libc = ctypes.CDLL(None, use_errno=True)
    seen: list = []

    def inside() -> None:
        fd = os.open(f"/run/netns/{topo.ns('a')}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            assert libc.setns(fd, 0x40000000) == 0, os.strerror(ctypes.get_errno())   # CLONE_NEWNET
        finally:
            os.close(fd)
        nft.run({"add": {"table": {"family": "inet", "name": "own"}}})
        seen.append([x["name"] for x in nft.items(nft.run({"list": {"tables": None}}), "table")])

    nft.run({"list": {"tables": None}})      # the process's context exists before the thread runs
    th = threading.Thread(target=inside)
    th.start()
    th.join()
    assert seen == [["own"]]
    assert "own" in topo.run("a", "nft", "list", "tables").stdout
    assert "inet own" not in sh("nft", "list", "tables").stdout
    assert "own" not in [x["name"] for x in nft.items(nft.run({"list": {"tables": None}}), "table")]
