"""The network methods of jaula.client.Client (a mixin: rest.py keeps the connection)."""

from __future__ import annotations

from typing import Any


class NetworkMethods:
    def _sync(self, method: str, path: str, **kw: Any) -> Any: ...  # Client's

    def networks(self) -> list[dict[str, Any]]:
        return self._sync("GET", "/1.0/networks")

    def network(self, name: str) -> dict[str, Any]:
        return self._sync("GET", f"/1.0/networks/{name}")

    def create_network(self, name: str, config: dict[str, str] | None = None, description: str = "") -> dict[str, Any]:
        return self._sync("POST", "/1.0/networks", json={"name": name, "config": config or {},
                                                          "description": description})

    def update_network(self, name: str, config: dict[str, str | None] | None = None,
                       description: str | None = None) -> dict[str, Any]:
        return self._sync("PATCH", f"/1.0/networks/{name}", json={"config": config or {}, "description": description})

    def delete_network(self, name: str) -> None:
        self._sync("DELETE", f"/1.0/networks/{name}")

    def forwards(self, network: str) -> list[dict[str, Any]]:
        return self._sync("GET", f"/1.0/networks/{network}/forwards")

    def add_forward(self, network: str, instance: str, host_port: int, port: int, *, proto: str = "tcp",
                    host_address: str = "", nic: str | None = None) -> dict[str, Any]:
        return self._sync("POST", f"/1.0/networks/{network}/forwards", json={
            "instance": instance, "proto": proto, "host_port": host_port, "port": port,
            "host_address": host_address, "nic": nic})

    def remove_forward(self, network: str, host_port: int, *, proto: str = "tcp", host_address: str = "") -> None:
        self._sync("DELETE", f"/1.0/networks/{network}/forwards/{proto}/{host_port}",
                   params={"host_address": host_address})

    def network_addresses(self) -> list[dict[str, Any]]:
        """Every allocated address: {network, instance, nic, family, address}."""
        return self._sync("GET", "/1.0/network-addresses")

    def nics(self, name: str) -> list[dict[str, Any]]:
        return self._sync("GET", f"/1.0/instances/{name}/nics")

    def add_nic(self, name: str, nic: str, config: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return self._sync("POST", f"/1.0/instances/{name}/nics", json={"name": nic, "config": config or {}})

    def remove_nic(self, name: str, nic: str) -> list[dict[str, Any]]:
        return self._sync("DELETE", f"/1.0/instances/{name}/nics/{nic}")
