"""The daemon's state: one SQLite database (`$JAULA_ROOT/jaula.db`), the source of truth for config.

Settings, and why:
- WAL journal: readers never block the writer nor the writer readers, and a commit is one append.
- `synchronous=NORMAL`: in WAL mode a commit is written to the WAL without fsync; the WAL is
  synced at each checkpoint. A crash of the process (kill -9 included) loses nothing committed,
  since the written WAL is in the kernel's page cache; a power loss or kernel crash may lose the
  last transactions before the checkpoint, but never applies half of one: WAL frames carry
  checksums and a commit marker, and recovery replays only whole transactions. FULL would fsync
  at every commit (status changes, events, operations: many per action) for a gain the daemon
  does not need, since it reconciles instances with the kernel at start (live restore).
- foreign keys on (off by default in SQLite): config, profile links and id ranges go with their
  instance in one statement (ON DELETE CASCADE), and a profile in use cannot be deleted.
- a busy timeout: another process (a second jaulad, `sqlite3` by hand) holding the write lock
  makes us wait, then fail with Locked, rather than fail at once.
- autocommit connection with explicit `BEGIN IMMEDIATE`: every write goes through
  `transaction()`, takes the write lock at its start (no deadlock upgrading a read lock), and
  commits or rolls back as a whole.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jaula.daemon import migrations as _migrations
from jaula.daemon.migrations import SchemaError
from jaula.daemon.models import (
    IDMAP_SIZE,
    INSTANCE_STATUSES,
    InstanceRow,
    check_choice,
    config_problems,
    instance_problems,
    now,
    validate_name,
)
from jaula.daemon.network_tables import NetworkTables
from jaula.daemon.session_tables import SessionTables
from jaula.daemon.tables import Tables
from jaula.errors import ConfigError, Exists, JaulaError, Locked, NotFound

__all__ = ["DEFAULT_IDMAP_BASE", "ID_LIMIT", "Database", "SchemaError"]

DEFAULT_IDMAP_BASE = 1_000_000
ID_LIMIT = 2**32 - 1        # (uid_t)-1 is "no id": a range ends at or before it
EVENTS_KEEP = 10_000
BUSY_TIMEOUT_S = 10.0

_INSTANCE_COLUMNS = ("kind", "mode", "template", "description", "created", "status", "autostart",
                     "idmap_base", "idmap_size", "pid", "pid_start")
_UPDATABLE = frozenset(("mode", "template", "description", "status", "autostart", "pid", "pid_start"))


class Database(Tables, NetworkTables, SessionTables):  # networks, addresses, forwards; web sessions
    """The state database. Thread-safe: one connection, used under a lock.

    Reads return Records; writes take Records or named fields and run inside `transaction()`
    (their own, or the caller's when one is open, so several writes commit together).
    Instances and id ranges are here; profiles, templates, operations and events in `Tables`.
    """

    def __init__(self, path: str | os.PathLike[str], *, idmap_base: int = DEFAULT_IDMAP_BASE,
                 idmap_limit: int = ID_LIMIT, events_keep: int = EVENTS_KEEP,
                 busy_timeout: float = BUSY_TIMEOUT_S,
                 migrations: tuple[_migrations.Migration, ...] = _migrations.MIGRATIONS) -> None:
        if idmap_base < 0 or idmap_base + IDMAP_SIZE > idmap_limit or idmap_limit > ID_LIMIT:
            raise ConfigError(f"idmap base {idmap_base} and limit {idmap_limit} leave no room for "
                              f"one range of {IDMAP_SIZE} ids below {ID_LIMIT}")
        if events_keep < 1:
            raise ConfigError(f"events_keep {events_keep} must be at least 1")
        self.path = Path(path)
        self.idmap_base = idmap_base
        self.idmap_limit = idmap_limit
        self.events_keep = events_keep
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._depth = 0
        self._reading = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The database holds every instance's config: readable by root only. Made before
        # connecting so it is never there with wider modes (the -wal and -shm files follow it).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                     check_same_thread=False)
        try:
            self._conn.row_factory = sqlite3.Row
            mode = self._locked_call(self._set_wal)
            if mode.lower() != "wal":
                raise SchemaError(f"Database {str(self.path)!r}: journal mode is {mode!r}, WAL refused "
                                  "(a file system without shared memory?): put it on a local disk")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self.schema_version = self._locked_call(
                lambda: _migrations.apply(self._conn, str(self.path), migrations))
        except BaseException:
            self._conn.close()
            raise

    def _set_wal(self) -> str:
        # Turning a new database to WAL needs an exclusive lock, and SQLite does not always call
        # the busy handler for it (it returns SQLITE_BUSY at once when another connection is
        # reading the new file): retry until the busy timeout, as the handler would have.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    # -- connection and transactions ------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (then re-raised).

        Nested use joins the outer transaction through a savepoint: an exception inside the
        inner block undoes only the inner block's writes, and nothing is committed until the
        outermost block ends.
        """
        with self._lock:
            if self._depth:
                name = f"jaula_sp{self._depth}"
                self._conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                else:
                    self._conn.execute(f"RELEASE {name}")
                finally:
                    self._depth -= 1
                return
            self._locked_call(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            self._depth = 1
            try:
                yield self
                self._locked_call(lambda: self._conn.execute("COMMIT"))
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for reads of several statements (joins an open transaction)."""
        with self._lock:
            if self._depth or self._reading:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            self._reading = True
            try:
                yield self._conn
            finally:
                self._reading = False
                self._conn.execute("COMMIT")

    def _locked_call(self, call):  # type: ignore[no-untyped-def]
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise Locked(f"Database {str(self.path)!r} is locked by another process for more "
                             f"than {self.busy_timeout:g} s: is another jaulad running?") from exc
            raise

    def integrity_check(self) -> list[str]:
        """SQLite's own check of the file and its indexes: [] when all is well."""
        with self._lock:
            rows = [r[0] for r in self._conn.execute("PRAGMA integrity_check")]
            rows += [f"foreign key: {tuple(r)}" for r in self._conn.execute("PRAGMA foreign_key_check")]
        return [] if rows == ["ok"] else [r for r in rows if r != "ok"]

    # -- id ranges ----------------------------------------------------------------------------

    def allocate_idmap(self, size: int = IDMAP_SIZE) -> int:
        """The first id of the lowest free range of `size` ids at base + k * 65536.

        It reserves nothing by itself: call it inside the transaction that stores the range
        (create_instance does), so no other writer can take the same range meanwhile.
        """
        if not isinstance(size, int) or size <= 0 or size % IDMAP_SIZE:
            raise ConfigError(f"idmap size {size!r} must be a positive multiple of {IDMAP_SIZE}")
        base = self.idmap_base
        candidate = base
        with self._read() as conn:
            taken = conn.execute(
                "SELECT idmap_base, idmap_size FROM instances WHERE idmap_base IS NOT NULL "
                "AND idmap_size > 0 AND idmap_base + idmap_size > ? ORDER BY idmap_base", (base,))
            for start, length in taken:
                if start >= candidate + size:
                    break  # the gap before this range fits
                end = max(candidate, start + length)
                candidate = base + -(-(end - base) // IDMAP_SIZE) * IDMAP_SIZE  # align up
        if candidate + size > self.idmap_limit:
            raise JaulaError(f"No free range of {size} ids between {base} and {self.idmap_limit}: "
                             "delete instances, or configure a lower idmap base")
        return candidate

    # -- instances ----------------------------------------------------------------------------

    def create_instance(self, row: InstanceRow) -> InstanceRow:
        """Store a new instance with its config and profiles, allocating its id range; return it."""
        if problems := instance_problems(row):
            raise ConfigError(problems)
        with self.transaction() as db:
            if db._instance_id(row.name, must=False) is not None:
                raise Exists(f"Instance {row.name!r} already exists: pick another name, or delete it first")
            if row.idmap_size and row.idmap_base is None:
                row = row.replace(idmap_base=db.allocate_idmap(row.idmap_size))
            if not row.created:
                row = row.replace(created=now())
            values = row.as_dict()
            try:
                cur = db._conn.execute(
                    f"INSERT INTO instances (name, {', '.join(_INSTANCE_COLUMNS)}, command) "
                    f"VALUES (?{', ?' * len(_INSTANCE_COLUMNS)}, ?)",
                    [row.name] + [values[c] for c in _INSTANCE_COLUMNS] + [json.dumps(list(row.command))])
            except sqlite3.IntegrityError as exc:
                if "idmap" in str(exc):
                    raise Exists(f"Instance {row.name!r}: ids {row.idmap_base}..{row.idmap_base + row.idmap_size - 1} "
                                 "overlap another instance's range: leave idmap_base unset to allocate one") from exc
                raise
            db._write_config("instance_config", "instance_id", cur.lastrowid, row.config)
            db._write_profiles(cur.lastrowid, row.profiles)
        return self.get_instance(row.name)

    def get_instance(self, name: str) -> InstanceRow:
        with self._read() as conn:
            found = conn.execute("SELECT * FROM instances WHERE name = ?", (name,)).fetchone()
            if found is None:
                raise NotFound(f"Instance {name!r} not found: `jaula list` shows the instances")
            return self._instances([found])[0]

    def list_instances(self, *, status: str | None = None, autostart: bool | None = None) -> list[InstanceRow]:
        """All instances by name; or those with this status, or this autostart (daemon start)."""
        if status is not None:
            check_choice(status, INSTANCE_STATUSES, "Instance status")
        with self._read() as conn:
            return self._instances(conn.execute(
                "SELECT * FROM instances WHERE (?1 IS NULL OR status = ?1) "
                "AND (?2 IS NULL OR autostart = ?2) ORDER BY name",
                (status, None if autostart is None else int(autostart))).fetchall())

    def update_instance(self, name: str, /, **changes: object) -> InstanceRow:
        """Change some of: mode, template, description, status, autostart, pid, pid_start."""
        if unknown := sorted(set(changes) - _UPDATABLE):
            raise ConfigError(f"Instance fields {unknown} cannot be updated here "
                              f"(updatable: {', '.join(sorted(_UPDATABLE))})")
        with self.transaction() as db:
            new = db.get_instance(name).replace(**changes)
            if problems := instance_problems(new):
                raise ConfigError(problems)
            if changes:
                db._conn.execute(
                    f"UPDATE instances SET {', '.join(f'{c} = ?' for c in changes)} WHERE name = ?",
                    [getattr(new, c) for c in changes] + [name])
        return self.get_instance(name)

    def record_start(self, name: str, pid: int | None, pid_start: int | None) -> None:
        """The start's one write: status running with its init's pid and that pid's start time
        together (one statement, no read before or after: on the start's path)."""
        if pid is not None and (not isinstance(pid, int) or pid <= 0):
            raise ConfigError(f"Instance {name!r}: pid {pid!r} is not a positive integer")
        with self.transaction() as db:
            if db._conn.execute("UPDATE instances SET status = 'running', pid = ?, pid_start = ? WHERE name = ?",
                                (pid, pid_start, name)).rowcount == 0:
                raise NotFound(f"Instance {name!r} not found: `jaula list` shows the instances")

    def rename_instance(self, name: str, new_name: str) -> InstanceRow:
        validate_name(new_name, "Instance")
        with self.transaction() as db:
            db._instance_id(name)
            if db._instance_id(new_name, must=False) is not None:
                raise Exists(f"Cannot rename {name!r}: instance {new_name!r} already exists")
            db._conn.execute("UPDATE instances SET name = ? WHERE name = ?", (new_name, name))
        return self.get_instance(new_name)

    def delete_instance(self, name: str) -> None:
        """Delete the instance; its config rows, profile links and id range go with it."""
        with self.transaction() as db:
            if db._conn.execute("DELETE FROM instances WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"Instance {name!r} not found: nothing deleted")

    def set_config(self, name: str, changes: dict[str, str], unset: tuple[str, ...] | list[str] = ()) -> InstanceRow:
        """Set some config keys and remove others (`unset`), in one transaction."""
        if problems := config_problems(changes, "Instance"):
            raise ConfigError(problems)
        with self.transaction() as db:
            iid = db._instance_id(name)
            db._conn.executemany("DELETE FROM instance_config WHERE instance_id = ? AND key = ?",
                                 [(iid, k) for k in unset])
            db._conn.executemany(
                "INSERT INTO instance_config (instance_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (instance_id, key) DO UPDATE SET value = excluded.value",
                [(iid, k, v) for k, v in changes.items()])
        return self.get_instance(name)

    def replace_config(self, name: str, config: dict[str, str]) -> InstanceRow:
        """Make `config` the instance's whole config (`jaula config edit`)."""
        if problems := config_problems(config, "Instance"):
            raise ConfigError(problems)
        with self.transaction() as db:
            iid = db._instance_id(name)
            db._conn.execute("DELETE FROM instance_config WHERE instance_id = ?", (iid,))
            db._write_config("instance_config", "instance_id", iid, config)
        return self.get_instance(name)

    def set_instance_profiles(self, name: str, profiles: list[str]) -> InstanceRow:
        with self.transaction() as db:
            iid = db._instance_id(name)
            db._conn.execute("DELETE FROM instance_profiles WHERE instance_id = ?", (iid,))
            db._write_profiles(iid, profiles)
        return self.get_instance(name)

    def _instance_id(self, name: str, must: bool = True) -> int | None:
        found = self._conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
        if found is None and must:
            raise NotFound(f"Instance {name!r} not found: `jaula list` shows the instances")
        return None if found is None else found[0]

    def _instances(self, rows: list[sqlite3.Row]) -> list[InstanceRow]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        marks = ", ".join("?" * len(ids)) if len(ids) < 500 else "SELECT id FROM instances"
        args = ids if len(ids) < 500 else []
        configs: dict[int, dict[str, str]] = {i: {} for i in ids}
        for iid, key, value in self._conn.execute(
                f"SELECT instance_id, key, value FROM instance_config WHERE instance_id IN ({marks}) "
                "ORDER BY instance_id, key", args):
            if iid in configs:
                configs[iid][key] = value
        profiles: dict[int, list[str]] = {i: [] for i in ids}
        for iid, pname in self._conn.execute(
                "SELECT ip.instance_id, p.name FROM instance_profiles ip JOIN profiles p ON p.id = ip.profile_id "
                f"WHERE ip.instance_id IN ({marks}) ORDER BY ip.instance_id, ip.position", args):
            if iid in profiles:
                profiles[iid].append(pname)
        return [InstanceRow(
            name=r["name"], **{c: r[c] for c in _INSTANCE_COLUMNS if c != "autostart"},
            autostart=bool(r["autostart"]), config=configs[r["id"]], profiles=profiles[r["id"]],
            command=json.loads(r["command"]),
        ) for r in rows]

    def _write_config(self, table: str, column: str, owner: int, config: dict[str, str]) -> None:
        self._conn.executemany(f"INSERT INTO {table} ({column}, key, value) VALUES (?, ?, ?)",
                               [(owner, k, v) for k, v in config.items()])

    def _write_profiles(self, iid: int, names: list[str]) -> None:
        if len(set(names)) != len(names):
            raise ConfigError(f"Instance profiles {names} name a profile twice")
        for position, pname in enumerate(names):
            found = self._conn.execute("SELECT id FROM profiles WHERE name = ?", (pname,)).fetchone()
            if found is None:
                raise NotFound(f"Profile {pname!r} not found: create it first (`jaula profile create {pname}`)")
            self._conn.execute("INSERT INTO instance_profiles (instance_id, profile_id, position) VALUES (?, ?, ?)",
                               (iid, found[0], position))
