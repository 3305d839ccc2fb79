"""jaula.network.config and the nic.* instance settings: every problem at once, normalized values."""

from __future__ import annotations

import pytest

from jaula.errors import ConfigError
from jaula.instances import settings
from jaula.network import config


def test_network_config_normalized_and_every_problem_listed() -> None:
    assert config.validate_network({"ipv4.nat": "yes", "mtu": " 1400", "ipv6.address": "none"}) == {
        "ipv4.nat": "true", "mtu": "1400", "ipv6.address": "none"}
    with pytest.raises(ConfigError) as e:
        config.validate_network({"ipv4.address": "10.0.0.0/24", "isolation": "maybe", "colour": "red",
                                 "bridge": "a-very-long-bridge-name", "dns.nameservers": "1.1.1.1,x"})
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == 5
    for words in ("ipv4.address: '10.0.0.0/24'", "isolation: 'maybe' is not one of: allow, isolate",
                  "colour: unknown key; known keys: ipv4.address", "bridge name 'a-very-long-bridge-name'",
                  "'x' is not an address"):
        assert words in text


def test_network_plan_from_stored_config() -> None:
    plan = config.network_plan("n1", {"ipv4.address": "10.5.5.1/24", "ipv6.address": "none", "bridge": "jb1",
                                      "isolation": "isolate"})
    assert (plan.bridge, plan.ipv4, plan.ipv6, plan.isolation, plan.nat, plan.mtu) == (
        "jb1", "10.5.5.1/24", None, "isolate", True, 1500)


def test_nic_settings_in_the_instance_table() -> None:
    out = settings.validate({"nic.eth0.network": "default", "nic.eth0.limits.ingress": "10000kbit",
                             "nic.eth0.mac": "02:AA:00:00:00:01", "nic.eth0.routes": "10.9.0.0/16 via 10.5.5.254"})
    assert out["nic.eth0.limits.ingress"] == "10Mbit" and out["nic.eth0.mac"] == "02:aa:00:00:00:01"
    assert settings.validate(out) == out                         # normalized values validate unchanged
    assert config.nics(out)["eth0"]["type"] == "bridged"
    assert config.rate_kbit("10Mbit") == 10000
    assert config.parse_routes(out["nic.eth0.routes"]) == (("10.9.0.0/16", "10.5.5.254"),)
    assert settings.is_live("nic.eth0.limits.egress") and not settings.is_live("nic.eth0.network")
    with pytest.raises(ConfigError) as e:
        settings.validate({"nic.eth0.type": "wifi", "nic.eth1.speed": "1", "nic.lo.type": "none",
                           "nic.eth2.ipv4": "10.1.1.1/24", "nic.eth3.type": "macvlan",
                           "nic.eth4.limits.egress": "fast"})
    text = "\n".join(e.value.problems)
    for words in ("nic.eth0.type: 'wifi' is not one of: bridged, macvlan, none",
                  "nic.eth1.speed: unknown NIC field 'speed'", "nic.lo.type: 'lo' is the loopback",
                  "nic.eth2.ipv4: '10.1.1.1/24' is not an IPv4 address", "nic.eth4.limits.egress: 'fast' is not a rate"):
        assert words in text
    with pytest.raises(ConfigError, match="macvlan NIC needs its host interface"):
        settings.validate({"nic.eth3.type": "macvlan"})


def test_host_networking_only_privileged_and_without_nics() -> None:
    with pytest.raises(ConfigError) as e:
        settings.validate({"network.mode": "host", "nic.eth0.network": "default"})
    text = "\n".join(e.value.problems)
    assert "only for a privileged instance" in text and "nic.eth0.type=none" in text
    ok = settings.validate({"network.mode": "host", "security.privileged": "true", "nic.eth0.type": "none"})
    assert ok["network.mode"] == "host"


def test_resolv_conf_and_hosts(tmp_path) -> None:
    from jaula.network import dns

    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\nsearch lan\n")
    assert dns.host_nameservers(str(conf)) == ["10.1.1.1"]
    assert dns.host_nameservers(str(tmp_path / "none")) == []
    text = dns.resolv_conf([], "1.1.1.1,9.9.9.9", "lab.example", "10.5.5.1/24")
    assert "search lab.example\nnameserver 1.1.1.1\nnameserver 9.9.9.9\n" in text
    assert dns.resolv_conf([], None, None, "10.5.5.1/24").endswith("nameserver 10.5.5.1\n")   # the gateway
    assert "nameserver 10.1.1.1" in dns.resolv_conf(["10.1.1.1"], "1.1.1.1", None, None)
    assert "10.5.5.2\tweb1" in dns.hosts_file("web1", ["10.5.5.2/24"])
