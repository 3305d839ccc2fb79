"""A macvlan NIC removed or changed on a running instance goes from inside its namespace (it has
no host side: before, a live `jaula nic remove` left it there, and adding it again failed with
"File exists"). Real links, as root; the parent is a veth end (no dummy driver in this kernel)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from jaula.network import links
from jaula.network.links import netlink_in
from jaula.network.plan import MACVLAN, NicPlan
from jaula.network.plumbing import Plumbing
from tests.support.netns import Ns

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, macvlan")]

P = f"jm{os.getpid() % 10000:04d}"


@pytest.fixture
def parent() -> Iterator[str]:
    with IPRoute() as ipr:
        ipr.link("add", ifname=f"{P}p0", kind="veth", peer=f"{P}p1")
        ipr.link("set", ifname=f"{P}p0", state="up")
        ipr.link("set", ifname=f"{P}p1", state="up")
    try:
        yield f"{P}p0"
    finally:
        subprocess.run(["ip", "link", "del", f"{P}p0"], capture_output=True, check=False)


def _names(pid: int) -> set[str]:
    with netlink_in(pid) as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.link("dump")}


def _macvlan(parent: str, **kw: object) -> NicPlan:
    base: dict[str, object] = {"instance": "m1", "name": "eth1", "type": MACVLAN, "host_name": f"{P}v1",
                               "parent": parent, "mac": "02:00:00:bb:00:01", "network": None,
                               "ipv4": ("10.213.7.5/32",), "ipv6": (), "gateway4": None, "gateway6": None}
    base.update(kw)
    return NicPlan(**base)  # type: ignore[arg-type]


def test_a_macvlan_removed_live_goes_from_inside_and_can_come_back(parent: str) -> None:
    ns = Ns(user=True)
    try:
        nic = _macvlan(parent)
        links.attach(nic, ns.pid)
        assert "eth1" in _names(ns.pid)
        links.detach(nic)                       # no pid (a stop: the namespace dies): inside untouched
        assert "eth1" in _names(ns.pid)
        Plumbing("unused").unplug(nic, ns.pid)  # the live path (instances/nics.update)
        assert "eth1" not in _names(ns.pid)
        links.attach(nic.replace(mac="02:00:00:bb:00:02"), ns.pid)  # again, changed: no "File exists"
        with netlink_in(ns.pid) as ipr:
            assert ipr.link("get", ifname="eth1")[0].get_attr("IFLA_ADDRESS") == "02:00:00:bb:00:02"
        links.detach(nic, ns.pid)
        links.detach(nic, ns.pid)               # idempotent
        assert "eth1" not in _names(ns.pid)
    finally:
        ns.close()
    links.detach(nic, ns.pid)                   # the process gone: nothing to do, no error


def test_a_live_detach_never_deletes_the_hosts_interface_of_that_name(parent: str) -> None:
    """A pid in the host's network namespace (a host-network instance, a wrong record) is refused
    quietly: the host's link of the NIC's name stays."""
    nic = _macvlan(parent, name=f"{P}p1")
    links.detach(nic, os.getpid())
    with IPRoute() as ipr:
        assert ipr.link_lookup(ifname=f"{P}p1")
