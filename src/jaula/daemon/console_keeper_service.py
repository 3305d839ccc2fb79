"""jaulad's side of the console keeper (console_keeper.py): reconnect to the living one or start
it, watch it, start another when it dies, fetch a console's master for an attach.

    keeper = KeeperService(root)   # at jaulad's start, before any instance starts
    keeper.start()                 # adopts a keeper a killed jaulad left, or starts one
    fd = keeper.master("web1")     # a dup of web1's console master (BadState when none is held)
    keeper.close()                 # jaulad's stop: the keeper stays while it holds consoles

jaulad keeps one connection open to the keeper (OWNER): the keeper knows jaulad is there, and
jaulad knows the keeper died when that connection hangs up. The keeper runs in its own session
(a ^C at jaulad's terminal or jaulad's death leave it to the instances) and is started with
every fd closed, in "/".

When the keeper dies, the consoles it held are gone: each instance's pty is hung up (the shell on
its console gets SIGHUP, what is printed on it afterwards is lost, nothing blocks), attaching
says no console is held, and `jaula restart` gives it a new one. The seccomp listeners it held
(security.syscalls.intercept.sysinfo: jaula.daemon.sysinfo_notify) are gone too: sysinfo(2) in
those instances fails with ENOSYS, never hangs, until they restart. jaulad starts a new keeper
at once for the instances started afterwards.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jaula.instances import console_pty

log = logging.getLogger("jaula.daemon.console_keeper")

READY_S = 20.0          # a new keeper's socket answers within this (a loaded host starts Python slowly)
RESTARTS = 5            # at most this many restarts within RESTART_WINDOW_S, then give up
RESTART_WINDOW_S = 60.0


class KeeperService:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = str(self.root / console_pty.SOCKET_NAME)
        self.logfile = self.root / "console-keeper.log"
        self.pid: int | None = None
        self._conn: Any = None
        self._child: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._restarts: list[float] = []
        self.restarted = 0

    # --- start, adopt ------------------------------------------------------------------------------
    def start(self, watch: bool = True) -> bool:
        """Reconnect to the keeper a previous jaulad left, or start one; False (logged) when none
        runs: system instances then start with a read-only console."""
        with self._lock:
            ok = self._own() or self._spawn()
        if ok and watch and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="console-keeper-watch", daemon=True)
            self._thread.start()
        return ok

    def _own(self) -> bool:
        """Connect as OWNER to the keeper listening on the socket; False when none answers."""
        from jaula.oci import sync

        try:
            conn = console_pty.connect(self.path)
        except OSError:
            return False
        try:
            sync.send(conn, "OWNER")
            verb, payload, _ = sync.recv(conn)
        except OSError:
            conn.close()
            return False
        if verb != "KEEPER" or not payload.isdigit():
            conn.close()
            return False
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bytes(16))  # the watch waits for good
        self._conn, self.pid = conn, int(payload)
        return True

    def _spawn(self) -> bool:
        out = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            child = subprocess.Popen([sys.executable, "-m", "jaula.daemon.console_keeper", "--root", str(self.root)],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
                                     start_new_session=True, cwd="/")
        except OSError as exc:
            log.warning("the console keeper could not start (%s): system instances get a read-only console", exc)
            return False
        finally:
            os.close(out)
        deadline = time.monotonic() + READY_S
        while not self._own():
            if child.poll() is not None or time.monotonic() > deadline:
                if child.poll() is None:
                    child.kill()
                child.wait()
                log.warning("the console keeper exited (status %s) before its socket %s answered: see %s; "
                            "system instances get a read-only console", child.returncode, self.path, self.logfile)
                return False
            time.sleep(0.01)
        self._child = child
        if self.pid != child.pid:
            log.warning("the console keeper answering on %s is %s, not the one started (%d)", self.path, self.pid,
                        child.pid)
        log.info("console keeper %d holds the consoles (%s)", child.pid, self.path)
        return True

    # --- attach ----------------------------------------------------------------------------------------
    def master(self, name: str) -> int:
        """A dup of instance `name`'s console master (the caller closes it)."""
        return console_pty.fetch_master(self.path, name)

    def held(self) -> list[str]:
        return console_pty.held(self.path)

    # --- watch ----------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            with self._lock:
                conn = self._conn
            fds = [self._stop_r] + ([conn.fileno()] if conn is not None else [])
            ready = _readable(fds)
            if self._stop_r in ready:
                return
            with self._lock:
                if self._conn is not conn:
                    continue
                dead = self.pid
                self._forget()
                log.warning("console keeper %s died: the consoles it held are hung up and sysinfo(2) in the "
                            "instances it answered fails with ENOSYS (restart those instances for both again); "
                            "starting another", dead)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(self._restarts) > RESTARTS:
                    log.error("the console keeper died %d times within %.0f s: not started again; system "
                              "instances get a read-only console", len(self._restarts), RESTART_WINDOW_S)
                    return
                if self._spawn():
                    self.restarted += 1
                else:
                    return

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._child is not None:
            try:
                self._child.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self._child = None
        self.pid = None

    def close(self) -> None:
        """jaulad stops: the keeper stays while it holds consoles (it exits by itself otherwise)."""
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._child is not None and self._child.poll() is None:
                try:
                    self._child.wait(2)  # it exits at once when it holds nothing: reap it
                except subprocess.TimeoutExpired:
                    pass
        os.close(self._stop_r)
        os.close(self._stop_w)


def _readable(fds: list[int], timeout: float | None = None) -> list[int]:
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    while True:
        try:
            return [fd for fd, _ in p.poll(None if timeout is None else int(timeout * 1000))]
        except InterruptedError:
            continue
