"""The control center's sessions, in jaulad's memory (a restart logs everyone out): a random id
(the HttpOnly cookie), a CSRF token the page sends back in a header, an idle expiry and an
absolute one."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE_S = 12 * 3600        # unused this long: gone
MAX_AGE_S = 7 * 24 * 3600  # however used: gone after this
MAX_SESSIONS = 1000        # the oldest goes first beyond this


@dataclass
class Session:
    id: str
    csrf: str
    user: str          # how it logged in: "token" or "password"
    created: float
    used: float


class Sessions:
    def __init__(self, idle_s: float = IDLE_S, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.max_age_s, self.clock = idle_s, max_age_s, clock
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str) -> Session:
        now = self.clock()
        s = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), user=user, created=now, used=now)
        with self._lock:
            self._expire(now)
            while len(self._by_id) >= MAX_SESSIONS:
                self._by_id.pop(min(self._by_id.values(), key=lambda x: x.used).id)
            self._by_id[s.id] = s
        return s

    def get(self, sid: str | None, touch: bool = True) -> Session | None:
        """The live session of this cookie (its idle time starts again), or None."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            self._expire(now)
            s = self._by_id.get(sid)
            if s is not None and touch:
                s.used = now
            return s

    def drop(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._by_id.items()
                    if now - s.used > self.idle_s or now - s.created > self.max_age_s]:
            del self._by_id[sid]


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
