"""An explicit subnet that the host already routes (its uplink's, another bridge's) is refused
before the bridge is made, on create and on set; the network's own subnet, unchanged, is not a
clash with itself. Over the fake backend with a recording host side."""

from __future__ import annotations

from tests.unit.network_fakes import RecordingPlumbing
from tests.unit.test_api import call
from tests.unit.test_api_networks import net_api  # noqa: F401 (the fixture)


def test_a_subnet_the_host_routes_is_refused_before_any_change(net_api, openapi) -> None:  # noqa: F811
    plumbing: RecordingPlumbing = net_api.plumbing
    plumbing.routes = ["192.168.1.0/24", "10.50.0.0/16", "fd00:1::/64"]
    for key, value, route in (("ipv4.address", "192.168.1.7/24", "192.168.1.0/24"),
                              ("ipv4.address", "10.50.3.1/24", "10.50.0.0/16"),
                              ("ipv4.address", "10.0.0.1/8", "10.50.0.0/16"),
                              ("ipv6.address", "fd00:1::1/48", "fd00:1::/64")):
        status, body = call(net_api, openapi, "POST", "/1.0/networks",
                            json={"name": "lab", "config": {key: value}})
        assert status == 400, body
        assert f"overlaps the host's route or address {route}" in body["error"], body
        assert plumbing.calls == [] and net_api.db.list_networks() == []

    status, body = call(net_api, openapi, "POST", "/1.0/networks",
                        json={"name": "lab", "config": {"ipv4.address": "10.9.9.1/24", "ipv6.address": "none"}})
    assert status == 201, body
    plumbing.routes.append("10.9.9.0/24")             # the bridge's own route, now on the host
    status, body = call(net_api, openapi, "PATCH", "/1.0/networks/lab", "/1.0/networks/{name}",
                        json={"config": {"isolation": "isolate"}})
    assert status == 200, body                       # its own subnet, unchanged: no clash with itself
    status, body = call(net_api, openapi, "PATCH", "/1.0/networks/lab", "/1.0/networks/{name}",
                        json={"config": {"ipv4.address": "10.9.9.1/25"}})
    assert status == 200, body                       # a change within its own old route: fine
    calls = len(plumbing.calls)
    status, body = call(net_api, openapi, "PATCH", "/1.0/networks/lab", "/1.0/networks/{name}",
                        json={"config": {"ipv4.address": "192.168.1.1/24"}})
    assert status == 400 and "192.168.1.0/24" in body["error"], body
    assert len(plumbing.calls) == calls
    assert net_api.db.get_network("lab").config["ipv4.address"] == "10.9.9.1/25"
