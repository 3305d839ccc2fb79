"""jaulad's own lxcfs: started at jaulad's start, watched by a pidfd, started again when it dies.

    svc = Lxcfs(driver_root)       # mounts at lxcfs_view.mountpoint(driver_root), under /run/jaula/lxcfs
    svc.start()                    # adopts a live lxcfs a previous jaulad left, or starts one
    ...
    svc.close(stop=not running)    # jaulad's stop: lxcfs stops only when no instance uses it

Why our own: Debian's lxcfs.service is a systemd unit that jaula cannot count on (no systemd
here), and its mount point is global (/var/lib/lxcfs); ours is per jaulad root, so two roots
(tests side by side) do not share one. It is not under the root: the root is swept and checked
for stray mounts, and lxcfs's mount outlives a jaulad.

lxcfs runs in the foreground (-f) in its own session, its pid and start time recorded in
<mount point>.pid. Instances bind its files, so its FUSE connection must outlive a jaulad
restart (live restore): jaulad leaves it running when instances run, and the next jaulad adopts
it by that record (same pid, same start time, its mount answering). When lxcfs dies its mount
answers ENOTCONN: the watcher detaches the dead mount and starts a new lxcfs, which the next
instances get. Instances started before keep binds of the dead connection: their /proc/meminfo,
cpuinfo, stat, uptime, loadavg, diskstats, swaps and /sys/devices/system/cpu read ENOTCONN
("Transport endpoint is not connected") until they are restarted (lxcfs cannot take over a dead
FUSE connection; LXC has the same limit).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time

from jaula.instances import lxcfs_view
from jaula.oci.state import proc_start_time

log = logging.getLogger("jaula.daemon.lxcfs")

# Debian 12's lxcfs 5.0.3: --enable-cfs turns a cpu quota into a cpu count (cpuinfo, stat,
# /sys/devices/system/cpu/online); -l virtualizes loadavg; --enable-pidfd tracks readers by pidfd.
FLAGS = ("-f", "--enable-cfs", "--enable-pidfd", "-l")
READY_S = 10.0
RESTARTS = 5            # at most this many restarts within RESTART_WINDOW_S, then give up
RESTART_WINDOW_S = 60.0


class Lxcfs:
    """One lxcfs serving `lxcfs_view.mountpoint(driver_root)`; any thread may call its methods."""

    def __init__(self, driver_root: str, binary: str | None = None) -> None:
        self.mnt = lxcfs_view.mountpoint(driver_root)
        self.record = self.mnt + ".pid"
        self.own_pidfile = self.mnt + ".lock"   # lxcfs's -p: it locks it
        self.logfile = self.mnt + ".log"
        self.binary = binary or shutil.which("lxcfs") or "/usr/bin/lxcfs"
        self.pid: int | None = None
        self._child: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._restarts: list[float] = []
        self.restarted = 0

    # --- start, adopt ------------------------------------------------------------------------------
    def start(self, watch: bool = True) -> bool:
        """Adopt the lxcfs a previous jaulad left, or start one; then watch it (a thread) when
        `watch`. False (logged) when lxcfs cannot run: instances then start without it."""
        with self._lock:
            ok = self._adopt() or self._spawn()
        if ok and watch and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="lxcfs-watch", daemon=True)
            self._thread.start()
        return ok

    def _adopt(self) -> bool:
        pid, start = self._read_record()
        if not pid:
            return False
        if proc_start_time(pid) != start or lxcfs_view.usable(self.mnt) is None:
            return False
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        self.pid = pid
        log.info("lxcfs %d (left by a previous jaulad) adopted at %s", pid, self.mnt)
        return True

    def _read_record(self) -> tuple[int, int]:
        """(pid, start time) of the recorded lxcfs; (0, 0) when none."""
        try:
            with open(self.record) as f:
                pid, start = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            return 0, 0
        return pid, start

    def _spawn(self) -> bool:
        if not os.access(self.binary, os.X_OK):
            log.warning("no lxcfs (%s): instances start with the kernel's /proc files (install Debian's "
                        "lxcfs package)", self.binary)
            return False
        self._detach_stale()
        os.makedirs(lxcfs_view.RUN_DIR, 0o755, exist_ok=True)  # instances' uids traverse it to the binds
        os.makedirs(self.mnt, 0o755, exist_ok=True)
        out = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # its own session: a ^C at jaulad's terminal or jaulad's death leaves it to the instances
            child = subprocess.Popen([self.binary, *FLAGS, "-p", self.own_pidfile, self.mnt],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     close_fds=True, start_new_session=True)
        except OSError as exc:
            log.warning("lxcfs could not start (%s): instances start without it", exc)
            return False
        finally:
            os.close(out)
        deadline = time.monotonic() + READY_S
        while lxcfs_view.usable(self.mnt) is None:
            if child.poll() is not None or time.monotonic() > deadline:
                if child.poll() is None:
                    child.kill()
                child.wait()
                self._detach_stale()
                log.warning("lxcfs exited (status %s) before its mount at %s answered: see %s; instances start "
                            "without it", child.returncode, self.mnt, self.logfile)
                return False
            time.sleep(0.02)
        self._child, self.pid = child, child.pid
        self._pidfd = os.pidfd_open(child.pid)
        tmp = self.record + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{child.pid} {proc_start_time(child.pid)}\n")
        os.rename(tmp, self.record)
        log.info("lxcfs %d serves %s", child.pid, self.mnt)
        return True

    def _detach_stale(self) -> None:
        """A dead lxcfs's mount (ENOTCONN) detached, so a new one can mount there."""
        from jaula.linux.mount import MNT_DETACH, umount2

        while lxcfs_view.mounted(self.mnt):
            try:
                umount2(self.mnt, MNT_DETACH)
            except Exception as exc:  # noqa: BLE001 (logged: the next start says why it failed)
                log.warning("umount of lxcfs's mount %s: %s", self.mnt, exc)
                return

    # --- watch ----------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            with self._lock:
                fd = self._pidfd
            fds = [self._stop_r] + ([fd] if fd is not None else [])
            ready = _readable(fds, None)
            if self._stop_r in ready:
                return
            with self._lock:
                if self._pidfd != fd:
                    continue
                dead = self.pid
                self._reap()
                log.warning("lxcfs %s died: starting another (instances started before it read ENOTCONN "
                            "from its files until restarted)", dead)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(self._restarts) > RESTARTS:
                    log.error("lxcfs died %d times within %.0f s: not started again; instances start without it",
                              len(self._restarts), RESTART_WINDOW_S)
                    self._detach_stale()
                    return
                if self._spawn():
                    self.restarted += 1
                else:
                    return

    def _reap(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self._child is not None:
            self._child.wait()
            self._child = None
        self.pid = None

    # --- stop -----------------------------------------------------------------------------------------
    def end_left(self) -> None:
        """The lxcfs a killed jaulad left for this root (by its pid record), ended in any state,
        and its mount and files removed: for a cleanup when no instance uses it any more."""
        pid, start = self._read_record()
        if pid and proc_start_time(pid) == start:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    _readable([fd], 10.0)
                except ProcessLookupError:
                    pass
                finally:
                    os.close(fd)
        self.close(stop=True)

    def close(self, stop: bool = True, timeout: float = 10.0) -> None:
        """Stop watching; with `stop`, end lxcfs and remove its mount and record (nothing may use
        it any more), else leave it running for the next jaulad to adopt. Twice is once."""
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if stop and self.pid is not None:
                # lxcfs keeps no state, and after SIGTERM it takes ~5 s to exit (its loadavg
                # thread's sleep): its mount goes first (nothing may use it now), then SIGKILL.
                self._detach_stale()
                try:
                    if self._pidfd is not None:
                        signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                        _readable([self._pidfd], timeout)
                except ProcessLookupError:
                    pass
                self._reap()
            if stop:
                self._detach_stale()
                for path in (self.record, self.own_pidfile, self.logfile):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                try:
                    os.rmdir(self.mnt)
                except OSError:
                    pass
            elif self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        self._stop_r = self._stop_w = -1


def _readable(fds: list[int], timeout: float | None) -> set[int]:
    """The fds of `fds` that are readable (or hung up) within `timeout` seconds (None: no limit).
    poll, not select: jaulad holds an fd per instance, far above select's 1024."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}
