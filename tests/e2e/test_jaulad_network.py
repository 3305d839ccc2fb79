"""jaulad's networks end to end, with real bridges, veths, addresses and nftables rules: a network
made through the CLI, two busybox instances on it that ping each other and that the host pings,
a third on the default network made on first use, addresses stable across a restart of the
instance and of jaulad, a port forward from the host to busybox httpd inside, a NIC added and
removed live, and nothing left behind (links, nft elements, allocation rows) once they go."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)
from tests.support import network as netsupport

pytestmark = pytest.mark.root

BUSYBOX = "/usr/bin/busybox"
NAMES = ("a1", "a2", "b1", "q1", "bad", "h1", "x1", "p1")   # the instances the tests make


@pytest.fixture
def netd(daemon: Daemon) -> Iterator[Daemon]:  # noqa: F811
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:   # a failure: delete what is left
            daemon.delete_all()
            daemon.proc.kill()
            daemon.proc.wait(10)
        for pid in daemon.pids:
            subprocess.run(["kill", "-9", str(pid)], check=False)
        time.sleep(0.2)
        table, bridges = netsupport.daemon_network_names(daemon.root)
        netsupport.remove_daemon_network(daemon.root)
        from jaula.network import ipam
        tag = ipam.root_tag(str(daemon.root.absolute()))
        from jaula.network.links import ifb_name
        mine = set(bridges) | {ipam.veth_name(tag, i, n) for i in NAMES for n in ("eth0", "eth1")}
        mine |= {ifb_name(v) for v in mine}
        assert not (mine & netsupport.links())
        assert not {f"inet {table}", f"bridge {table}"} & netsupport.nft_tables()


def _ping(*prefix: str, address: str, tries: int = 3) -> bool:
    """Whether `address` answers a ping (from the netns of the `nsenter` prefix, else the host's),
    trying a few times: a loaded host may lose the first neighbour lookup."""
    for _ in range(tries):
        r = subprocess.run([*prefix, BUSYBOX, "ping", "-c", "1", "-W", "2", address], check=False,
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            return True
    return False


def _addresses(d: Daemon, family: int = 4) -> dict[tuple[str, str], str]:
    from jaula.client import Client

    with Client(str(d.socket)) as c:
        return {(a["instance"], a["nic"]): a["address"] for a in c.network_addresses() if a["family"] == family}


def _host_address() -> str:
    """The host's own address on its default route (a forward is reached there, not on loopback)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("198.51.100.1", 9))   # no packet is sent: only the route is looked up
        return s.getsockname()[0]


def _get(url: str) -> str:
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs the host's busybox (ping)")
def test_instances_on_networks_talk_forward_and_leave_nothing(netd: Daemon) -> None:
    d = netd
    d.start()
    bridge = "jbt" + secrets.token_hex(4)
    out = d.jaula("network", "create", "lab", "-c", f"bridge={bridge}", "-c", "ipv6.address=none")
    assert f"bridge {bridge}" in out
    table, _ = netsupport.daemon_network_names(d.root)
    assert table != "jaula" and bridge in netsupport.links()

    d.jaula("launch", "busybox", "a1", "-c", "nic.eth0.network=lab")
    d.jaula("launch", "busybox", "a2", "-c", "nic.eth0.network=lab")
    d.jaula("launch", "busybox", "b1")                       # eth0 on the default network, made now
    d.jaula("launch", "busybox", "q1", "-c", "nic.eth0.type=none")
    pids = {n: d.note(n)["pid"] for n in ("a1", "a2", "b1", "q1")}
    addr = _addresses(d)
    assert set(addr) == {("a1", "eth0"), ("a2", "eth0"), ("b1", "eth0")}
    nets = {n["name"]: n for n in json.loads(d.jaula("network", "list", "--format", "json"))}
    assert set(nets) == {"lab", "default"} and nets["lab"]["used_by"] == ["a1", "a2"]
    listed = d.jaula("list")
    assert addr[("a1", "eth0")] in listed and addr[("b1", "eth0")] in listed

    # the host reaches them; they reach each other; the one without a NIC has only lo
    for name in ("a1", "a2", "b1"):
        assert _ping(address=addr[(name, "eth0")]), name
    assert _ping("nsenter", "-t", str(pids["a1"]), "-n", address=addr[("a2", "eth0")])
    b1_v6 = _addresses(d, 6)[("b1", "eth0")]                  # the default network has IPv6 too
    assert _ping(address=b1_v6)
    ifaces = subprocess.run(["nsenter", "-t", str(pids["q1"]), "-n", BUSYBOX, "ip", "-o", "link"],
                            check=True, capture_output=True, text=True).stdout
    assert "lo:" in ifaces and "eth0" not in ifaces
    resolv = (d.root / "instances" / "bundles" / "a1" / "rootfs" / "etc" / "resolv.conf").read_text()
    assert "nameserver" in resolv
    # out through NAT: the resolver of its resolv.conf answers it, when it answers the host
    server = resolv.split("nameserver ")[1].split()[0]
    lookup = [BUSYBOX, "nslookup", "deb.debian.org", server]
    if subprocess.run(lookup, check=False, capture_output=True, timeout=10).returncode == 0:
        r = subprocess.run(["nsenter", "-t", str(pids["a1"]), "-n", *lookup], check=False, capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0, r

    # the network's isolation policy changes live: a1 and a2 no longer reach each other, the host still does
    d.jaula("network", "set", "lab", "isolation=isolate")
    assert not _ping("nsenter", "-t", str(pids["a1"]), "-n", address=addr[("a2", "eth0")], tries=1)
    assert _ping(address=addr[("a2", "eth0")])
    d.jaula("network", "set", "lab", "isolation=allow")
    assert _ping("nsenter", "-t", str(pids["a1"]), "-n", address=addr[("a2", "eth0")])

    # a privileged instance on the host's network stack: no netns of its own, no NIC, no address
    d.jaula("launch", "busybox", "h1", "-c", "security.privileged=true", "-c", "network.mode=host",
            "-c", "nic.eth0.type=none")
    h1 = d.note("h1")["pid"]
    assert os.readlink(f"/proc/{h1}/ns/net") == os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{pids['q1']}/ns/net") != os.readlink("/proc/self/ns/net")
    d.jaula("delete", "--force", "h1")

    # a port forward from the host to busybox httpd inside a1
    subprocess.run(["nsenter", "-t", str(pids["a1"]), "-a", "/bin/sh", "-c",
                    "mkdir -p /www && echo hello-from-a1 > /www/index.html && httpd -p 80 -h /www"],
                   check=True, timeout=20)
    port = 20000 + secrets.randbelow(20000)
    d.jaula("network", "forward", "add", "lab", "a1", str(port), "80")
    assert str(port) in d.jaula("network", "forward", "list", "lab")
    assert _get(f"http://{addr[('a1', 'eth0')]}/") == "hello-from-a1\n"     # straight to it
    assert _get(f"http://{_host_address()}:{port}/") == "hello-from-a1\n"           # through the forward
    assert _get(f"http://127.0.0.1:{port}/") == "hello-from-a1\n", "the forward from the host's loopback"
    assert _read(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet") == "1"
    # a1 reaches its own forward: with br_netfilter the DNAT happens while the frame is bridged, and
    # it goes back out of the port it came in: hairpin mode, set on the port by links.attach
    veth_a1 = next(n["host_name"] for n in _nics(d, "a1") if n["name"] == "eth0")
    assert _read(f"/sys/class/net/{veth_a1}/brport/hairpin_mode") == "1"
    own = ["nsenter", "-t", str(pids["a1"]), "-n", "timeout", "3", BUSYBOX, "wget", "-q", "-O", "-",
           f"http://{_host_address()}:{port}/"]          # (busybox 1.35's wget -T crashes)
    assert _output(own) == "hello-from-a1\n", "an instance reaching its own forward"
    if _read("/proc/sys/net/bridge/bridge-nf-call-iptables") == "1":   # control: without hairpin it fails
        subprocess.run(["ip", "link", "set", "dev", veth_a1, "type", "bridge_slave", "hairpin", "off"], check=True)
        try:
            assert _output(own, tries=1) is None
        finally:
            subprocess.run(["ip", "link", "set", "dev", veth_a1, "type", "bridge_slave", "hairpin", "on"], check=True)

    # a NIC added and removed live
    d.jaula("nic", "add", "a2", "eth1", "network=default", "mtu=1400", "mac=02:00:00:00:0a:02")
    a2_eth1 = _addresses(d)[("a2", "eth1")]
    assert _ping(address=a2_eth1)
    link = subprocess.run(["nsenter", "-t", str(pids["a2"]), "-n", BUSYBOX, "ip", "-o", "link", "show", "eth1"],
                          check=True, capture_output=True, text=True).stdout
    assert "mtu 1400" in link and "02:00:00:00:0a:02" in link
    d.jaula("nic", "remove", "a2", "eth1")
    assert ("a2", "eth1") not in _addresses(d)
    assert not _ping(address=a2_eth1, tries=1)

    # rate limits change live (tc on the host side of a1's veth), and go
    from jaula.network.links import ifb_name
    veth_a1 = next(n["host_name"] for n in _nics(d, "a1") if n["name"] == "eth0")
    d.jaula("config", "set", "a1", "nic.eth0.limits.ingress=10Mbit", "nic.eth0.limits.egress=20Mbit")
    assert "tbf" in _qdiscs(veth_a1) and "tbf" in _qdiscs(ifb_name(veth_a1))
    d.jaula("config", "unset", "a1", "nic.eth0.limits.ingress", "nic.eth0.limits.egress")
    assert "tbf" not in _qdiscs(veth_a1) and ifb_name(veth_a1) not in netsupport.links()
    assert _get(f"http://{_host_address()}:{port}/") == "hello-from-a1\n"

    # a start that fails plugging its second NIC (a route through an unreachable gateway) leaves
    # nothing of the first: no link, no firewall element
    from jaula.network import ipam
    tag = ipam.root_tag(str(d.root.absolute()))
    bad = {ipam.veth_name(tag, "bad", n) for n in ("eth0", "eth1")}
    r = subprocess.run([*JAULA, "--socket", str(d.socket), "launch", "busybox", "bad", "-c", "nic.eth0.network=lab",
                        "-c", "nic.eth1.network=lab", "-c", "nic.eth1.routes=10.99.0.0/16 via 192.0.2.1"],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "bad" in d.instances()
    from jaula.network.firewall_state import read_state
    held = repr(read_state(table).elements) + repr(read_state(table).chains)
    assert not bad & netsupport.links() and not [v for v in bad if v in held]
    d.jaula("delete", "bad")

    # addresses stay across a restart of the instance and of jaulad; the network keeps working
    d.jaula("restart", "a2")
    pids["a2"] = d.note("a2")["pid"]
    d.kill(15)
    d.start()
    assert _addresses(d) == addr
    assert _ping("nsenter", "-t", str(pids["a2"]), "-n", address=addr[("a1", "eth0")])
    assert _get(f"http://{_host_address()}:{port}/") == "hello-from-a1\n"
    assert _get(f"http://127.0.0.1:{port}/") == "hello-from-a1\n", "from loopback after jaulad's restart"

    # a used network cannot go; once its instances went, nothing is left: links, rules, rows
    r = subprocess.run([*JAULA, "--socket", str(d.socket),
                        "network", "delete", "lab"], check=False, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "used by a1, a2" in r.stdout + r.stderr
    veths = {n["host_name"] for name in ("a1", "a2", "b1") for n in _nics(d, name)}
    assert veths <= netsupport.links()
    d.jaula("delete", "--force", "a1", "a2", "b1", "q1")
    assert _addresses(d) == {}
    assert not (veths & netsupport.links())
    assert [n["name"] for n in json.loads(d.jaula("network", "list", "--format", "json"))] == ["lab"]
    assert nets["default"]["config"]["bridge"] not in netsupport.links()   # made on first use, gone with b1
    state = read_state(table)
    held = repr(state.elements) + repr(state.chains)                               # lab's own policy only
    assert not [v for v in veths if v in held] and str(port) not in held, held
    assert _read(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet") == "0", "gone with the forward"
    d.jaula("network", "delete", "lab")
    assert bridge not in netsupport.links() and not read_state(table).inet      # the last network: table gone
    assert d.leaks() == []


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs the host's busybox (ping)")
def test_an_instance_whose_init_exits_loses_its_nic_at_once(netd: Daemon) -> None:
    """Its firewall elements and the ifb of its egress limit go when the exit is seen, not at its
    next start, stop or delete; it then starts again with its NIC."""
    from jaula.network.firewall_state import read_state
    from jaula.network.links import ifb_name

    d = netd
    d.start()
    d.jaula("network", "create", "solo", "-c", f"bridge=jbx{secrets.token_hex(4)}", "-c", "ipv6.address=none")
    table, _ = netsupport.daemon_network_names(d.root)
    d.jaula("launch", "busybox", "x1", "-c", "nic.eth0.network=solo", "-c", "nic.eth0.limits.egress=20Mbit")
    pid = d.note("x1")["pid"]
    veth = next(n["host_name"] for n in _nics(d, "x1") if n["name"] == "eth0")
    assert {veth, ifb_name(veth)} <= netsupport.links()
    assert veth in repr(read_state(table).elements)

    os.kill(pid, 9)   # its init exits by itself (as a poweroff inside would)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if d.instances()["x1"]["status"] == "stopped" and not {veth, ifb_name(veth)} & netsupport.links() \
                and veth not in repr(read_state(table).elements):
            break
        time.sleep(0.1)
    assert d.instances()["x1"]["status"] == "stopped"
    assert not {veth, ifb_name(veth)} & netsupport.links(), "the veth or the ifb stayed"
    assert veth not in repr(read_state(table).elements), "its firewall elements stayed"

    d.jaula("start", "x1")
    d.note("x1")
    assert {veth, ifb_name(veth)} <= netsupport.links() and veth in repr(read_state(table).elements)
    assert _ping(address=_addresses(d)[("x1", "eth0")])

    # links left under its NIC's names while it is not running (a crash cut their removal) go at
    # jaulad's start
    d.jaula("stop", "--force", "x1")
    subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", f"jbx{secrets.token_hex(4)}"],
                   check=True)
    subprocess.run(["ip", "link", "add", ifb_name(veth), "type", "ifb"], check=True)
    assert {veth, ifb_name(veth)} <= netsupport.links()
    d.kill(15)
    d.start()
    assert not {veth, ifb_name(veth)} & netsupport.links(), "stray veth or ifb left by the sweep"
    d.jaula("delete", "x1")
    d.jaula("network", "delete", "solo")
    assert not {veth, ifb_name(veth)} & netsupport.links()
    assert d.leaks() == []


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs the host's busybox (ping)")
def test_a_privileged_instance_gets_its_nic_too(netd: Daemon) -> None:
    """The runtime forks a privileged instance's init itself (no user namespace, no intermediate
    process): its NIC is plugged once the init is ready, not while it builds its root."""
    d = netd
    d.start()
    d.jaula("network", "create", "priv", "-c", f"bridge=jbp{secrets.token_hex(4)}", "-c", "ipv6.address=none")
    d.jaula("launch", "busybox", "p1", "-c", "nic.eth0.network=priv", "-c", "security.privileged=true")
    pid = d.note("p1")["pid"]
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert _ping(address=_addresses(d)[("p1", "eth0")])
    veth = next(n["host_name"] for n in _nics(d, "p1") if n["name"] == "eth0")
    d.jaula("delete", "--force", "p1")
    d.jaula("network", "delete", "priv")
    assert veth not in netsupport.links()
    assert d.leaks() == []


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _output(cmd: list[str], tries: int = 3) -> str | None:
    """The output of `cmd` once it succeeds (a few tries: a loaded host), else None."""
    for _ in range(tries):
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            return r.stdout
    return None


def _qdiscs(ifname: str) -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", ifname], check=False, capture_output=True,
                          text=True).stdout


def _nics(d: Daemon, name: str) -> list[dict]:
    from jaula.client import Client

    with Client(str(d.socket)) as c:
        return c.nics(name)
