"""Long actions as operations (Incus's background operations): a row in the database, the work
in an executor thread, its status moved pending -> running -> success | failure.

Callers get the operation at once and poll it or wait on it (`wait` from a thread, `await_end`
in the event loop: the API's long poll, woken by the worker itself); the row outlives the
thread, so a client that reconnects still sees how it ended. Actions on one instance run one
at a time (a lock per instance), in the order they were asked. An operation still pending (queued
behind another on its instance) can be cancelled; one already running only when its action
stops at a request (`submit(stoppable=True)`: a template build, whose progress callback calls
`stop_point` and so raises Cancelled; the builder then ends its processes and removes what it made):
the DELETE asks, the operation ends `cancelled` once the action has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jaula.daemon.db import Database
from jaula.daemon.models import FINISHED, OperationRow
from jaula.errors import BadState, JaulaError
from jaula.instances.start_timing import mark

log = logging.getLogger("jaula.operations")

#: running operations whose action stops at a request, each with its request (`stop_point`)
_stoppable: dict[str, threading.Event] = {}


class Cancelled(JaulaError):
    """Raised in a stoppable action at the stop point after its operation's cancel."""


def may_cancel(op: OperationRow) -> bool:
    """Whether DELETE /1.0/operations/{id} cancels `op` now."""
    return op.status == "pending" or (op.status == "running" and op.id in _stoppable)


def stop_point(op_id: str) -> None:
    """In a stoppable action: raise Cancelled when its operation's cancel was asked."""
    asked = _stoppable.get(op_id)
    if asked is not None and asked.is_set():
        raise Cancelled("Cancelled by request")

#: an action: returns the operation's metadata (or None)
Action = Callable[[], "dict[str, Any] | None"]


class _Later:
    """The calls an `in_worker` request's action left for the event loop (`after_answer`): made
    in the loop's next round once the request's coroutine has its result (and, going on without
    waiting, has answered), or at once when the coroutine is no longer there to take them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._flushed = False

    def add(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with _later_lock:
            if not self._flushed:
                self._calls.append((fn, args))
                _later_pending.add(self)
                return
        self.loop.call_soon_threadsafe(fn, *args)

    def flush(self) -> None:  # in the loop
        with _later_lock:
            self._flushed = True
            calls, self._calls = self._calls, []
            _later_pending.discard(self)
        for fn, args in calls:
            self.loop.call_soon(fn, *args)


_later = threading.local()
_later_lock = threading.Lock()
_later_pending: set[_Later] = set()


def run_left_for_loop(loop: asyncio.AbstractEventLoop) -> None:
    """In `loop`: make now the calls actions left for it (`after_answer`) whose answer has not gone
    out yet, in their order: a call made in the loop after this one (a stop's `unwatch`) then
    comes after them (the start's `watch`)."""
    with _later_lock:
        calls = [c for later in _later_pending if later.loop is loop for c in later._calls]
        for later in [x for x in _later_pending if x.loop is loop]:
            later._calls = []
            _later_pending.discard(later)
    for fn, args in calls:
        fn(*args)


def after_answer(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Have `fn(*args)` run in `loop`: in an action run by `in_worker` (a start answered by its
    `PUT ?wait=-1`), once that request's answer went out, so that the loop sends it first (the
    supervisor's watch of an init that already exited: its exit is recorded right after); from
    any other thread at once, as `loop.call_soon_threadsafe`. Calls keep their order."""
    later = getattr(_later, "now", None)
    if later is not None and later.loop is loop:
        later.add(fn, args)
    else:
        loop.call_soon_threadsafe(fn, *args)


class Operations:
    def __init__(self, db: Database, workers: int = 8,
                 on_change: Callable[[OperationRow], None] | None = None) -> None:
        self.db = db
        self.on_change = on_change  # each new status (the event stream's operation events)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jaula-op")
        self._workers = workers
        self._outstanding = 0  # jobs given to the pool and not done: below `workers`, one is free
        self._outstanding_lock = threading.Lock()
        self._changed = threading.Condition()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._on_cancel: dict[str, Callable[[], None]] = {}
        self._enders: dict[str, list[Callable[[OperationRow], None]]] = {}  # await_end's, per op id

    def submit(self, description: str, action: Action, *, instance: str | None = None,
               resources: dict[str, list[str]] | None = None,
               on_cancel: Callable[[], None] | None = None, stoppable: bool = False) -> OperationRow:
        """Record a pending operation and run `action` in a worker; returns the new row.
        `on_cancel` undoes what the request did before the action (a cancelled create's row);
        `stoppable`: the action calls `stop_point(id)` often, so a running one can be cancelled."""
        if instance is not None:
            resources = {**(resources or {}), "instances": [instance]}
        op = self.db.create_operation("task", description, resources=resources)
        self._told(op)
        if on_cancel is not None:
            self._on_cancel[op.id] = on_cancel
        if stoppable:
            _stoppable[op.id] = threading.Event()
        self._to_pool(self._run, op.id, action, instance)
        return op

    def cancel(self, op_id: str) -> OperationRow:
        """Cancel a pending operation, or ask a running stoppable one to stop (it then ends
        `cancelled`; returned as it is, still running); BadState for the others."""
        with self.db.transaction() as db:
            op = db.get_operation(op_id)
            asked = _stoppable.get(op_id)
            if op.status == "running" and asked is not None:
                asked.set()
                return op
            if op.status != "pending":
                raise BadState(f"Operation {op_id} is {op.status}: only a pending operation, or a running "
                               "template build, snapshot, restore, copy, export or import, can be cancelled")
            op = db.update_operation(op_id, status="cancelled", error="Cancelled by request")
            undo = self._on_cancel.pop(op_id, None)
            if undo is not None:
                undo()
        self._told(op)
        self._ended(op)
        with self._changed:
            self._changed.notify_all()
        return op

    def _claim(self, op_id: str) -> bool:
        """pending -> running, unless it was cancelled meanwhile."""
        with self.db.transaction() as db:
            if db.get_operation(op_id).status != "pending":
                return False
            op = db.update_operation(op_id, status="running")
        self._told(op)
        self._on_cancel.pop(op_id, None)
        return True

    def run_here(self, description: str, action: Action, *, instance: str) -> OperationRow:
        """`submit` and `wait` in one, in the calling thread (one of this pool's workers:
        `in_worker`): the operation as it ended. When no other operation holds `instance`, its
        row is written `running` at once (one write instead of the pending row and its claim;
        listeners are still told pending, then running), else it is queued as `submit` queues it."""
        lock = self._lock_for(instance)
        if not lock.acquire(blocking=False):  # another action on it: pending behind it, as submit
            op = self.db.create_operation("task", description, resources={"instances": [instance]})
            self._told(op)
            return self._run(op.id, action, instance) or self.db.get_operation(op.id)
        try:
            op = self.db.create_operation("task", description, resources={"instances": [instance]},
                                          status="running")
            if self.on_change is not None:
                self._told(op.replace(status="pending"))
                self._told(op)
            mark(instance, "op.claimed")
            return self._act(op.id, action, instance) or self.db.get_operation(op.id)
        finally:
            lock.release()
            with self._changed:
                self._changed.notify_all()

    async def in_worker(self, fn: Callable[..., OperationRow], *args: Any) -> OperationRow:
        """`fn(*args)` in one of the pool's workers, awaited from the event loop (`run_here`'s
        caller: the loop hands the request over once and gets the ended operation back once).
        What it asked to run in the loop afterwards (`after_answer`) runs once the caller has
        answered with the operation."""
        loop = asyncio.get_running_loop()
        later = _Later(loop)

        def job() -> OperationRow:
            _later.now = later
            try:
                return fn(*args)
            finally:
                _later.now = None
        try:
            return await asyncio.wrap_future(self._to_pool(job), loop=loop)
        finally:
            later.flush()

    def worker_free(self) -> bool:
        """Whether a worker would take a job now (`in_worker`'s caller asks: with every worker
        busy, a request is better queued as an operation, pending and cancellable meanwhile)."""
        return self._outstanding < self._workers

    def _to_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._outstanding_lock:
            self._outstanding += 1

        def dropped() -> None:
            with self._outstanding_lock:
                self._outstanding -= 1

        def job() -> Any:
            try:
                return fn(*args)
            finally:
                dropped()
        try:
            fut = self._pool.submit(job)
        except BaseException:
            dropped()
            raise
        fut.add_done_callback(lambda f: f.cancelled() and dropped())  # cancelled before it ran
        return fut

    def _run(self, op_id: str, action: Action, instance: str | None) -> OperationRow | None:
        mark(str(instance), "op.thread")
        lock = self._lock_for(instance)
        try:
            with lock:
                if not self._claim(op_id):
                    return None
                mark(str(instance), "op.claimed")
                return self._act(op_id, action, instance)
        finally:
            _stoppable.pop(op_id, None)
            with self._changed:
                self._changed.notify_all()

    def _act(self, op_id: str, action: Action, instance: str | None) -> OperationRow | None:
        """Run a claimed operation's action (its instance's lock held) and record how it ended."""
        try:
            metadata = action()
        except Cancelled as exc:
            ended = self._set(op_id, status="cancelled", error=str(exc))
        except JaulaError as exc:  # the exit code lets a client raise the same error
            ended = self._set(op_id, status="failure", error=str(exc), metadata={"exit_code": exc.exit_code})
        except Exception as exc:  # a bug: keep the daemon up, tell the caller what broke
            log.exception("operation %s failed", op_id)
            ended = self._set(op_id, status="failure",
                              error=f"Internal error ({type(exc).__name__}: {exc}): see jaulad's log")
        else:
            ended = self._set(op_id, status="success", metadata=metadata)
        mark(str(instance), "op.done")
        return ended

    def _set(self, op_id: str, **changes: Any) -> OperationRow | None:
        """Record an ended operation; the row as recorded (None when it could not be)."""
        if changes.get("metadata") is None:
            changes.pop("metadata", None)
        op: OperationRow | None = None
        try:
            op = self.db.update_operation(op_id, **changes)
        except JaulaError:
            log.exception("operation %s: status not recorded", op_id)
        else:
            self._told(op)
            self._ended(op)
        with self._changed:
            self._changed.notify_all()
        return op

    def _told(self, op: OperationRow) -> None:
        if self.on_change is not None:
            try:
                self.on_change(op)
            except Exception:  # a listener's trouble never fails the operation
                log.exception("operation %s: change not told", op.id)

    def instance_lock(self, instance: str) -> threading.Lock:
        """The lock operations on `instance` hold: the supervisor takes it to record an exit, so
        the exit lands after the start that raced it, not before (and overwritten)."""
        return self._lock_for(instance)

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

    async def await_end(self, op_id: str, timeout: float | None = None) -> OperationRow:
        """`wait` in the event loop, holding no thread: the worker that records the end hands the
        row over (no thread to wake, no database read after it); NotFound as `wait`."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[OperationRow] = loop.create_future()

        def settle(op: OperationRow) -> None:  # in the loop
            if not ended.done():
                ended.set_result(op)

        def ender(op: OperationRow) -> None:  # in the thread that recorded the end
            loop.call_soon_threadsafe(settle, op)

        with self._changed:
            self._enders.setdefault(op_id, []).append(ender)
        try:
            deadline = None if timeout is None or timeout < 0 else loop.time() + timeout
            while True:
                # registered first, then read: an end recorded in between is not missed; read
                # again every 0.5 s, as `wait`, so an end recorded by anyone else is seen too
                op = await loop.run_in_executor(None, self.db.get_operation, op_id)
                if op.status in FINISHED:
                    return op
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return op
                try:
                    return await asyncio.wait_for(asyncio.shield(ended), 0.5 if left is None else min(left, 0.5))
                except TimeoutError:
                    continue
        finally:
            with self._changed:
                waiting = self._enders.get(op_id, [])
                if ender in waiting:
                    waiting.remove(ender)
                if not waiting:
                    self._enders.pop(op_id, None)

    def _ended(self, op: OperationRow) -> None:
        """Hand an ended operation to its `await_end` callers."""
        if op.status not in FINISHED:
            return
        with self._changed:
            enders = list(self._enders.get(op.id, ()))
        for ender in enders:
            try:
                ender(op)
            except RuntimeError:  # its loop is closed (jaulad stopping): nobody waits any more
                pass

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
