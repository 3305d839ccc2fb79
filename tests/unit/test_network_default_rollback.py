"""A refused change that made the default network on first use (a static address outside its
subnet, known only once the subnet is picked) takes the network away again: no bridge, no row,
no firewall table left for nobody. Over the fake backend with a recording host side."""

from __future__ import annotations

from tests.unit.test_api import call, create, wait
from tests.unit.test_api_networks import net_api  # noqa: F401 (the fixture)


def _networks(api, openapi) -> list[str]:
    status, body = call(api, openapi, "GET", "/1.0/networks")
    assert status == 200
    return [n["name"] for n in body["metadata"]]


def test_a_refused_create_takes_the_default_network_it_made_away(net_api, openapi) -> None:  # noqa: F811
    status, body = call(net_api, openapi, "POST", "/1.0/instances",
                        json={"name": "web1", "template": "bb", "config": {"nic.eth0.ipv4": "10.255.255.5"}})
    assert status == 400 and "outside the network's subnet" in body["error"], body
    assert [i.name for i in net_api.db.list_instances()] == []
    assert _networks(net_api, openapi) == []
    assert net_api.plumbing.verbs() == ["ensure_network", "remove_network", "destroy"]


def test_a_refused_nic_add_or_config_set_takes_the_default_network_away(net_api, openapi) -> None:  # noqa: F811
    status, body = call(net_api, openapi, "POST", "/1.0/networks",
                        json={"name": "lab", "config": {"ipv4.address": "10.9.9.1/24", "ipv6.address": "none"}})
    assert status == 201
    assert create(net_api, openapi, "db1", config={"nic.eth0.network": "lab"})["status"] == "success"
    status, body = call(net_api, openapi, "POST", "/1.0/instances/db1/nics", "/1.0/instances/{name}/nics",
                        json={"name": "eth1", "config": {"ipv4": "10.255.255.5"}})
    assert status == 400 and "outside the network's subnet" in body["error"], body
    assert _networks(net_api, openapi) == ["lab"]
    status, body = call(net_api, openapi, "PATCH", "/1.0/instances/db1", "/1.0/instances/{name}",
                        json={"config": {"nic.eth1.network": "default", "nic.eth1.ipv4": "10.255.255.5"}})
    assert status == 400 and "outside the network's subnet" in body["error"], body
    assert _networks(net_api, openapi) == ["lab"]
    assert net_api.plumbing.verbs().count("ensure_network") == 3            # lab, then default twice
    assert net_api.plumbing.verbs().count("remove_network") == 2            # default twice, lab stays
    assert "nic.eth1.network" not in net_api.db.get_instance("db1").config

    # a used default network stays when a later change fails
    status, body = call(net_api, openapi, "POST", "/1.0/instances/db1/nics", "/1.0/instances/{name}/nics",
                        json={"name": "eth1"})
    assert status == 201
    status, body = call(net_api, openapi, "POST", "/1.0/instances/db1/nics", "/1.0/instances/{name}/nics",
                        json={"name": "eth2", "config": {"ipv4": "10.255.255.5"}})
    assert status == 400
    assert _networks(net_api, openapi) == ["default", "lab"]
    status, body = call(net_api, openapi, "DELETE", "/1.0/instances/db1?force=true", "/1.0/instances/{name}")
    wait(net_api, openapi, body)
    assert _networks(net_api, openapi) == ["lab"]


def test_a_nic_name_that_is_no_interface_name_is_refused_by_name(net_api, openapi) -> None:  # noqa: F811
    assert create(net_api, openapi, "db1", config={"nic.eth0.type": "none"})["status"] == "success"
    for bad in ("../e", "eth.1", "a" * 16, "é"):
        status, body = call(net_api, openapi, "POST", "/1.0/instances/db1/nics", "/1.0/instances/{name}/nics",
                            json={"name": bad})
        assert status == 400 and f"NIC name {bad!r} is not an interface name" in body["error"], body
    assert _networks(net_api, openapi) == [] and net_api.plumbing.calls == []
