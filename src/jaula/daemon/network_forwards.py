"""Port forwards of jaulad's networks: stored and applied to the firewall together, following
their instance's address, gone with their instance or its NIC. A mixin of NetworkService."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from jaula.daemon.network_tables import ForwardRow
from jaula.errors import BadState, ConfigError, Exists, NotFound
from jaula.network.plan import PortForward

log = logging.getLogger("jaula.networks")


class ForwardActions:
    db: Any
    plumbing: Any

    @property
    def enabled(self) -> bool: ...  # NetworkService's

    def _event(self, type_: str, payload: dict[str, Any]) -> None: ...  # NetworkService's

    def _follow_forwards(self, name: str, before: dict, after: dict) -> None:
        for f in self.db.forwards(instance=name):
            old, new = before.get((f.nic, 4)), after.get((f.nic, 4))
            if old == new:
                continue
            if new is None or new.network != f.network:
                raise BadState(f"nic.{f.nic} of {name!r} has a port forward ({f.proto} {f.host_port}) on network "
                               f"{f.network!r}: remove it first (jaula network forward remove)")
            if self.enabled and old is not None:
                self.plumbing.remove_forward(self._forward_plan(f, old.address))
            if self.enabled:
                self.plumbing.add_forward(self._forward_plan(f, new.address))

    def release(self, name: str) -> None:
        """Before the instance's rows go: its forwards leave the firewall (its addresses go with the row)."""
        if not self.enabled:
            return
        for f in self.db.forwards(instance=name):
            try:
                self.plumbing.remove_forward(self._forward_plan(f))
            except Exception as exc:  # noqa: BLE001 - the delete goes on
                log.warning("forward %s %s of %s: %s", f.proto, f.host_port, name, exc)

    # -- forwards ----------------------------------------------------------------------------------
    def add_forward(self, network: str, instance: str, proto: str, host_port: int, port: int,
                    host_address: str = "", nic: str | None = None) -> ForwardRow:
        problems = []
        if proto not in ("tcp", "udp"):
            problems.append(f"proto {proto!r} is not one of: tcp, udp")
        for what, p in (("host_port", host_port), ("port", port)):
            if not isinstance(p, int) or not 1 <= p <= 65535:
                problems.append(f"{what} {p!r}: use a port from 1 to 65535")
        if host_address:
            try:
                host_address = str(ipaddress.ip_address(host_address))
            except ValueError:
                problems.append(f"host_address {host_address!r} is not an address; leave it empty for every one")
        self.db.get_network(network)
        self.db.get_instance(instance)
        addrs = [a for a in self.db.addresses(instance=instance, network=network)
                 if a.family == 4 and (nic is None or a.nic == nic)]
        if not addrs:
            problems.append(f"instance {instance!r} has no IPv4 address on network {network!r}"
                            + (f" on nic {nic!r}" if nic else "") + ": give it a NIC there first")
        if problems:
            raise ConfigError(problems)
        if self.enabled and self.plumbing.port_in_use(proto, host_port, host_address or None):
            where = host_address or "every host address"
            raise Exists(f"{proto} port {host_port} on {where} is held by a host service (a socket listening or bound there): "
                         "a forward would take its traffic; pick another host port")
        with self.db.transaction():
            row = self.db.add_forward(ForwardRow(network=network, instance=instance, nic=addrs[0].nic, proto=proto,
                                                 host_port=host_port, port=port, host_address=host_address))
            if self.enabled:
                self.plumbing.add_forward(self._forward_plan(row, addrs[0].address))
        self._event("network-forward-added", {"network": network, "instance": instance,
                                                            "proto": proto, "host_port": host_port})
        return row

    def remove_forward(self, network: str, proto: str, host_port: int, host_address: str = "") -> None:
        found = [f for f in self.db.forwards(network=network)
                 if f.proto == proto and f.host_port == host_port and f.host_address == host_address]
        if not found:
            raise NotFound(f"No {proto} forward of port {host_port} on network {network!r}: "
                           f"`jaula network forward list {network}` shows them")
        with self.db.transaction():
            self.db.delete_forward(found[0].id)
            if self.enabled:
                self.plumbing.remove_forward(self._forward_plan(found[0]))
        self._event("network-forward-removed", {"network": network, "proto": proto,
                                                              "host_port": host_port})

    def _forward_plan(self, f: ForwardRow, address: str | None = None) -> PortForward:
        if address is None:
            found = [a.address for a in self.db.addresses(instance=f.instance, network=f.network)
                     if a.family == 4 and a.nic == f.nic]
            address = found[0] if found else "0.0.0.0"
        return PortForward(instance=f.instance, proto=f.proto, host_port=f.host_port, address=address, port=f.port,
                           host_address=f.host_address or None)
