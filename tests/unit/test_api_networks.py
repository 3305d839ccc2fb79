"""The network routes and the instance hooks over the fake backend with a recording host side:
the default network made on first use, addresses allocated with the instance's row and freed
with it, plans handed to the driver, refusals before any change, forwards, live NICs. Every
response is checked against docs/openapi.json."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.network_fakes import RecordingPlumbing
from tests.unit.test_api import call, create, wait


@pytest.fixture
def net_api(api: SimpleNamespace) -> Iterator[SimpleNamespace]:
    plumbing = RecordingPlumbing(routes=["192.168.1.0/24"])
    api.backend.network, api.backend.network_tag = plumbing, "t1"
    svc = api.app.state.networks
    svc.plumbing, svc.tag = plumbing, "t1"
    seen: list[Any] = []
    start, update = api.backend.start, api.backend.update

    def spy_start(inst: Any) -> Any:
        seen.append(("start", inst.network))
        return start(inst)

    def spy_update(inst: Any, config: dict[str, Any]) -> Any:
        seen.append(("update", inst.network))
        return update(inst, config)
    api.backend.start, api.backend.update = spy_start, spy_update
    api.plumbing, api.seen = plumbing, seen
    yield api


def addresses(api: SimpleNamespace, openapi: dict) -> dict[tuple[str, str, int], str]:
    status, body = call(api, openapi, "GET", "/1.0/network-addresses")
    assert status == 200
    return {(a["instance"], a["nic"], a["family"]): a["address"] for a in body["metadata"]}


def test_launch_gets_eth0_on_a_default_network_made_on_first_use(net_api, openapi) -> None:
    assert create(net_api, openapi, "web1")["status"] == "success"
    assert create(net_api, openapi, "web2")["status"] == "success"
    _, body = call(net_api, openapi, "GET", "/1.0/networks/default", "/1.0/networks/{name}")
    net = body["metadata"]
    gw = ipaddress.ip_interface(net["config"]["ipv4.address"])
    assert not gw.network.overlaps(ipaddress.ip_network("192.168.1.0/24")) and net["used_by"] == ["web1", "web2"]
    assert net["config"]["bridge"].startswith("jb") and net_api.plumbing.verbs().count("ensure_network") == 1
    got = addresses(net_api, openapi)
    assert got[("web1", "eth0", 4)] == str(gw.ip + 1) and got[("web2", "eth0", 4)] == str(gw.ip + 2)
    assert ("web1", "eth0", 6) in got
    assert net_api.db.get_instance("web1").config["nic.eth0.network"] == "default"

    _, body = call(net_api, openapi, "PUT", "/1.0/instances/web1/state", "/1.0/instances/{name}/state",
                        json={"action": "start"})
    assert wait(net_api, openapi, body)["status"] == "success"
    (verb, plan), = net_api.seen
    (nic,) = plan["nics"]
    assert verb == "start" and plan["table"] == "jaula_t1" and nic["parent"] == net["config"]["bridge"]
    assert list(nic["ipv4"]) == [f"{gw.ip + 1}/24"] and nic["gateway4"] == str(gw.ip) and nic["mac"].startswith("02:")
    assert "nameserver" in plan["resolv_conf"] and "web1" in plan["hosts"]

    # the address is the instance's as long as its row: kept across restarts, freed at delete
    _status, body = call(net_api, openapi, "DELETE", "/1.0/instances/web2?force=true", "/1.0/instances/{name}")
    assert wait(net_api, openapi, body)["status"] == "success"
    assert ("web2", "eth0", 4) not in addresses(net_api, openapi)
    assert create(net_api, openapi, "web3")["status"] == "success"
    assert addresses(net_api, openapi)[("web3", "eth0", 4)] == str(gw.ip + 2)   # the freed one again


def test_no_nic_no_network(net_api, openapi) -> None:
    assert create(net_api, openapi, "quiet", config={"nic.eth0.type": "none"})["status"] == "success"
    _status, body = call(net_api, openapi, "GET", "/1.0/networks")
    assert body["metadata"] == [] and net_api.plumbing.calls == [] and addresses(net_api, openapi) == {}


def test_network_create_refuses_bad_config_before_any_change(net_api, openapi) -> None:
    status, body = call(net_api, openapi, "POST", "/1.0/networks",
                        json={"name": "lab", "config": {"ipv4.address": "10.9.9.0/24", "isolation": "maybe"}})
    assert status == 400 and len(body["problems"]) == 2 and "isolation" in body["error"]
    assert net_api.plumbing.calls == [] and net_api.db.list_networks() == []
    net_api.plumbing.fail["ensure_network"] = OSError("no bridge for you")
    status, body = call(net_api, openapi, "POST", "/1.0/networks", json={"name": "lab"})
    assert status == 500 and net_api.db.list_networks() == []              # the row went with the failure


def test_network_in_use_keeps_its_subnet_and_cannot_go(net_api, openapi) -> None:
    status, body = call(net_api, openapi, "POST", "/1.0/networks",
                        json={"name": "lab", "config": {"ipv4.address": "10.9.9.1/24", "ipv6.address": "none",
                                                        "bridge": "jblab"}})
    assert status == 201 and body["metadata"]["config"]["bridge"] == "jblab"
    assert create(net_api, openapi, "db1", config={"nic.eth0.network": "lab", "nic.eth0.ipv4": "10.9.9.50"})[
        "status"] == "success"
    assert addresses(net_api, openapi) == {("db1", "eth0", 4): "10.9.9.50"}
    # a static address taken, or outside the subnet: refused, nothing made
    status, body = call(net_api, openapi, "POST", "/1.0/instances",
                        json={"name": "db2", "template": "bb", "config": {"nic.eth0.network": "lab",
                                                                            "nic.eth0.ipv4": "10.9.9.50"}})
    assert status == 409 and "db1's" in body["error"]
    status, body = call(net_api, openapi, "POST", "/1.0/instances",
                        json={"name": "db2", "template": "bb", "config": {"nic.eth0.network": "lab",
                                                                            "nic.eth0.ipv4": "10.1.1.5"}})
    assert status == 400 and "outside the network's subnet 10.9.9.0/24" in body["error"]
    status, body = call(net_api, openapi, "POST", "/1.0/instances",
                        json={"name": "db2", "template": "bb", "config": {"nic.eth0.network": "nosuch"}})
    assert status == 400 and "network 'nosuch' not found" in body["error"]
    assert [i.name for i in net_api.db.list_instances()] == ["db1"]

    status, body = call(net_api, openapi, "PATCH", "/1.0/networks/lab", "/1.0/networks/{name}",
                        json={"config": {"ipv4.address": "10.9.8.1/24"}})
    assert status == 409 and "while db1 use it" in body["error"]
    status, body = call(net_api, openapi, "PATCH", "/1.0/networks/lab", "/1.0/networks/{name}",
                        json={"config": {"isolation": "isolate"}})
    assert status == 200 and net_api.plumbing.calls[-1][0] == "update_network"
    status, body = call(net_api, openapi, "DELETE", "/1.0/networks/lab", "/1.0/networks/{name}")
    assert status == 409 and "used by db1" in body["error"]
    status, body = call(net_api, openapi, "DELETE", "/1.0/instances/db1", "/1.0/instances/{name}")
    wait(net_api, openapi, body)
    status, body = call(net_api, openapi, "DELETE", "/1.0/networks/lab", "/1.0/networks/{name}")
    assert status == 200 and net_api.plumbing.verbs()[-2:] == ["remove_network", "destroy"]   # the last one


def test_port_forwards_follow_the_instance(net_api, openapi) -> None:
    create(net_api, openapi, "web1")
    addr = addresses(net_api, openapi)[("web1", "eth0", 4)]
    status, body = call(net_api, openapi, "POST", "/1.0/networks/default/forwards", "/1.0/networks/{name}/forwards",
                        json={"instance": "web1", "host_port": 8080, "port": 80})
    assert status == 201 and body["metadata"]["nic"] == "eth0"
    verb, fwd = net_api.plumbing.calls[-1]
    assert verb == "add_forward" and (fwd.address, fwd.port, fwd.host_port, fwd.proto) == (addr, 80, 8080, "tcp")
    status, body = call(net_api, openapi, "POST", "/1.0/networks/default/forwards", "/1.0/networks/{name}/forwards",
                        json={"instance": "web1", "host_port": 8080, "port": 81})
    assert status == 409
    status, body = call(net_api, openapi, "GET", "/1.0/networks/default/forwards", "/1.0/networks/{name}/forwards")
    assert [f["host_port"] for f in body["metadata"]] == [8080]
    status, body = call(net_api, openapi, "DELETE", "/1.0/instances/web1", "/1.0/instances/{name}")
    wait(net_api, openapi, body)
    assert net_api.plumbing.verbs()[-3:] == ["remove_forward", "remove_network", "destroy"]
    assert net_api.db.forwards() == [] and net_api.db.list_networks() == []   # the default went with web1
    status, body = call(net_api, openapi, "DELETE", "/1.0/networks/default/forwards/tcp/8080",
                        "/1.0/networks/{name}/forwards/{proto}/{host_port}")
    assert status == 404


def test_nics_added_and_removed_live(net_api, openapi) -> None:
    create(net_api, openapi, "web1")
    status, body = call(net_api, openapi, "PUT", "/1.0/instances/web1/state", "/1.0/instances/{name}/state",
                        json={"action": "start"})
    wait(net_api, openapi, body)
    status, body = call(net_api, openapi, "POST", "/1.0/instances/web1/nics", "/1.0/instances/{name}/nics",
                        json={"name": "eth1", "config": {"limits.egress": "10Mbit"}})
    assert status == 201 and [n["name"] for n in body["metadata"]] == ["eth0", "eth1"]
    verb, plan = net_api.seen[-1]
    assert verb == "update" and [n["name"] for n in plan["nics"]] == ["eth0", "eth1"]
    assert plan["nics"][1]["egress_kbit"] == 10000
    assert plan["nics"][0]["gateway4"] and plan["nics"][1]["gateway4"] is None   # one default route
    assert ("web1", "eth1", 4) in addresses(net_api, openapi)
    status, body = call(net_api, openapi, "POST", "/1.0/instances/web1/nics", "/1.0/instances/{name}/nics",
                        json={"name": "eth1"})
    assert status == 409
    status, body = call(net_api, openapi, "DELETE", "/1.0/instances/web1/nics/eth1", "/1.0/instances/{name}/nics/{nic}")
    assert status == 200 and [n["name"] for n in body["metadata"]] == ["eth0"]
    assert [n["name"] for n in net_api.seen[-1][1]["nics"]] == ["eth0"]
    assert ("web1", "eth1", 4) not in addresses(net_api, openapi)
    # a NIC's network cannot change while it runs: stop it, or remove and add the NIC
    status, body = call(net_api, openapi, "PATCH", "/1.0/instances/web1", "/1.0/instances/{name}",
                        json={"config": {"nic.eth0.ipv4": "none"}})
    assert status == 409 and "nic.eth0.ipv4 cannot change" in body["error"]


def test_config_set_moves_a_stopped_instance_s_nic(net_api, openapi) -> None:
    call(net_api, openapi, "POST", "/1.0/networks", json={"name": "lab", "config": {"ipv4.address": "10.9.9.1/24"}})
    create(net_api, openapi, "web1")
    assert addresses(net_api, openapi)[("web1", "eth0", 4)] != "10.9.9.2"
    status, body = call(net_api, openapi, "PATCH", "/1.0/instances/web1", "/1.0/instances/{name}",
                        json={"config": {"nic.eth0.network": "lab"}})
    assert status == 200 and addresses(net_api, openapi)[("web1", "eth0", 4)] == "10.9.9.2"
    status, body = call(net_api, openapi, "PATCH", "/1.0/instances/web1", "/1.0/instances/{name}",
                        json={"config": {"nic.eth0.network": "nosuch"}})
    assert status == 400 and "network 'nosuch' not found" in body["error"]
    assert net_api.db.get_instance("web1").config["nic.eth0.network"] == "lab"      # nothing changed
    status, body = call(net_api, openapi, "PATCH", "/1.0/instances/web1", "/1.0/instances/{name}",
                        json={"config": {"nic.eth0.ipv4": "10.9.9.200"}})
    assert status == 200 and addresses(net_api, openapi)[("web1", "eth0", 4)] == "10.9.9.200"


def test_daemon_start_makes_every_network_and_forward_again(net_api, openapi) -> None:
    call(net_api, openapi, "POST", "/1.0/networks", json={"name": "lab", "config": {"ipv6.address": "none"}})
    create(net_api, openapi, "web1", config={"nic.eth0.network": "lab"})
    call(net_api, openapi, "POST", "/1.0/networks/lab/forwards", "/1.0/networks/{name}/forwards",
         json={"instance": "web1", "proto": "udp", "host_port": 5353, "port": 53})
    net_api.plumbing.calls.clear()
    net_api.app.state.networks.ensure_all()          # what jaulad does at its start
    assert [(v, getattr(a, "name", None) or a.host_port) for v, a in net_api.plumbing.calls] == [
        ("ensure_network", "lab"), ("add_forward", 5353)]
    net_api.plumbing.fail["ensure_network"] = OSError("bridge gone wrong")
    net_api.app.state.networks.ensure_all()          # logged: the daemon starts anyway


def test_a_failing_default_network_says_how_to_do_without(net_api, openapi) -> None:
    net_api.plumbing.fail["ensure_network"] = OSError("no bridges here")
    resp = net_api.client._http.post("/1.0/instances", json={"name": "web1", "template": "bb"})
    body = resp.json()    # a host-side failure: 500 in the error envelope
    assert resp.status_code == 500 and body["type"] == "error" and "no bridges here" in body["error"]
    assert "nic.eth0.type=none" in body["error"]
    assert net_api.db.list_instances() == [] and net_api.db.list_networks() == []
    assert create(net_api, openapi, "web1", config={"nic.eth0.type": "none"})["status"] == "success"
