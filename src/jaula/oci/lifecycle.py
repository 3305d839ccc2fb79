"""start, kill, delete, pause, resume, update, ps: the verbs that act on an existing container."""

from __future__ import annotations

import errno
import os
import time

from jaula.errors import BadState, JaulaError, NotFound
from jaula.oci import state
from jaula.oci.state import CREATED, PAUSED, RUNNING, STOPPED, Container


def start(c: Container, log) -> None:
    st = c.status()
    if st != CREATED:
        raise BadState(f"cannot start container {c.id!r}: it is {st}, and only a created container can start")
    poststart = c.data.get("hooks", {}).get("poststart")
    watch = -1
    try:
        if poststart:
            # Opened before our writer, so it sees the init's close-on-exec end go away.
            watch = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        fd = os.open(c.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if watch >= 0:
            os.close(watch)
        if e.errno in (errno.ENXIO, errno.ENOENT):
            raise BadState(f"cannot start container {c.id!r}: its init is gone") from None
        raise
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    os.unlink(c.fifo)
    if poststart:
        _wait_exec(watch)
        from jaula.oci import hooks

        try:
            hooks.run("poststart", _hooks(poststart), c.oci_state())
        except JaulaError as e:
            log.warning(str(e))  # the spec: a failing poststart hook is logged, the container runs on


def _wait_exec(watch: int) -> None:
    """Wait until the init has exec'd the container's program (or died): poststart hooks run after it.

    The init's end of the fifo is close-on-exec: when it goes, our reader sees POLLHUP. Until the
    init has read the start byte the fifo also polls readable, so that case is polled gently.
    """
    import select

    poller = select.poll()
    poller.register(watch, select.POLLHUP)
    try:
        while True:
            events = poller.poll(1000)
            if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in events):
                return
            if events:
                time.sleep(0.0005)
    finally:
        os.close(watch)


def _hooks(raw: list[dict]) -> list:
    from jaula.oci.config import Hook

    return [Hook(path=h["path"], args=h.get("args") or [], env=h.get("env") or [], timeout=h.get("timeout")) for h in raw]


def _cgroup(c: Container):
    from jaula.cgroups.base import reopen

    return reopen(c.data.get("cgroupPaths") or {})


def kill(c: Container, sig: int, all_: bool = False) -> None:
    st = c.status()
    if st == STOPPED:
        raise BadState(f"container {c.id!r} is not running")
    if all_:
        cg = _cgroup(c)
        cg.kill(sig)
        if st == PAUSED and sig != 9:
            return
        return
    signal_init(c, sig)


def signal_init(c: Container, sig: int) -> None:
    """Signal the init through a pidfd, checked to be our process, so a reused pid is never hit."""
    from jaula.linux import proc

    try:
        pfd = proc.pidfd_open(c.pid)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise BadState(f"container {c.id!r} is not running") from None
        raise
    try:
        if not c.alive():
            raise BadState(f"container {c.id!r} is not running")
        proc.pidfd_send_signal(pfd, sig)
    finally:
        os.close(pfd)


def delete(c: Container, force: bool, log) -> None:
    st = c.status()
    if st in (RUNNING, PAUSED) and not force:
        raise BadState(f"cannot delete container {c.id!r}: it is {st}; stop it first or use --force")
    if st != STOPPED:
        destroy_processes(c)
    cleanup(c, log)


def destroy_processes(c: Container, timeout: float = 10.0) -> None:
    """SIGKILL every process of the container and wait until they are gone."""
    cg = _cgroup(c) if c.data.get("cgroupPaths") else None
    if cg is not None and cg.exists():
        if cg.frozen():
            cg.kill(9)
            cg.thaw()
        cg.kill(9)
    elif c.alive():
        try:
            signal_init(c, 9)
        except BadState:
            pass
    deadline = time.monotonic() + timeout
    while c.alive() and time.monotonic() < deadline:
        _reap(c.pid)
        time.sleep(0.001)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def cleanup(c: Container, log) -> None:
    """After the processes are gone: poststop hooks, the cgroup and the state directory."""
    poststop = c.data.get("hooks", {}).get("poststop")
    if poststop:
        from jaula.oci import hooks

        try:
            hooks.run("poststop", _hooks(poststop), c.oci_state() | {"status": STOPPED})
        except JaulaError as e:
            log.warning(str(e))
    paths = c.data.get("cgroupPaths")
    if paths and not _rmdir_cgroup(paths, prune_parent=c.data.get("cgroupsPath") is None):
        _cgroup(c).remove()
    try:
        for name in os.listdir(c.dir):
            os.unlink(os.path.join(c.dir, name))
        os.rmdir(c.dir)
    except FileNotFoundError:
        pass


def _rmdir_cgroup(paths: dict[str, str], prune_parent: bool) -> bool:
    """The common case without loading the cgroup drivers: each hierarchy's directory is empty
    once the processes are gone, so one rmdir each. False when that is not enough (child cgroups,
    dying tasks): the driver's remove() then waits and walks."""
    for d in dict.fromkeys(paths.values()):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        if prune_parent and os.path.basename(os.path.dirname(d)) == "jaula":
            try:
                os.rmdir(os.path.dirname(d))  # the shared parent goes with its last container
            except OSError:
                pass
    return True


def pause(c: Container) -> None:
    st = c.status()
    if st != RUNNING:
        raise BadState(f"cannot pause container {c.id!r}: it is {st}")
    _cgroup(c).freeze()


def resume(c: Container) -> None:
    st = c.status()
    if st != PAUSED:
        raise BadState(f"cannot resume container {c.id!r}: it is {st}, not paused")
    _cgroup(c).thaw()


def update(c: Container, resources_json: dict) -> None:
    from jaula.cgroups.resources import Resources

    st = c.status()
    if st == STOPPED:
        raise BadState(f"cannot update container {c.id!r}: it is stopped")
    res = Resources.from_oci(resources_json)
    _cgroup(c).update(res)


def pids(c: Container) -> list[int]:
    if c.data.get("cgroupPaths"):
        return sorted(_cgroup(c).pids())
    return [c.pid] if c.alive() else []


def load(root: str, cid: str) -> Container:
    return state.load(root, cid)


__all__ = ["start", "kill", "delete", "pause", "resume", "update", "pids", "load", "NotFound"]
