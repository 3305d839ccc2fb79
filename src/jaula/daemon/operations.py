"""Long actions as operations (Incus's background operations): a row in the database, the work
in an executor thread, its status moved pending -> running -> success | failure.

Callers get the operation at once and poll it or wait on it (`wait`); the row outlives the
thread, so a client that reconnects still sees how it ended. Actions on one instance run one
at a time (a lock per instance), in the order they were asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jaula.daemon.db import Database
from jaula.daemon.models import FINISHED, OperationRow
from jaula.errors import JaulaError

log = logging.getLogger("jaula.operations")

#: an action: returns the operation's metadata (or None)
Action = Callable[[], "dict[str, Any] | None"]


class Operations:
    def __init__(self, db: Database, workers: int = 8) -> None:
        self.db = db
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jaula-op")
        self._changed = threading.Condition()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def submit(self, description: str, action: Action, *, instance: str | None = None,
               resources: dict[str, list[str]] | None = None) -> OperationRow:
        """Record a pending operation and run `action` in a worker; returns the new row."""
        if instance is not None:
            resources = {**(resources or {}), "instances": [instance]}
        op = self.db.create_operation("task", description, resources=resources)
        self._pool.submit(self._run, op.id, action, instance)
        return op

    def _run(self, op_id: str, action: Action, instance: str | None) -> None:
        lock = self._lock_for(instance)
        try:
            with lock:
                self._set(op_id, status="running")
                try:
                    metadata = action()
                except JaulaError as exc:  # the exit code lets a client raise the same error
                    self._set(op_id, status="failure", error=str(exc), metadata={"exit_code": exc.exit_code})
                except Exception as exc:  # a bug: keep the daemon up, tell the caller what broke
                    log.exception("operation %s failed", op_id)
                    self._set(op_id, status="failure",
                              error=f"Internal error ({type(exc).__name__}: {exc}): see jaulad's log")
                else:
                    self._set(op_id, status="success", metadata=metadata)
        finally:
            with self._changed:
                self._changed.notify_all()

    def _set(self, op_id: str, **changes: Any) -> None:
        if changes.get("metadata") is None:
            changes.pop("metadata", None)
        try:
            self.db.update_operation(op_id, **changes)
        except JaulaError:
            log.exception("operation %s: status not recorded", op_id)
        with self._changed:
            self._changed.notify_all()

    def _lock_for(self, instance: str | None) -> threading.Lock:
        if instance is None:
            return threading.Lock()
        with self._locks_guard:
            return self._locks.setdefault(instance, threading.Lock())

    def wait(self, op_id: str, timeout: float | None = None) -> OperationRow:
        """The operation once it has ended, or as it is after `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._changed:
            while True:
                op = self.db.get_operation(op_id)
                if op.status in FINISHED:
                    return op
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return op
                # a bounded wait: an operation finished by another process still gets seen
                self._changed.wait(0.5 if left is None else min(left, 0.5))

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
