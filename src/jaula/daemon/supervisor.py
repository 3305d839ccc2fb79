"""The supervisor: jaulad watches every running instance's init through a pidfd in its event
loop (one supervisor per host, no helper process per instance: a pidfd costs a file descriptor).

    sup = Supervisor(on_exit, exit_status=lambda pid: spawner.call("exit_status", pid=pid))
    st = spawner.call("start", inst)            # the reply carries a pidfd of the init
    sup.watch(inst.name, st["pidfd"], st["pid"])
    sup.adopt(row.name, row.pid, row.pid_start)  # live restore, at daemon start

When a watched pidfd turns readable its process has exited, and `on_exit(name, status)` is
called in the loop (a coroutine function is awaited). What can be known of the status:
  - a pidfd says only *that* the process exited; waitpid/waitid need its parent, and jaulad is
    not the parent of an instance's init (the runtime's intermediate process is, and it exits
    during create, so the init goes to the nearest subreaper);
  - the runtime's state holds nothing more (the init is gone, and nothing recorded how);
  - the spawner is a child subreaper, so it reaps the inits it started and keeps their exit
    codes: `exit_status(pid)` (run in the loop's executor, since a spawner call blocks) asks it;
  - an init adopted after a daemon restart was reaped by the host's init (its spawner went with
    the old daemon): its status is UNKNOWN, and so is one whose pid was gone or reused at adopt.
`status` is the exit code (128+N for a signal N, as a shell says) or UNKNOWN ("unknown").
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
from collections.abc import Callable
from typing import Any

from jaula.oci.state import proc_start_time

UNKNOWN = "unknown"


class _Watch:
    __slots__ = ("fd", "name", "pid")

    def __init__(self, name: str, fd: int, pid: int) -> None:
        self.name, self.fd, self.pid = name, fd, pid


class Supervisor:
    """Watches instances' inits by pidfd; calls `on_exit(name, status)` once per exit.

    Every method runs in the event loop's thread (it owns the readers)."""

    def __init__(self, on_exit: Callable[[str, Any], Any], *,
                 exit_status: Callable[[int], int | None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.on_exit = on_exit
        self.exit_status = exit_status
        self.loop = loop or asyncio.get_running_loop()
        self._watches: dict[str, _Watch] = {}
        self._tasks: set[asyncio.Task] = set()

    def watching(self) -> dict[str, int]:
        """{name: pid} of what is watched now."""
        return {n: w.pid for n, w in self._watches.items()}

    def watch(self, name: str, pidfd: int, pid: int = 0) -> None:
        """Watch an init through `pidfd` (the supervisor owns and closes it). A name already
        watched is replaced (its old pidfd closed, no exit reported for it)."""
        self.unwatch(name)
        w = _Watch(name, pidfd, pid)
        self._watches[name] = w
        self.loop.add_reader(pidfd, self._exited, w)

    def unwatch(self, name: str) -> bool:
        """Stop watching `name` (no exit is reported); True if it was watched."""
        w = self._watches.pop(name, None)
        if w is None:
            return False
        self.loop.remove_reader(w.fd)
        os.close(w.fd)
        return True

    def adopt(self, name: str, pid: int, pid_start: int | None) -> bool:
        """Live restore: watch the init recorded as (pid, pid_start) if that process is still
        there (same pid *and* start time: a pid may have been reused); True when watched. If it
        is gone, `on_exit(name, UNKNOWN)` is called soon (in the loop) and False returned."""
        if pid and pid > 0 and pid_start is not None and proc_start_time(pid) == pid_start:
            from jaula.linux.proc import pidfd_open

            try:
                fd = pidfd_open(pid)
            except OSError as e:
                if e.errno != errno.ESRCH:
                    raise
            else:
                # Checked again with the pidfd held: if the pid was reused between the look and
                # the open, the start time differs; if it exited meanwhile, the pidfd reports it.
                now = proc_start_time(pid)
                if now is None or now == pid_start:
                    self.watch(name, fd, pid)
                    return True
                os.close(fd)
        self._report(name, None)
        return False

    def close(self) -> None:
        """Stop watching everything (the instances keep running) and cancel pending reports."""
        for name in list(self._watches):
            self.unwatch(name)
        for t in list(self._tasks):
            t.cancel()

    # --- exits -------------------------------------------------------------------------------------
    def _exited(self, w: _Watch) -> None:
        if self._watches.get(w.name) is not w:
            return
        del self._watches[w.name]
        self.loop.remove_reader(w.fd)
        os.close(w.fd)
        self._report(w.name, w.pid)

    def _report(self, name: str, pid: int | None) -> None:
        task = self.loop.create_task(self._tell(name, pid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell(self, name: str, pid: int | None) -> None:
        status: Any = UNKNOWN
        if pid and self.exit_status is not None:
            try:
                code = await self.loop.run_in_executor(None, self.exit_status, pid)
            except Exception:  # noqa: BLE001 - a status we cannot get is unknown, the exit still counts
                code = None
            if isinstance(code, int) and not isinstance(code, bool):
                status = code
        r = self.on_exit(name, status)
        if inspect.isawaitable(r):
            await r
