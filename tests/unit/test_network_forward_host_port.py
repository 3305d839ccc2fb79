"""A forward on a host port that a host service holds is refused before anything is stored or
applied (its DNAT would take that service's traffic: a forward of 22 took sshd's from outside).
The API over the fake backend; the probe (jaula.network.ports) against real sockets of this
network namespace, which needs no privilege."""

from __future__ import annotations

import socket

import pytest

from jaula.network import ports
from tests.unit.test_api import call, create
from tests.unit.test_api_networks import addresses, net_api  # noqa: F401 (the fixture)


def test_a_forward_on_a_held_port_is_refused_before_any_change(net_api, openapi) -> None:  # noqa: F811
    create(net_api, openapi, "web1")
    assert ("web1", "eth0", 4) in addresses(net_api, openapi)
    net_api.plumbing.held = {("tcp", 22)}
    before = net_api.plumbing.verbs()
    status, body = call(net_api, openapi, "POST", "/1.0/networks/default/forwards", "/1.0/networks/{name}/forwards",
                        json={"instance": "web1", "proto": "tcp", "host_port": 22, "port": 80})
    assert status == 409 and "tcp port 22 on every host address is held by a host service" in body["error"], body
    assert net_api.plumbing.verbs() == before and net_api.db.forwards() == []
    status, body = call(net_api, openapi, "POST", "/1.0/networks/default/forwards", "/1.0/networks/{name}/forwards",
                        json={"instance": "web1", "proto": "udp", "host_port": 22, "port": 80})
    assert status == 201, body                           # udp 22 is free


@pytest.mark.parametrize("family,address", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_probe_sees_a_listener_and_a_bound_udp_socket(family: int, address: str) -> None:
    try:
        tcp = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("no IPv6 in this kernel's network namespace")
    with tcp, socket.socket(family, socket.SOCK_DGRAM) as udp:
        try:
            tcp.bind((address, 0))
        except OSError:
            pytest.skip(f"no {address} here (IPv6 disabled on lo)")
        port = tcp.getsockname()[1]
        tcp.listen(1)
        assert ports.in_use("tcp", port) and ports.in_use("tcp", port, address)
        udp.bind((address, 0))
        uport = udp.getsockname()[1]
        assert ports.in_use("udp", uport) and ports.in_use("udp", uport, address)
    assert not ports.in_use("tcp", port) and not ports.in_use("udp", uport)
