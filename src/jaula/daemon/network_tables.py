"""Networks, their address allocations and port forwards: the `Database` methods for them.

A mixin of `Database` (as `Tables`), over migration 3's tables. Allocation is a row per
(instance, NIC, family), unique per network: written in the caller's transaction with the
instance's own rows, so a failed create or change leaves none; gone with the instance
(ON DELETE CASCADE). A network with addresses in it cannot be deleted (RESTRICT).
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

from jaula.daemon.models import config_problems, now, validate_name
from jaula.errors import BadState, ConfigError, Exists, NotFound
from jaula.record import Record


class NetworkRow(Record):
    name: str
    description: str = ""
    config: dict = {}  # noqa: RUF012 - Record copies it per instance; key -> value, str (resolved)
    created: str = ""


class AddressRow(Record, frozen=True):
    network: str
    instance: str
    nic: str
    family: int                       # 4 or 6
    address: str                      # without prefix


class ForwardRow(Record, frozen=True):
    network: str
    instance: str
    nic: str
    proto: str                        # tcp or udp
    host_port: int
    port: int
    host_address: str = ""            # "": every host address
    id: int = 0


class NetworkTables:
    _conn: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[Any]: ...  # Database's
    def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...  # Database's
    def _write_config(self, table: str, column: str, owner: int, config: dict[str, str]) -> None: ...

    # -- networks -----------------------------------------------------------------------------
    def create_network(self, net: NetworkRow) -> NetworkRow:
        validate_name(net.name, "Network")
        if problems := config_problems(net.config, "Network"):
            raise ConfigError(problems)
        with self.transaction():
            if self._network_id(net.name, must=False) is not None:
                raise Exists(f"Network {net.name!r} already exists: pick another name, or delete it first")
            bridge = net.config.get("bridge")
            if bridge and any(n.config.get("bridge") == bridge for n in self.list_networks()):
                raise Exists(f"Network {net.name!r}: bridge {bridge!r} is another network's: pick another bridge name")
            cur = self._conn.execute("INSERT INTO networks (name, description, created) VALUES (?, ?, ?)",
                                     (net.name, net.description, net.created or now()))
            self._write_config("network_config", "network_id", cur.lastrowid, net.config)  # type: ignore[arg-type]
        return self.get_network(net.name)

    def get_network(self, name: str) -> NetworkRow:
        with self._read() as conn:
            found = conn.execute("SELECT id, description, created FROM networks WHERE name = ?", (name,)).fetchone()
            if found is None:
                raise NotFound(f"Network {name!r} not found: `jaula network list` shows the networks")
            config = dict(conn.execute(
                "SELECT key, value FROM network_config WHERE network_id = ? ORDER BY key", (found[0],)))
        return NetworkRow(name=name, description=found[1], config=config, created=found[2])

    def list_networks(self) -> list[NetworkRow]:
        with self._read() as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM networks ORDER BY name")]
            return [self.get_network(n) for n in names]

    def update_network(self, name: str, *, description: str | None = None,
                       config: dict[str, str] | None = None) -> NetworkRow:
        """Change the description, or replace the whole config, or both."""
        if config is not None and (problems := config_problems(config, "Network")):
            raise ConfigError(problems)
        with self.transaction():
            nid = self._network_id(name)
            if description is not None:
                self._conn.execute("UPDATE networks SET description = ? WHERE id = ?", (description, nid))
            if config is not None:
                self._conn.execute("DELETE FROM network_config WHERE network_id = ?", (nid,))
                self._write_config("network_config", "network_id", nid, config)  # type: ignore[arg-type]
        return self.get_network(name)

    def delete_network(self, name: str) -> None:
        with self.transaction():
            nid = self._network_id(name)
            users = self.address_users(name)
            if users:
                raise BadState(f"Network {name!r} is used by {', '.join(users)}: remove their NICs on it, "
                               "or delete them, first")
            self._conn.execute("DELETE FROM networks WHERE id = ?", (nid,))

    def _network_id(self, name: str, must: bool = True) -> int | None:
        found = self._conn.execute("SELECT id FROM networks WHERE name = ?", (name,)).fetchone()
        if found is None and must:
            raise NotFound(f"Network {name!r} not found: `jaula network list` shows the networks")
        return None if found is None else found[0]

    # -- addresses ------------------------------------------------------------------------------
    def addresses(self, *, network: str | None = None, instance: str | None = None) -> list[AddressRow]:
        """Allocated addresses, of one network or one instance or all."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT n.name, i.name, a.nic, a.family, a.address FROM network_addresses a "
                "JOIN networks n ON n.id = a.network_id JOIN instances i ON i.id = a.instance_id "
                "WHERE (?1 IS NULL OR n.name = ?1) AND (?2 IS NULL OR i.name = ?2) "
                "ORDER BY i.name, a.nic, a.family", (network, instance)).fetchall()
        return [AddressRow(*r) for r in rows]

    def address_users(self, network: str) -> list[str]:
        return sorted({a.instance for a in self.addresses(network=network)})

    def set_addresses(self, instance: str, rows: list[AddressRow]) -> None:
        """Make `rows` the instance's whole allocation (in the caller's transaction, if any);
        Exists when an address is another instance's."""
        with self.transaction():
            iid = self._conn.execute("SELECT id FROM instances WHERE name = ?", (instance,)).fetchone()
            if iid is None:
                raise NotFound(f"Instance {instance!r} not found: `jaula list` shows the instances")
            self._conn.execute("DELETE FROM network_addresses WHERE instance_id = ?", (iid[0],))
            for r in rows:
                nid = self._network_id(r.network)
                try:
                    self._conn.execute(
                        "INSERT INTO network_addresses (network_id, instance_id, nic, family, address) "
                        "VALUES (?, ?, ?, ?, ?)", (nid, iid[0], r.nic, r.family, r.address))
                except sqlite3.IntegrityError as exc:
                    owner = next((a.instance for a in self.addresses(network=r.network)
                                  if a.address == r.address), "another instance")
                    raise Exists(f"Address {r.address} of network {r.network!r} is {owner}'s: "
                                 f"pick another for nic.{r.nic}, or auto") from exc

    # -- forwards -------------------------------------------------------------------------------
    def add_forward(self, fwd: ForwardRow) -> ForwardRow:
        with self.transaction():
            nid = self._network_id(fwd.network)
            iid = self._conn.execute("SELECT id FROM instances WHERE name = ?", (fwd.instance,)).fetchone()
            if iid is None:
                raise NotFound(f"Instance {fwd.instance!r} not found: `jaula list` shows the instances")
            for f in self.forwards():
                if f.proto == fwd.proto and f.host_port == fwd.host_port and (
                        "" in (f.host_address, fwd.host_address) or f.host_address == fwd.host_address):
                    where = f.host_address or "every host address"
                    raise Exists(f"{fwd.proto} port {fwd.host_port} of {where} is already forwarded to "
                                 f"{f.instance} (network {f.network}): remove that forward first, or pick another port")
            cur = self._conn.execute(
                "INSERT INTO network_forwards (network_id, instance_id, nic, proto, host_address, host_port, port) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (nid, iid[0], fwd.nic, fwd.proto, fwd.host_address, fwd.host_port, fwd.port))
        return fwd.replace(id=cur.lastrowid)  # type: ignore[return-value]

    def forwards(self, *, network: str | None = None, instance: str | None = None) -> list[ForwardRow]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT f.id, n.name, i.name, f.nic, f.proto, f.host_address, f.host_port, f.port "
                "FROM network_forwards f JOIN networks n ON n.id = f.network_id "
                "JOIN instances i ON i.id = f.instance_id "
                "WHERE (?1 IS NULL OR n.name = ?1) AND (?2 IS NULL OR i.name = ?2) "
                "ORDER BY f.proto, f.host_port, f.host_address", (network, instance)).fetchall()
        return [ForwardRow(id=r[0], network=r[1], instance=r[2], nic=r[3], proto=r[4], host_address=r[5],
                           host_port=r[6], port=r[7]) for r in rows]

    def delete_forward(self, fwd_id: int) -> None:
        with self.transaction():
            if self._conn.execute("DELETE FROM network_forwards WHERE id = ?", (fwd_id,)).rowcount == 0:
                raise NotFound(f"Forward {fwd_id} not found: nothing deleted")
