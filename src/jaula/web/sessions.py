"""The control center's sessions, kept in jaulad's database (table web_sessions), so a restart
or a crash of jaulad logs nobody out: a random id (the HttpOnly cookie; only its SHA-256 is
stored), a CSRF token the page sends back in a header, an idle expiry and an absolute one, both
in wall-clock time so they hold across restarts. Logout ends one session; `jaulad
--set-password` ends them all. Expired rows are deleted as they are found and, at most once a
minute, all at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IDLE_S = 12 * 3600        # unused this long: gone
MAX_AGE_S = 7 * 24 * 3600  # however used: gone after this
MAX_SESSIONS = 1000        # the least recently used go beyond this
TOUCH_S = 60.0             # `used` is written at most this often per session (not at every request)
PURGE_S = 60.0             # expired rows are swept at most this often


@dataclass
class Session:
    id: str
    csrf: str
    user: str          # how it logged in: "token" or "password"
    created: float
    used: float


def id_hash(sid: str) -> str:
    """What the database keeps of a session id. The id holds 256 random bits: a plain SHA-256 is
    enough (no salt, no slow hash: nothing to guess)."""
    return hashlib.sha256(sid.encode()).hexdigest()


class Sessions:
    """The sessions of a `jaula.daemon.db.Database` (its web_sessions table)."""

    def __init__(self, db: Any, idle_s: float = IDLE_S, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.time, keep: int = MAX_SESSIONS) -> None:
        self.db, self.idle_s, self.max_age_s, self.clock, self.keep = db, idle_s, max_age_s, clock, keep
        self._purged = float("-inf")
        self._lock = threading.Lock()

    def create(self, user: str) -> Session:
        from jaula.daemon.session_tables import SessionRow

        now = self.clock()
        self._purge(now, force=True)
        s = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), user=user, created=now, used=now)
        self.db.add_session(SessionRow(id_hash=id_hash(s.id), csrf=s.csrf, login=user, created=now, used=now),
                            keep=self.keep)
        return s

    def get(self, sid: str | None, touch: bool = True) -> Session | None:
        """The live session of this cookie (its idle time starts again), or None."""
        if not sid or len(sid) > 256:
            return None
        now = self.clock()
        self._purge(now)
        h = id_hash(sid)
        row = self.db.get_session(h)
        if row is None:
            return None
        if self._expired(row.created, row.used, now):
            self.db.drop_session(h)
            return None
        used = row.used
        if touch and now - used >= TOUCH_S:
            self.db.touch_session(h, now)
            used = now
        return Session(id=sid, csrf=row.csrf, user=row.login, created=row.created, used=used)

    def drop(self, sid: str) -> None:
        self.db.drop_session(id_hash(sid))

    def drop_all(self) -> int:
        return int(self.db.drop_sessions())

    def __len__(self) -> int:
        self._purge(self.clock(), force=True)
        return int(self.db.count_sessions())

    def _expired(self, created: float, used: float, now: float) -> bool:
        return now - used > self.idle_s or now - created > self.max_age_s

    def _purge(self, now: float, force: bool = False) -> None:
        with self._lock:
            if not force and now - self._purged < PURGE_S:
                return
            self._purged = now
        self.db.purge_sessions(used_before=now - self.idle_s, created_before=now - self.max_age_s)


def end_all(root: Any) -> int:
    """End every session of the jaulad whose root is `root` (after a password change); how many."""
    from pathlib import Path

    path = Path(root) / "jaula.db"
    if not path.exists():
        return 0
    from jaula.daemon.db import Database

    with Database(path) as db:
        return int(db.drop_sessions())


class LoginThrottle:
    """Failed logins, host-wide: past `limit` in `window_s` seconds, logins are refused (429)
    without checking the secret, until the oldest failure leaves the window."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: list[float] = []
        self._lock = threading.Lock()

    def wait_s(self) -> float:
        """0 when a login may be tried now, else the seconds until one may."""
        now = self.clock()
        with self._lock:
            self._failures = [f for f in self._failures if now - f < self.window_s]
            if len(self._failures) < self.limit:
                return 0.0
            return self.window_s - (now - self._failures[0])

    def failed(self) -> None:
        with self._lock:
            self._failures.append(self.clock())


def csrf_matches(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())
