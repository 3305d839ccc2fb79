"""Interfaces and rate limits for real (`jaula.network.links`, `jaula.network.tc`), as root.

"Instances" are forked children that unshare a network namespace (with a user namespace for the
unprivileged case) and wait; traffic is real: busybox ping and nc run inside them (nsenter).
Every link a test makes carries a per-run prefix, and a fixture checks none is left after each
test; every child is killed and reaped.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from jaula.errors import ConfigError, JaulaError, NotFound
from jaula.network import links, tc
from jaula.network.links import LinkError, netlink_in
from jaula.network.plan import BRIDGED, MACVLAN, NetworkPlan, NicPlan
from tests.support.netns import BUSYBOX, Ns

pytestmark = pytest.mark.root

P = f"jl{os.getpid() % 10000:04d}"          # every host link of this run starts with it
SUB4 = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"   # a /24 of this run
SUB6 = f"fd42:{os.getpid() % 65536:x}:7"


def host_links() -> list[str]:
    with IPRoute() as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.link("dump")]


def ours() -> list[str]:
    return [n for n in host_links() if n.startswith(P)]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Nothing with this run's prefix may stay after a test (a veth whose namespace died goes
    with it, but the kernel tears namespaces down in a worker: give it a moment)."""
    assert ours() == [], f"links left by an earlier test: {ours()}"
    yield
    for _ in range(50):
        if not ours():
            break
        time.sleep(0.1)
    left = ours()
    for name in left:  # clean for the next test, then fail this one
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    assert left == [], f"links left behind: {left}"


@pytest.fixture
def spaces() -> Iterator[list[Ns]]:
    made: list[Ns] = []
    yield made
    for ns in made:
        ns.close()


@pytest.fixture
def net() -> Iterator[NetworkPlan]:
    plan = NetworkPlan(name="t", bridge=f"{P}br", ipv4=f"{SUB4}.1/24", ipv6=f"{SUB6}::1/64", mtu=1500)
    links.ensure_bridge(plan)
    yield plan
    links.remove_bridge(plan)


def nic(i: int, **kw: object) -> NicPlan:
    base: dict[str, object] = {
        "instance": f"i{i}", "name": "eth0", "type": BRIDGED, "host_name": f"{P}v{i}", "parent": f"{P}br",
        "mac": f"02:00:00:aa:00:{i:02x}", "network": "t", "ipv4": (f"{SUB4}.{10 + i}/24",),
        "ipv6": (f"{SUB6}::{10 + i}/64",), "gateway4": f"{SUB4}.1", "gateway6": f"{SUB6}::1"}
    base.update(kw)
    return NicPlan(**base)  # type: ignore[arg-type]


@pytest.fixture
def two(net: NetworkPlan, spaces: list[Ns]) -> Iterator[tuple[Ns, Ns, NicPlan, NicPlan]]:
    """Two instances on the bridge, attached."""
    a, b = Ns(), Ns()
    spaces += [a, b]
    na, nb = nic(1), nic(2)
    links.attach(na, a.pid)
    links.attach(nb, b.pid)
    yield a, b, na, nb
    links.detach(na)
    links.detach(nb)


def addresses(ipr: IPRoute, index: int) -> set[str]:
    return {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.addr("dump", index=index)
            if a["scope"] == 0}


def routes(ipr: IPRoute, family: int) -> set[tuple[str, str | None]]:
    out = set()
    for r in ipr.route("dump", family=family):
        if r.get_attr("RTA_TABLE") != 254:
            continue
        dst = f"{r.get_attr('RTA_DST')}/{r['dst_len']}" if r["dst_len"] else "default"
        out.add((dst, r.get_attr("RTA_GATEWAY")))
    return out


# ---- interfaces --------------------------------------------------------------------------------

def test_two_instances_on_a_bridge_reach_each_other_and_the_gateway_v4_and_v6(two) -> None:
    a, b, _na, _nb = two
    assert a.ping(f"{SUB4}.12") and b.ping(f"{SUB4}.11")
    assert a.ping(f"{SUB6}::12") and b.ping(f"{SUB6}::11")
    assert a.ping(f"{SUB4}.1") and b.ping(f"{SUB6}::1")


def test_inside_the_nic_has_its_name_mac_mtu_addresses_routes_and_lo_up(net: NetworkPlan, spaces: list[Ns]) -> None:
    a = Ns()
    spaces.append(a)
    plan = nic(3, name="net0", mtu=1400, routes=((f"192.168.{os.getpid() % 250}.0/24", f"{SUB4}.1"),
                                                  ("fd99:1::/64", f"{SUB6}::1")))
    links.attach(plan, a.pid)
    try:
        with netlink_in(a.pid) as ipr:
            link = ipr.link("get", ifname="net0")[0]
            assert link.get_attr("IFLA_ADDRESS") == plan.mac
            assert link.get_attr("IFLA_MTU") == 1400
            assert link["flags"] & 1  # IFF_UP
            assert ipr.link("get", index=1)[0]["flags"] & 1  # lo up
            assert addresses(ipr, link["index"]) == {f"{SUB4}.13/24", f"{SUB6}::13/64"}
            v4, v6 = routes(ipr, socket.AF_INET), routes(ipr, socket.AF_INET6)
            assert ("default", f"{SUB4}.1") in v4 and (f"192.168.{os.getpid() % 250}.0/24", f"{SUB4}.1") in v4
            assert ("default", f"{SUB6}::1") in v6 and ("fd99:1::/64", f"{SUB6}::1") in v6
            v6addr = [x for x in ipr.addr("dump", index=link["index"], family=socket.AF_INET6) if x["scope"] == 0]
            assert v6addr[0]["flags"] & links.IFA_F_NODAD
        with IPRoute() as ipr:
            host = ipr.link("get", ifname=plan.host_name)[0]
            bridge = ipr.link("get", ifname=net.bridge)[0]
            assert host.get_attr("IFLA_MASTER") == bridge["index"]
            assert host.get_attr("IFLA_MTU") == 1400 and host["flags"] & 1
            # the host end has no IPv6 address of its own (addr_gen_mode none): a bridge port needs none
            assert list(ipr.addr("dump", index=host["index"], family=socket.AF_INET6)) == []
        # its bridge port in hairpin mode (an instance reaching its own port forward) and forwarding
        assert Path(f"/sys/class/net/{plan.host_name}/brport/hairpin_mode").read_text().strip() == "1"
        assert Path(f"/sys/class/net/{plan.host_name}/brport/state").read_text().strip() == "3"
        assert a.ping(f"{SUB4}.1")
    finally:
        links.detach(plan)


def test_attach_into_a_namespace_owned_by_a_user_namespace(net: NetworkPlan, spaces: list[Ns]) -> None:
    a, b = Ns(user=True), Ns()
    spaces += [a, b]
    na, nb = nic(4), nic(5)
    links.attach(na, a.pid)
    links.attach(nb, b.pid)
    try:
        assert a.ping(f"{SUB4}.1") and a.ping(f"{SUB4}.15") and b.ping(f"{SUB6}::14")
    finally:
        links.detach(na)
        links.detach(nb)


def test_a_failed_attach_leaves_nothing(net: NetworkPlan, spaces: list[Ns]) -> None:
    a = Ns()
    spaces.append(a)
    with pytest.raises(NotFound, match=r"bridge 'nope0' does not exist"):
        links.attach(nic(6, parent="nope0"), a.pid)
    # the gateway is off the subnet: the route fails after the veth was made, which goes again
    with pytest.raises(LinkError, match=r"add route 0\.0\.0\.0/0 via 10\.254\.0\.1: Nexthop has invalid gateway \(Network is unreachable\)"):
        links.attach(nic(6, gateway4="10.254.0.1"), a.pid)
    assert ours() == [net.bridge]
    with netlink_in(a.pid) as ipr:
        assert [x.get_attr("IFLA_IFNAME") for x in ipr.link("dump")] == ["lo"]
    # the name is taken inside: the kernel makes neither end
    links.attach(nic(6), a.pid)
    with pytest.raises(LinkError, match=r"create veth .* with peer 'eth0'.*File exists"):
        links.attach(nic(7), a.pid)
    assert ours() == [net.bridge, f"{P}v6"]
    links.detach(nic(6))
    # refused before any change, every problem named
    with pytest.raises(ConfigError) as e:
        links.attach(nic(8, mac="01:00:00:00:00:01", name="a/b", ipv4=("10.1.1.1",), mtu=9), a.pid)
    assert len(e.value.problems) == 4
    # the host's own namespace is never a target
    with pytest.raises(LinkError, match="shares the host's network namespace"):
        links.attach(nic(9), os.getpid())
    assert ours() == [net.bridge]


def test_a_bridged_nic_needs_a_bridge_parent(net: NetworkPlan, spaces: list[Ns]) -> None:
    a = Ns()
    spaces.append(a)
    with IPRoute() as ipr:
        ipr.link("add", ifname=f"{P}p0", kind="veth", peer=f"{P}p1")
    try:
        with pytest.raises(LinkError, match=f"parent '{P}p0' is not a bridge"):
            links.attach(nic(10, parent=f"{P}p0"), a.pid)
    finally:
        links.detach(nic(0, host_name=f"{P}p0"))
    assert ours() == [net.bridge]


def test_detach_and_remove_bridge_are_idempotent(two) -> None:
    _a, _b, na, nb = two
    links.detach(na)
    links.detach(na)
    assert not links.exists(na.host_name) and links.exists(nb.host_name)
    net = NetworkPlan(name="t", bridge=f"{P}br")
    links.detach(nb)
    links.remove_bridge(net)
    links.remove_bridge(net)
    assert not links.exists(net.bridge)


def test_ensure_bridge_is_idempotent_and_fixes_mtu_and_addresses() -> None:
    plan = NetworkPlan(name="t", bridge=f"{P}b2", ipv4=f"{SUB4}.1/24", ipv6=f"{SUB6}::1/64", mtu=1500)
    try:
        links.ensure_bridge(plan)
        links.ensure_bridge(plan)
        moved = NetworkPlan(name="t", bridge=f"{P}b2", ipv4=f"{SUB4}.129/25", mtu=1400)
        links.ensure_bridge(moved)
        with IPRoute() as ipr:
            link = ipr.link("get", ifname=plan.bridge)[0]
            assert link.get_attr("IFLA_MTU") == 1400 and link["flags"] & 1
            assert link.get_attr("IFLA_ADDRESS") == links.bridge_mac(plan.bridge)
            assert addresses(ipr, link["index"]) == {f"{SUB4}.129/25"}
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    finally:
        links.remove_bridge(plan)
    assert not links.exists(plan.bridge)


def test_ensure_bridge_refuses_a_name_taken_by_another_kind_and_a_bad_plan() -> None:
    with IPRoute() as ipr:
        ipr.link("add", ifname=f"{P}x0", kind="veth", peer=f"{P}x1")
    try:
        with pytest.raises(LinkError, match="is a veth, not a bridge"):
            links.ensure_bridge(NetworkPlan(name="t", bridge=f"{P}x0"))
        links.remove_bridge(NetworkPlan(name="t", bridge=f"{P}x0"))  # not a bridge: left alone
        assert links.exists(f"{P}x0")
    finally:
        links.detach(nic(0, host_name=f"{P}x0"))
    with pytest.raises(ConfigError, match="ipv4 '10.0.0.300/24' is not an IPv4 address"):
        links.ensure_bridge(NetworkPlan(name="t", bridge=f"{P}b3", ipv4="10.0.0.300/24"))
    assert not links.exists(f"{P}b3")


def test_macvlan_nics_on_one_parent_reach_each_other(spaces: list[Ns]) -> None:
    # no dummy driver in this kernel (CONFIG_DUMMY unset): a veth end is the parent (both ends
    # up, else it has no carrier and neither have its macvlans)
    with IPRoute() as ipr:
        ipr.link("add", ifname=f"{P}m0", kind="veth", peer=f"{P}m1")
        ipr.link("set", ifname=f"{P}m0", state="up")
        ipr.link("set", ifname=f"{P}m1", state="up")
    try:
        a, b = Ns(), Ns()
        spaces += [a, b]
        ma = nic(20, type=MACVLAN, parent=f"{P}m0", gateway4=None, gateway6=None)
        mb = nic(21, type=MACVLAN, parent=f"{P}m0", gateway4=None, gateway6=None, name="mv0")
        links.attach(ma, a.pid)
        links.attach(mb, b.pid)
        assert sorted(ours()) == [f"{P}m0", f"{P}m1"]  # nothing more on the host
        with netlink_in(b.pid) as ipr:
            link = ipr.link("get", ifname="mv0")[0]
            assert link.get_attr("IFLA_ADDRESS") == mb.mac
        assert a.ping(f"{SUB4}.31") and b.ping(f"{SUB6}::30")
        links.detach(ma)  # nothing on the host side: a no-op
        with pytest.raises(ConfigError, match="rate limits need a bridged NIC"):
            tc.set_rate(nic(20, type=MACVLAN, parent=f"{P}m0", ingress_kbit=1000))
        tc.set_rate(ma)  # no limits asked: nothing to do
    finally:
        links.detach(nic(0, host_name=f"{P}m0"))


def test_host_routes_lists_the_bridge_subnet_as_strict_cidrs(net: NetworkPlan) -> None:
    got = links.host_routes()
    assert f"{SUB4}.0/24" in got and f"{SUB6}::/64" in got
    for cidr in got:
        n = ipaddress.ip_network(cidr)  # strict: no host bits
        assert n.prefixlen > 0


# ---- rate limits -------------------------------------------------------------------------------

DATA = 2_000_000  # bytes


def transfer(src: Ns, dst: Ns, address: str, data: Path, out: Path) -> float:
    """Seconds to push `data` from `src` to `dst` with busybox nc (until the receiver has it all)."""
    server = dst.popen(BUSYBOX, "nc", "-l", "-p", "5000", stdin=subprocess.PIPE, stdout=out.open("wb"))
    try:
        for _ in range(100):  # listening yet? /proc/PID/net is the namespace of PID
            if any(line.split()[1].endswith(":1388") and line.split()[3] == "0A"
                   for line in Path(f"/proc/{server.pid}/net/tcp").read_text().splitlines()[1:]):
                break
            time.sleep(0.05)
        start = time.monotonic()
        with data.open("rb") as f:
            subprocess.run(src.argv(BUSYBOX, "nc", address, "5000"), stdin=f, capture_output=True, timeout=60,
                           check=True)
        server.wait(timeout=60)
        took = time.monotonic() - start
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdin.close()  # type: ignore[union-attr]
    assert out.stat().st_size == DATA
    return took


def kbit_per_s(seconds: float) -> float:
    return DATA * 8 / 1000 / seconds


def qdiscs(ifname: str) -> list[str]:
    with IPRoute() as ipr:
        return sorted(q.get_attr("TCA_KIND") for q in ipr.tc("dump", index=socket.if_nametoindex(ifname)))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    p = tmp_path / "data"
    p.write_bytes(os.urandom(DATA))
    return p


def test_ingress_limit_shapes_traffic_into_the_instance_and_removing_it_restores_speed(two, data: Path, tmp_path: Path) -> None:
    a, b, na, _nb = two
    limited = nic(1, ingress_kbit=4000)
    tc.set_rate(limited)
    tc.set_rate(limited)  # idempotent
    assert qdiscs(na.host_name) == ["tbf"]
    rate = kbit_per_s(transfer(b, a, f"{SUB4}.11", data, tmp_path / "out"))
    assert 0.5 * 4000 <= rate <= 1.5 * 4000, f"{rate:.0f} kbit/s through a 4000 kbit/s limit"
    tc.set_rate(nic(1))  # None: removed
    assert "tbf" not in qdiscs(na.host_name)
    free = kbit_per_s(transfer(b, a, f"{SUB4}.11", data, tmp_path / "out"))
    assert free > 4 * 4000, f"{free:.0f} kbit/s without a limit"


def test_egress_limit_shapes_traffic_out_of_the_instance_and_removing_it_restores_speed(two, data: Path, tmp_path: Path) -> None:
    a, b, na, _nb = two
    limited = nic(1, egress_kbit=4000)
    tc.set_rate(limited)
    tc.set_rate(limited)  # idempotent
    ifb = links.ifb_name(na.host_name)
    assert links.exists(ifb) and qdiscs(ifb) == ["tbf"] and "ingress" in qdiscs(na.host_name)
    rate = kbit_per_s(transfer(a, b, f"{SUB4}.12", data, tmp_path / "out"))
    assert 0.5 * 4000 <= rate <= 1.5 * 4000, f"{rate:.0f} kbit/s through a 4000 kbit/s limit"
    tc.set_rate(nic(1))
    assert not links.exists(ifb) and "ingress" not in qdiscs(na.host_name)
    free = kbit_per_s(transfer(a, b, f"{SUB4}.12", data, tmp_path / "out"))
    assert free > 4 * 4000, f"{free:.0f} kbit/s without a limit"


def test_limits_change_live_and_detach_removes_the_ifb(two) -> None:
    a, _b, na, _nb = two
    tc.set_rate(nic(1, ingress_kbit=4000, egress_kbit=4000))
    tc.set_rate(nic(1, ingress_kbit=8000, egress_kbit=2000))
    with IPRoute() as ipr:
        def tbf_rate(ifname: str) -> int:
            (q,) = [q for q in ipr.tc("dump", index=socket.if_nametoindex(ifname)) if q.get_attr("TCA_KIND") == "tbf"]
            return q.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"] * 8 // 1000
        assert tbf_rate(na.host_name) == 8000 and tbf_rate(links.ifb_name(na.host_name)) == 2000
        redirects = [f for f in ipr.get_filters(index=socket.if_nametoindex(na.host_name), parent=tc.INGRESS)
                     if f.get_attr("TCA_OPTIONS") is not None and f.get_attr("TCA_OPTIONS").get_attr("TCA_U32_ACT")]
        assert len(redirects) == 1
    assert a.ping(f"{SUB4}.12")  # still forwarded through the ifb
    links.detach(na)
    assert not links.exists(links.ifb_name(na.host_name))


def test_a_failed_set_rate_puts_back_what_was_there(two) -> None:
    _a, _b, na, _nb = two
    tc.set_rate(nic(1, ingress_kbit=4000))
    ifb = links.ifb_name(na.host_name)
    with IPRoute() as ipr:
        ipr.link("add", ifname=ifb, kind="veth", peer=f"{P}x9")  # the ifb's name, taken by something else
    try:
        with pytest.raises(LinkError, match=f"'{ifb}' exists and is not an ifb"):
            tc.set_rate(nic(1, ingress_kbit=8000, egress_kbit=2000))
        with IPRoute() as ipr:
            (q,) = [q for q in ipr.tc("dump", index=socket.if_nametoindex(na.host_name))
                    if q.get_attr("TCA_KIND") == "tbf"]
            assert q.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"] * 8 // 1000 == 4000
        assert qdiscs(na.host_name) == ["tbf"]  # no ingress qdisc left either
    finally:
        links.detach(nic(0, host_name=ifb))
    tc.set_rate(nic(1))
    assert "tbf" not in qdiscs(na.host_name)


def test_the_ifb_outlives_the_instance_and_detach_removes_it(net: NetworkPlan, spaces: list[Ns]) -> None:
    a = Ns()
    spaces.append(a)
    plan = nic(30, egress_kbit=2000)
    links.attach(plan, a.pid)
    tc.set_rate(plan)
    a.close()  # the namespace dies and takes the veth pair with it, in the kernel's own time
    for _ in range(100):
        if not links.exists(plan.host_name):
            break
        time.sleep(0.05)
    assert not links.exists(plan.host_name)
    assert links.exists(links.ifb_name(plan.host_name))  # not in the namespace: it stays
    links.detach(plan)
    assert not links.exists(links.ifb_name(plan.host_name))
    links.detach(plan)


def test_set_rate_refuses_bad_values_and_a_missing_nic() -> None:
    with pytest.raises(ConfigError) as e:
        tc.set_rate(nic(40, ingress_kbit=0, egress_kbit=tc.KBIT_MAX + 1))
    assert len(e.value.problems) == 2 and "from 1 to" in e.value.problems[0]
    with pytest.raises(NotFound, match=f"'{P}v41' does not exist"):
        tc.set_rate(nic(41, ingress_kbit=1000))
    assert isinstance(e.value, JaulaError)


def test_remove_strays_deletes_veths_and_ifbs_of_those_names_only(net: NetworkPlan, spaces: list[Ns]) -> None:
    a = Ns()
    spaces.append(a)
    plan = nic(50, egress_kbit=2000)
    links.attach(plan, a.pid)                 # a veth still held by a live namespace, with its ifb
    tc.set_rate(plan)
    other = f"{P}v51"                          # a name asked for, held by a bridge: not ours to delete
    with IPRoute() as ipr:
        ipr.link("add", ifname=other, kind="bridge")
    try:
        gone = links.remove_strays([plan.host_name, other, f"{P}v52"])   # v52: absent, fine
        assert sorted(gone) == sorted([plan.host_name, links.ifb_name(plan.host_name)])
        assert not links.exists(plan.host_name) and not links.exists(links.ifb_name(plan.host_name))
        assert links.exists(other)
        assert links.remove_strays([plan.host_name]) == []
    finally:
        with IPRoute() as ipr:
            ipr.link("del", ifname=other)
