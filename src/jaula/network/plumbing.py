"""What jaulad does to the host's network, in one place, over the appliers (`links`, `tc`,
`firewall`): a network's bridge and firewall chains (the daemon, at its start and when a network
is made, changed or deleted), port forwards, and an instance's NICs (the container driver in the
spawner, between the create of its init and its start).

The firewall table is the daemon's (`ipam.table_name`): "jaula" for the default root, another
for each other root, so test daemons never touch each other's rules. A recording fake with the
same methods stands in for it in unit tests (tests/unit/network_fakes.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from jaula.network.plan import BRIDGED, NetworkPlan, NicPlan, PortForward

log = logging.getLogger("jaula.network")


def _no_timing(step: str) -> None:
    pass


class Plumbing:
    def __init__(self, table: str) -> None:
        self.table = table
        self._fw: Any = None
        self.timing: Callable[[str], None] | None = None  # called after each step of plug/unplug

    def firewall(self) -> Any:
        if self._fw is None:
            from jaula.network.firewall import Firewall

            self._fw = Firewall(table=self.table)
        return self._fw

    # -- networks (the daemon) ---------------------------------------------------------------
    def host_routes(self) -> list[str]:
        from jaula.network import links

        return links.host_routes()

    def ensure_network(self, net: NetworkPlan) -> None:
        """The bridge with its gateway addresses, and the network's firewall rules; idempotent.
        A failure removes what this call made."""
        from jaula.network import links

        existed = links.exists(net.bridge)
        with ExitStack() as undo:
            links.ensure_bridge(net)
            if not existed:
                undo.callback(links.remove_bridge, net)
            self.firewall().ensure_network(net)
            undo.pop_all()

    def update_network(self, net: NetworkPlan) -> None:
        from jaula.network import links

        links.ensure_bridge(net)
        self.firewall().update_network(net)

    def remove_network(self, net: NetworkPlan) -> None:
        from jaula.network import links

        self.firewall().remove_network(net)
        links.remove_bridge(net)

    def add_forward(self, fwd: PortForward) -> None:
        self.firewall().add_forward(fwd)

    def port_in_use(self, proto: str, port: int, address: str | None = None) -> bool:
        """Whether a host socket holds the port a new forward would take (`ports.in_use`)."""
        from jaula.network import ports

        return ports.in_use(proto, port, address)

    def remove_forward(self, fwd: PortForward) -> None:
        self.firewall().remove_forward(fwd)

    def destroy(self) -> None:
        """The whole table (the daemon's rules, all networks): for tests and uninstall."""
        self.firewall().destroy()

    # -- NICs (the driver) -----------------------------------------------------------------------
    def police(self, net: NetworkPlan | None, nic: NicPlan, undo: ExitStack) -> None:
        """The firewall rules of `nic` (a bridged one), before its interface exists: they key on
        its host-side name, so nothing it sends passes unpoliced; the undo pushed on `undo`."""
        if nic.type == BRIDGED and net is not None:
            self.firewall().add_nic(net, nic)
            undo.callback(self._quietly, "firewall remove_nic", self.firewall().remove_nic, nic)
            (self.timing or _no_timing)("firewall")

    def plug(self, net: NetworkPlan | None, nic: NicPlan, pid: int, undo: ExitStack, policed: bool = False) -> None:
        """Plug `nic` into the netns of `pid`: firewall rules first (`police`, unless `policed`:
        done already), then the interface, then its rate limits; each step's undo pushed on `undo`.
        `self.timing(step)` is called after each step (benchmarks)."""
        from jaula.network import links, tc

        mark = self.timing or _no_timing
        if not policed:
            self.police(net, nic, undo)
        links.attach(nic, pid, timing=self.timing)
        undo.callback(self._quietly, "detach", links.detach, nic)
        if nic.ingress_kbit is not None or nic.egress_kbit is not None:
            tc.set_rate(nic)
            mark("rate")

    def unplug(self, nic: NicPlan, pid: int | None = None) -> None:
        """Remove what `plug` made; what is already gone (the netns died with the instance) is fine.
        `pid`: the init of a running instance that keeps running (a live removal: a macvlan inside goes)."""
        from jaula.network import links

        mark = self.timing or _no_timing
        if nic.type == BRIDGED:
            self._quietly("firewall remove_nic", self.firewall().remove_nic, nic)
            mark("firewall")
        self._quietly("detach", links.detach, nic, pid)
        mark("detach")

    def remove_strays(self, host_names: list[str]) -> list[str]:
        """Veths and ifb devices left under these NICs' host names (`links.remove_strays`): for
        jaulad's start-up sweep, with the NICs of the instances that are not running."""
        from jaula.network import links

        return links.remove_strays(host_names)

    def set_rate(self, nic: NicPlan) -> None:
        from jaula.network import tc

        tc.set_rate(nic)

    @staticmethod
    def _quietly(what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - cleanup goes on; the error is logged
            log.warning("%s: %s", what, exc)
