"""A recording stand-in for jaula.network.plumbing.Plumbing (the host side of networks)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any


class RecordingPlumbing:
    def __init__(self, routes: list[str] | None = None, table: str = "jaula_t1") -> None:
        self.table = table
        self.routes = routes or []
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, Exception] = {}
        self.held: set[tuple[str, int]] = set()   # host ports a host socket holds (port_in_use)

    def _rec(self, verb: str, arg: Any) -> None:
        self.calls.append((verb, arg))
        if verb in self.fail:
            raise self.fail[verb]

    def verbs(self) -> list[str]:
        return [v for v, _ in self.calls]

    def host_routes(self) -> list[str]:
        return list(self.routes)

    def ensure_network(self, net: Any) -> None:
        self._rec("ensure_network", net)

    def update_network(self, net: Any) -> None:
        self._rec("update_network", net)

    def remove_network(self, net: Any) -> None:
        self._rec("remove_network", net)

    def add_forward(self, fwd: Any) -> None:
        self._rec("add_forward", fwd)

    def port_in_use(self, proto: str, port: int, address: str | None = None) -> bool:
        return (proto, port) in self.held

    def remove_forward(self, fwd: Any) -> None:
        self._rec("remove_forward", fwd)

    def police(self, net: Any, nic: Any, undo: ExitStack) -> None:
        self._rec("police", nic)
        undo.callback(self._rec, "unpolice", nic)

    def plug(self, net: Any, nic: Any, pid: int, undo: ExitStack, policed: bool = False) -> None:
        self._rec("plug" if not policed else "plug policed", nic)
        undo.callback(self.unplug, nic)

    def unplug(self, nic: Any, pid: int | None = None) -> None:
        self._rec("unplug", nic)

    def destroy(self) -> None:
        self._rec("destroy", None)

    def set_rate(self, nic: Any) -> None:
        self._rec("set_rate", nic)
