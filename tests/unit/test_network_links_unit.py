"""The pure parts of `jaula.network.links` and `jaula.network.tc`: validation of plans (names,
MACs, addresses, routes, limits) with their messages, derived names and token bucket sizes.
The kernel side is tested for real in tests/integration/test_network_links.py."""

from __future__ import annotations

import socket
import struct

import pytest

from jaula.errors import ConfigError
from jaula.network import links, rtnl, tc
from jaula.network.plan import BRIDGED, MACVLAN, NONE, NetworkPlan, NicPlan


def nic(**kw: object) -> NicPlan:
    base: dict[str, object] = {"instance": "web1", "name": "eth0", "type": BRIDGED, "host_name": "jv3f9a1c02aa",
                               "parent": "jaulabr0", "mac": "02:11:22:33:44:55", "ipv4": ("10.71.3.7/24",),
                               "ipv6": ("fd42:71:3::7/64",), "gateway4": "10.71.3.1", "gateway6": "fd42:71:3::1"}
    base.update(kw)
    return NicPlan(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["eth0", "a", "x" * 15, "jv3f9a1c02-e", "net.0", "br_0"])
def test_valid_interface_names(name: str) -> None:
    assert links.ifname_problem(name, "name") is None


@pytest.mark.parametrize(("name", "why"), [
    ("", "1 to 15 characters"), ("x" * 16, "1 to 15 characters"), ("a/b", "'/'"), ("a:b", "':'"),
    ("a b", "white space"), (".", "'.' or '..'"), ("..", "'.' or '..'"), ("eth\u00e9", "printable ASCII"),
])
def test_bad_interface_names_say_what_is_allowed(name: str, why: str) -> None:
    problem = links.ifname_problem(name, "name")
    assert problem is not None and why in problem and repr(name) in problem


@pytest.mark.parametrize(("mac", "why"), [
    ("02:11:22:33:44", "six hex pairs"), ("02:11:22:33:44:5", "six hex pairs"), ("zz:11:22:33:44:55", "six hex pairs"),
    ("+1:11:22:33:44:55", "six hex pairs"), ("01:00:5e:00:00:01", "multicast"), ("00:00:00:00:00:00", "all zeros"), ("02-11-22-33-44-55", "six hex pairs"),
])
def test_bad_macs(mac: str, why: str) -> None:
    problem = links.mac_problem(mac)
    assert problem is not None and why in problem


def test_a_good_mac_and_a_good_plan_have_no_problem() -> None:
    assert links.mac_problem("02:11:22:33:44:55") is None
    assert links.nic_problems(nic()) == []
    assert links.nic_problems(nic(type=MACVLAN, parent="eth0", routes=(("192.168.5.0/24", "10.71.3.1"),))) == []


def test_every_problem_of_a_nic_is_listed_at_once() -> None:
    bad = nic(type=NONE, name="lo", mac="ff:ff:ff:ff:ff:ff", mtu=1000, ipv4=("10.71.3.7",), ipv6=("10.0.0.1/24",),
              gateway4="fd00::1", gateway6="nonsense", routes=(("10.9.0.0/33", "10.71.3.1"), ("10.9.0.0/16", "fd00::1")),
              ingress_kbit=0, egress_kbit="10Mbit")
    problems = links.nic_problems(bad)
    expected = ["type 'none' cannot be attached", "name 'lo' is the instance's loopback", "multicast",
                "mtu 1000 must be an integer from 1280", "'10.71.3.7' needs a prefix length",
                "'10.0.0.1/24' is not an IPv6 address", "gateway4 'fd00::1' is not an IPv4 address",
                "gateway6 'nonsense' is not an IP address", "'10.9.0.0/33' is not a network in CIDR form",
                "the gateway's family differs", "ingress_kbit 0 must be a positive integer",
                "egress_kbit '10Mbit' must be a positive integer"]
    assert len(problems) == len(expected)
    for text, problem in zip(expected, problems):
        assert text in problem


def test_attach_refuses_a_bad_plan_before_touching_anything() -> None:
    # pid 0 would fail at the first kernel call: the refusal comes before it
    with pytest.raises(ConfigError) as e:
        links.attach(nic(mac="nope", host_name="x" * 16), 0)
    assert e.value.problems == [
        "nic 'eth0' of 'web1': host_name 'xxxxxxxxxxxxxxxx' must have 1 to 15 characters",
        "nic 'eth0' of 'web1': mac 'nope' must be six hex pairs separated by ':' (e.g. '02:00:00:00:00:01')",
    ]


def test_network_problems() -> None:
    assert links.network_problems(NetworkPlan(name="default", bridge="jaulabr0", ipv4="10.71.3.1/24",
                                              ipv6="fd42:71:3::1/64")) == []
    problems = links.network_problems(NetworkPlan(name="d", bridge="a-bridge-name-too-long", ipv4="fd00::1/64",
                                                  ipv6="fd00::1/64", mtu=1279))
    assert [p.split(" ")[0] for p in problems] == ["bridge", "ipv4", "mtu"]
    assert "from 1280" in problems[2]
    with pytest.raises(ConfigError, match="network 'd': bridge name"):
        links.ensure_bridge(NetworkPlan(name="d", bridge="a-bridge-name-too-long"))


def test_bridge_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = links.bridge_mac("jaulabr0")
    assert mac == links.bridge_mac("jaulabr0") != links.bridge_mac("jaulabr1")
    assert links.mac_problem(mac) is None and int(mac[:2], 16) & 0x02


def test_ifb_names_fit_and_differ() -> None:
    assert links.ifb_name("jv3f9a1c02aa") == "jv3f9a1c02aa-e"
    long1, long2 = links.ifb_name("x" * 15), links.ifb_name("x" * 14 + "y")
    assert len(long1) == len(long2) == 15 and long1 != long2
    assert links.ifname_problem(long1, "ifb") is None


def test_tbf_parameters() -> None:
    assert tc.tbf_params(4000) == {"rate": "4000kbit", "burst": tc.BURST_MIN, "latency": tc.LATENCY}
    assert tc.tbf_params(10_000_000)["burst"] == 10_000_000 * 125 // 100  # 10 ms of traffic


def test_rate_problems() -> None:
    assert tc.rate_problems(nic(ingress_kbit=1, egress_kbit=tc.KBIT_MAX)) == []
    assert tc.rate_problems(nic(type=MACVLAN)) == []
    (p,) = tc.rate_problems(nic(type=MACVLAN, egress_kbit=1000))
    assert "need a bridged NIC" in p
    problems = tc.rate_problems(nic(ingress_kbit=True, egress_kbit=tc.KBIT_MAX + 1))
    assert len(problems) == 2 and all("must be an integer from 1 to" in x for x in problems)
    with pytest.raises(ConfigError, match="nic 'eth0' of 'web1': ingress_kbit -5"):
        tc.set_rate(nic(ingress_kbit=-5))


# ---- rtnl: the batched requests of attach ------------------------------------------------------

class FakeNetlink:
    """Records the one write; answers an ack per request, failing those in `fail` (seq: errno, text)."""

    def __init__(self, fail: dict[int, tuple[int, str]] | None = None):
        self.fail = fail or {}
        self.sent: list[bytes] = []
        self.acks: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        offset = 0
        while offset < len(data):
            length, _, _, seq, _ = struct.unpack_from("=LHHLL", data, offset)
            code, text = self.fail.get(seq, (0, ""))
            tlv = b""
            if text:
                raw = text.encode() + b"\0"
                tlv = struct.pack("=HH", 4 + len(raw), 1) + raw + b"\0" * (-len(raw) % 4)
            body = struct.pack("=i", -code) + data[offset:offset + 16] + tlv
            self.acks.append(struct.pack("=LHHLL", 16 + len(body), 2, 0, seq, 0) + body)
            offset += (length + 3) & ~3
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.acks.pop(0)


def test_rtnl_sends_a_batch_in_one_write_and_reads_every_ack() -> None:
    sock = FakeNetlink()
    rtnl.run(sock, [("up", rtnl.link_up(1)), ("addr", rtnl.address(2, "10.0.0.2/24")),  # type: ignore[arg-type]
                    ("route", rtnl.route(2, "0.0.0.0/0", "10.0.0.1"))])
    assert len(sock.sent) == 1 and sock.acks == []
    kinds = []
    data, offset = sock.sent[0], 0
    while offset < len(data):
        length, kind, flags, seq, _ = struct.unpack_from("=LHHLL", data, offset)
        kinds.append((kind, seq, bool(flags & 0x4)))  # NLM_F_ACK
        offset += length
    assert kinds == [(16, 1, True), (20, 2, True), (24, 3, True)]  # RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE


def test_rtnl_names_the_first_failed_step_with_the_kernels_text() -> None:
    sock = FakeNetlink({2: (101, "Nexthop has invalid gateway"), 3: (19, "")})
    with pytest.raises(rtnl.Failed) as e:
        rtnl.run(sock, [("one", rtnl.link_up(1)), ("two", rtnl.route(2, "0.0.0.0/0", "10.0.0.1")),  # type: ignore[arg-type]
                        ("three", rtnl.link_up(3))])
    assert str(e.value) == "two: Nexthop has invalid gateway (Network is unreachable)"
    assert (e.value.step, e.value.code) == ("two", 101)
    assert sock.acks == []  # every ack was read
    with pytest.raises(rtnl.Failed, match=r"^one: No such device$"):
        rtnl.run(FakeNetlink({1: (19, "")}), [("one", rtnl.link_up(1))])  # type: ignore[arg-type]


def test_rtnl_messages() -> None:
    v6 = rtnl.address(3, "fd42::7/64")
    assert (v6["family"], v6["prefixlen"], v6["index"], v6["flags"]) == (socket.AF_INET6, 64, 3, rtnl.IFA_F_NODAD)
    v4 = rtnl.address(3, "10.1.2.3/16")
    assert v4.get_attr("IFA_LOCAL") == v4.get_attr("IFA_ADDRESS") == "10.1.2.3" and v4["flags"] == 0
    default = rtnl.route(3, "::/0", "fd42::1")
    assert default["dst_len"] == 0 and default.get_attr("RTA_DST") is None and default.get_attr("RTA_GATEWAY") == "fd42::1"
    extra = rtnl.route(3, "192.168.5.0/24", "10.1.0.1")
    assert (extra["family"], extra["dst_len"], extra.get_attr("RTA_DST"), extra.get_attr("RTA_OIF")) == \
        (socket.AF_INET, 24, "192.168.5.0", 3)
    veth = rtnl.veth("jv0", 1400, 7, "eth0", "02:00:00:00:00:01", 9)
    assert veth.get_attr("IFLA_MASTER") == 7 and not veth["flags"] & rtnl.IFF_UP  # up only after the create
    veth.encode()  # pyroute2 can encode the nested peer
    up = rtnl.host_end_up("jv0")
    assert up["flags"] & rtnl.IFF_UP and up["index"] == 0 and up.get_attr("IFLA_IFNAME") == "jv0"
    up.encode()
