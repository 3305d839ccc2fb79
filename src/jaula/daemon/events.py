"""jaulad's event bus: what happens is pushed to every listener as it happens (`GET /1.0/events`,
`jaula events`), in Incus's three types:

  lifecycle  {"action": "instance-started", "source": "/1.0/instances/web1", "context": {...}, "id": N}
             also stored in the database (`GET /1.0/events/history?after=N` replays them)
  operation  the operation object (as `GET /1.0/operations/ID`) at each status it takes
  logging    jaulad's own log records: {"level", "message", "context": {"logger"}}

Publishers are operations' worker threads and the supervisor in the event loop, so the bus is
thread-safe and never blocks them: each listener has a bounded queue, and a listener that falls
`queue_size` events behind is dropped (its stream ends with a logging event that says so), rather
than jaulad waiting for it or keeping an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Iterable
from typing import Any

from jaula.daemon.models import now
from jaula.errors import ConfigError

TYPES = ("lifecycle", "operation", "logging")
QUEUE_SIZE = 1024
DROPPED = ("This listener fell {n} events behind and was dropped: connect again, and read "
           "/1.0/events/history?after=ID for the lifecycle events missed meanwhile")


def parse_types(text: str | Iterable[str] | None) -> frozenset[str]:
    """"lifecycle,operation" -> the set; empty or None: every type. Unknown types are refused."""
    if text is None:
        return frozenset(TYPES)
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = {t.strip() for t in items if t.strip()}
    if bad := sorted(wanted - set(TYPES)):
        raise ConfigError(f"Unknown event type {', '.join(map(repr, bad))}: use {', '.join(TYPES)} "
                          "(comma-separated)")
    return frozenset(wanted or TYPES)


class Listener:
    """One subscriber's bounded queue. `offer` is called by publishers (any thread) and never
    blocks; the consumer reads with `get` (a thread) or `next` (an event loop)."""

    def __init__(self, types: frozenset[str], maxsize: int = QUEUE_SIZE,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.types = types
        self.maxsize = maxsize
        self.dropped = False
        self.closed = False
        self._items: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._loop = loop
        self._wake = asyncio.Event() if loop is not None else None

    def offer(self, event: dict[str, Any]) -> bool:
        """Queue `event`; False when this listener is closed, or is now dropped for being full."""
        with self._cond:
            if self.closed:
                return False
            if len(self._items) >= self.maxsize:
                self.dropped = self.closed = True
            else:
                self._items.append(event)
            self._cond.notify_all()
        self._poke()
        return not self.dropped

    def close(self) -> None:
        """End the stream: what is queued is still read, then the end."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._poke()

    def _poke(self) -> None:
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: nobody reads any more
                pass

    def _take(self) -> tuple[bool, dict[str, Any] | None]:
        """(True, event) for a queued event, (True, None) at the end, (False, None) for none yet."""
        with self._cond:
            if self._items:
                return True, self._items.popleft()
            if self.closed:
                return True, self._end_notice()
            return False, None

    def _end_notice(self) -> dict[str, Any] | None:
        if not self.dropped:
            return None
        self.dropped = False  # said once, then the end
        return {"type": "logging", "timestamp": now(),
                "metadata": {"level": "warning", "message": DROPPED.format(n=self.maxsize),
                             "context": {"logger": "jaula.events"}}}

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event (blocking up to `timeout`); None at the end or after the timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self.closed, timeout)
        return self._take()[1]

    async def next(self, timeout: float | None = None) -> tuple[bool, dict[str, Any] | None]:
        """In the listener's loop: (True, event), (True, None) at the end, (False, None) when
        `timeout` passed with nothing."""
        assert self._wake is not None, "an async listener needs its loop"
        while True:
            self._wake.clear()
            done, event = self._take()
            if done:
                return True, event
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                done, event = self._take()
                return done, event


class EventBus:
    """Fans events out to listeners; lifecycle events are stored in `db` first (their id orders
    them, and a reconnecting client replays them from the history)."""

    def __init__(self, db: Any = None, queue_size: int = QUEUE_SIZE) -> None:
        self.db = db
        self.queue_size = queue_size
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()  # the listeners; held briefly, never across a database write
        self._store = threading.Lock()  # lifecycle events stored and pushed in one order
        self._closed = False
        self.log = logging.getLogger("jaula.events")

    def subscribe(self, types: Iterable[str] | str | None = None,
                  loop: asyncio.AbstractEventLoop | None = None) -> Listener:
        listener = Listener(parse_types(types), self.queue_size, loop)
        with self._lock:
            if self._closed:
                listener.close()
            else:
                self._listeners.append(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        listener.close()
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)

    def wants(self, type_: str) -> bool:
        """Whether a listener takes events of `type_` now: a caller skips building one nobody
        reads (an operation's each status change, on the start's path). A listener subscribing
        just after misses it, as one subscribing an instant later would."""
        with self._lock:
            return any(type_ in ls.types for ls in self._listeners)

    def publish(self, type_: str, metadata: dict[str, Any], timestamp: str | None = None) -> dict[str, Any]:
        event = {"type": type_, "timestamp": timestamp or now(), "metadata": metadata}
        with self._lock:
            dropped = self._fan_out(event)
        self._said_dropped(dropped)
        return event

    def lifecycle(self, action: str, context: dict[str, Any], source: str | None = None) -> dict[str, Any]:
        """Store and push a lifecycle event: `action` like "instance-started", `context` its
        details (at least the name)."""
        if source is None and "name" in context:
            kind = action.partition("-")[0]
            source = f"/1.0/{kind}s/{context['name']}"
        # Two locks: a log record written while its thread holds the database (logging events
        # publish) must not wait behind a lifecycle event waiting for that database.
        with self._store:
            row = self.db.add_event(action, context) if self.db is not None else None
            event = {"type": "lifecycle", "timestamp": row.time if row is not None else now(),
                     "metadata": {"action": action, "source": source or "", "context": context,
                                  "id": row.id if row is not None else None}}
            with self._lock:
                dropped = self._fan_out(event)
        self._said_dropped(dropped)
        return event

    def _fan_out(self, event: dict[str, Any]) -> int:
        """Offer `event` to its listeners (under the lock); the number dropped for being full."""
        dropped = [ls for ls in self._listeners if event["type"] in ls.types and not ls.offer(event)]
        for ls in dropped:
            self._listeners.remove(ls)
        return len(dropped)

    def _said_dropped(self, n: int) -> None:
        if n:  # logged outside the lock: the log handler publishes through it
            self.log.warning("%d event listener(s) dropped: %d events behind", n, self.queue_size)

    def close(self) -> None:
        """End every stream (jaulad stops): listeners read what is queued, then the end."""
        with self._lock:
            self._closed = True
            listeners, self._listeners = self._listeners, []
        for ls in listeners:
            ls.close()


class LogHandler(logging.Handler):
    """jaulad's log records as logging events."""

    def __init__(self, bus: EventBus, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.bus = bus
        self._inside = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._inside, "yes", False):
            return
        self._inside.yes = True
        try:
            self.bus.publish("logging", {"level": record.levelname.lower(), "message": record.getMessage(),
                                         "context": {"logger": record.name}})
        except Exception:  # noqa: BLE001 - a log line must never break its caller
            self.handleError(record)
        finally:
            self._inside.yes = False
