"""jaula.network.ipam: checks with their messages, allocation, stable names and subnet choice."""

from __future__ import annotations

import ipaddress

import pytest

from jaula.errors import ConfigError, JaulaError
from jaula.network import ipam


def test_next_free_skips_gateway_network_broadcast_and_used() -> None:
    assert ipam.next_free("10.71.3.1/24", []) == "10.71.3.2/24"
    assert ipam.next_free("10.71.3.1/24", ["10.71.3.2", "10.71.3.3"]) == "10.71.3.4/24"
    assert ipam.next_free("10.71.3.5/29", []) == "10.71.3.1/29"       # the gateway need not be first
    assert ipam.next_free("10.71.3.1/30", []) == "10.71.3.2/30"
    with pytest.raises(JaulaError, match="is full"):
        ipam.next_free("10.71.3.1/30", ["10.71.3.2"])               # .3 is the broadcast
    assert ipam.next_free("fd42:1::1/64", ["fd42:1::2"]) == "fd42:1::3/64"


def test_gateway_checks_say_what_is_wrong() -> None:
    assert str(ipam.parse_gateway("10.71.3.1/24", 4)) == "10.71.3.1/24"
    for bad, words in (("10.71.3.0/24", "network or broadcast"), ("10.71.3.255/24", "network or broadcast"),
                       ("10.71.3.1", "with a prefix"), ("fd00::1/64", "IPv6 address"),
                       ("10.71.3.1/31", "no room"), ("127.0.0.1/8", "loopback"), ("nonsense/24", "not an IPv4")):
        with pytest.raises(ValueError, match=words):
            ipam.parse_gateway(bad, 4)


def test_static_address_must_be_a_host_of_the_subnet() -> None:
    assert ipam.check_in_subnet("10.71.3.9", "10.71.3.1/24") == "10.71.3.9/24"
    for bad, words in (("10.72.0.9", "outside"), ("10.71.3.1", "gateway"), ("10.71.3.255", "broadcast")):
        with pytest.raises(ConfigError, match=words):
            ipam.check_in_subnet(bad, "10.71.3.1/24")


def test_names_and_macs_are_stable_short_and_distinct() -> None:
    a = ipam.veth_name("", "web1", "eth0")
    assert a == ipam.veth_name("", "web1", "eth0") and a.startswith("jv") and len(a) <= 15
    assert len({a, ipam.veth_name("", "web1", "eth1"), ipam.veth_name("x1", "web1", "eth0")}) == 3
    mac = ipam.stable_mac("", "web1", "eth0")
    assert mac == ipam.stable_mac("", "web1", "eth0") and mac.startswith("02:") and len(mac) == 17
    assert ipam.check_mac("02:AA:bb:cc:dd:ee") == "02:aa:bb:cc:dd:ee"
    with pytest.raises(ValueError, match="multicast"):
        ipam.check_mac("01:00:5e:00:00:01")
    assert ipam.table_name(ipam.root_tag("/var/lib/jaula")) == "jaula"
    assert ipam.table_name(ipam.root_tag("/tmp/x")).startswith("jaula_")
    assert ipam.default_bridge("") == "jaulabr0" and len(ipam.default_bridge("abc123", "n1")) <= 15


def test_default_subnets_avoid_host_routes() -> None:
    first = ipam.pick_ipv4_subnet(["0.0.0.0/0"], seed="s")      # a default route blocks nothing
    net = ipaddress.ip_interface(first).network
    assert net.prefixlen == 24 and net.subnet_of(ipaddress.ip_network("10.0.0.0/8"))
    second = ipam.pick_ipv4_subnet(["0.0.0.0/0", str(net)], seed="s")
    assert second != first
    with pytest.raises(JaulaError, match="no free IPv4"):
        ipam.pick_ipv4_subnet(["10.0.0.0/8"], seed="s")
    v6 = ipam.pick_ipv6_subnet(["::/0"], seed="s")
    n6 = ipaddress.ip_interface(v6).network
    assert n6.prefixlen == 64 and n6.subnet_of(ipaddress.ip_network("fd00::/8"))
    assert ipam.pick_ipv6_subnet([str(n6)], seed="s") != v6
