"""The control center's sessions in the database: the `Database` methods behind
jaula.web.sessions (which keeps the policy: ids, hashing, expiry). A mixin, as tables.py.

A row is keyed by the SHA-256 of the session id (hex), never the id itself.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

from jaula.record import Record


class SessionRow(Record, frozen=True):
    id_hash: str
    csrf: str
    login: str      # how it logged in: "token" or "password"
    created: float  # wall-clock seconds
    used: float


class SessionTables:
    _conn: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[Any]: ...  # Database's
    def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...  # Database's

    def add_session(self, row: SessionRow, keep: int) -> None:
        """Store a session; beyond `keep` sessions the least recently used go."""
        with self.transaction():
            self._conn.execute("INSERT INTO web_sessions (id_hash, csrf, login, created, used) VALUES (?, ?, ?, ?, ?)",
                               (row.id_hash, row.csrf, row.login, row.created, row.used))
            self._conn.execute("DELETE FROM web_sessions WHERE id_hash IN (SELECT id_hash FROM web_sessions "
                               "ORDER BY used DESC, created DESC LIMIT -1 OFFSET ?)", (keep,))

    def get_session(self, id_hash: str) -> SessionRow | None:
        with self._read() as conn:
            found = conn.execute("SELECT id_hash, csrf, login, created, used FROM web_sessions WHERE id_hash = ?",
                                 (id_hash,)).fetchone()
        return None if found is None else SessionRow(*found)

    def touch_session(self, id_hash: str, used: float) -> None:
        with self.transaction():
            self._conn.execute("UPDATE web_sessions SET used = max(used, ?) WHERE id_hash = ?", (used, id_hash))

    def drop_session(self, id_hash: str) -> bool:
        with self.transaction():
            return self._conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (id_hash,)).rowcount > 0

    def drop_sessions(self) -> int:
        """End every session (a password change); how many there were."""
        with self.transaction():
            return self._conn.execute("DELETE FROM web_sessions").rowcount

    def purge_sessions(self, used_before: float, created_before: float) -> int:
        """Delete the expired: unused since `used_before`, or made before `created_before`."""
        with self.transaction():
            return self._conn.execute("DELETE FROM web_sessions WHERE used < ? OR created < ?",
                                      (used_before, created_before)).rowcount

    def count_sessions(self) -> int:
        with self._read() as conn:
            return conn.execute("SELECT count(*) FROM web_sessions").fetchone()[0]
