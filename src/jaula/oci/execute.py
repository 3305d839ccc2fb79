"""`exec`: a new process inside a running container's namespaces, cgroup and security settings."""

from __future__ import annotations

import os

from jaula.errors import BadState, JaulaError
from jaula.linux import ns as nsys
from jaula.linux import proc
from jaula.oci import process as procsec
from jaula.oci import sync
from jaula.oci.config import Process, Spec
from jaula.oci.state import PAUSED, STOPPED, Container

# user first: the other namespaces are owned by it, and joining them needs its capabilities.
_ORDER = ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup", "time")
_FLAG = {v[1]: v[0] for v in nsys.NAMESPACES.values()}


class ExecOptions:
    def __init__(self, detach: bool = False, pid_file: str | None = None, console_socket: str | None = None,
                 preserve_fds: int = 0):
        self.detach, self.pid_file, self.console_socket, self.preserve_fds = detach, pid_file, console_socket, preserve_fds


def execute(c: Container, spec: Spec, p: Process, opts: ExecOptions, log) -> int:
    st = c.status()
    if st in (STOPPED, PAUSED):
        raise BadState(f"cannot exec in container {c.id!r}: it is {st}")
    if not p.args:
        raise JaulaError("exec: give the command to run")
    fg = None
    console_sock = peer = None
    if p.terminal:
        if opts.console_socket:
            from jaula.oci.create import _connect

            console_sock = _connect(opts.console_socket)
        elif opts.detach:
            raise JaulaError("exec -t -d needs --console-socket to hand the pty to")
        else:
            console_sock, peer = sync.pair()
    if not opts.detach:
        from jaula.oci.foreground import Foreground

        fg = Foreground()
    # Open the namespaces now, through a pidfd-checked pid, before anything changes.
    ns_fds = _open_namespaces(c)
    files = _cgroup_files(c)
    # Born in its cgroup2 folder (clone3 CLONE_INTO_CGROUP) rather than moved there by a write to
    # cgroup.procs in the child, which waits for an RCU grace period (~10 ms a system instance's
    # exec on a hybrid host, whose init is in its cgroup2 folder): as create's first process.
    from jaula.oci.create import born_in

    cgroup_fd = born_in(files)
    parent, child = sync.pair()
    try:
        pid = _fork(cgroup_fd)
    except BaseException:
        for sock in (parent, child):
            sock.close()
        for fd in ns_fds.values():
            os.close(fd)
        raise
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)  # the child's copy too, first thing (never into the container)
    if pid == 0:
        parent.close()
        _child(c, spec, p, child, ns_fds, console_sock, opts.preserve_fds, log, files)
    child.close()
    for fd in ns_fds.values():
        os.close(fd)
    epid = 0
    try:
        epid = int(sync.expect(parent, sync.PID))
        os.waitpid(pid, 0)
        name, payload, fds = sync.recv(parent, with_fds=True)
        if name == sync.SECCOMP:  # its seccomp listener, for linux.seccomp.listenerPath (as the init's)
            _forward_listener(c, spec, fds, log)
            name, payload, _ = sync.recv(parent)
        if name == sync.ERROR:
            raise JaulaError(payload)
    except BaseException:
        for victim in (epid, pid):
            if victim:
                try:
                    os.kill(victim, 9)
                except ProcessLookupError:
                    pass
        if epid and fg is not None:
            _reap(epid)  # we are its subreaper: leave no zombie behind
        raise
    finally:
        parent.close()
    if opts.pid_file:
        from jaula.oci.create import write_pid_file

        write_pid_file(opts.pid_file, epid)
    if fg is None:
        return 0
    fg.pid = epid
    if peer is not None:
        from jaula.oci.foreground import receive_master

        console_sock.close()
        fg.master = receive_master(peer)
    fg.forward_signals()
    return fg.wait()


def _fork(cgroup_fd: int) -> int:
    """os.fork(), or a clone3 into the cgroup2 folder `cgroup_fd` when it is >= 0."""
    if cgroup_fd < 0:
        return os.fork()
    from jaula.linux import libc

    return libc.clone3(0, cgroup_fd)


def _preload(spec: Spec) -> None:
    """After setns into the container's mount namespace the host's Python library is gone: import now."""
    import fcntl  # noqa: F401
    import resource  # noqa: F401
    import struct  # noqa: F401
    import termios  # noqa: F401

    from jaula.linux import fs, mount  # noqa: F401
    from jaula.oci import init  # noqa: F401

    if spec.linux.seccomp is not None:
        from jaula.oci import seccomp  # noqa: F401


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _open_namespaces(c: Container) -> dict[str, int]:
    fds: dict[str, int] = {}
    for kind in _ORDER:
        theirs = f"/proc/{c.pid}/ns/{kind}"
        try:
            if nsys.same_namespace(theirs):
                continue
            fds[kind] = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
    if not c.alive():
        for fd in fds.values():
            os.close(fd)
        raise BadState(f"container {c.id!r} stopped")
    return fds


def _cgroup_files(c: Container) -> list[str]:
    """What the exec'd process writes 0 into to join the container's cgroup: the hierarchies its init is in."""
    from jaula.oci.create import cgroup_mounts, join_files

    paths = c.data.get("cgroupPaths") or {}
    mounts = cgroup_mounts()
    files = join_files(paths, mounts, need_unified=True)
    # The init joined cgroup2 on a hybrid host only if a limit lived there: do as it did.
    try:
        with open(f"/proc/{c.pid}/cgroup") as f:
            init_in_v2 = any(line.startswith("0::") and line.strip() != "0::/" for line in f)
    except OSError:
        init_in_v2 = True
    # a v2 subtree its init manages (controllers enabled below): a leaf below it
    from jaula.cgroups.delegation import join_file

    return [join_file(f) for f in files if not f.endswith("cgroup.procs") or init_in_v2]


def _child(c: Container, spec: Spec, p: Process, sock, ns_fds: dict[str, int], console_sock, preserve_fds: int, log,
           cgroup_files: list[str]) -> None:
    code = 1
    step = "namespaces"
    try:
        # Non-dumpable before entering: the container must not reach this interpreter through
        # /proc/PID/exe or /proc/PID/mem while we are inside (CVE-2019-5736).
        proc.set_dumpable(False)
        _preload(spec)
        tramp = procsec.trampoline()
        from jaula.oci.init import join_cgroup

        join_cgroup(cgroup_files)
        for kind in _ORDER:
            if kind in ns_fds:
                nsys.setns(ns_fds[kind], _FLAG[kind], kind)
                os.close(ns_fds[kind])
        if "user" in ns_fds:
            try:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            except OSError:
                pass
        pid = os.fork()
        if pid == 0:
            _exec_process(spec, p, sock, console_sock, preserve_fds, log, tramp)
        sync.send(sock, sync.PID, str(pid))
        code = 0
    except BaseException as e:  # noqa: BLE001
        try:
            sync.send(sock, sync.ERROR, f"exec: {step}: {e}")
        except OSError:
            pass
    finally:
        os._exit(code)


def _install_seccomp(sc, sock) -> None:
    """Load the filter; with a listenerPath, its listener goes to the parent (which hands it on:
    _forward_listener) before the execve, as runc does for an exec'd process."""
    from jaula.oci import seccomp

    fd = seccomp.install(sc, listener=bool(sc.listener_path))
    if fd >= 0:
        try:
            sync.send(sock, sync.SECCOMP, fds=[fd])
        finally:
            os.close(fd)


def _forward_listener(c: Container, spec: Spec, fds: list[int], log) -> None:
    """Hand an exec'd process's listener to the seccomp agent; a failure is logged, not fatal: the
    process runs already, and with no listener its notified calls fail with ENOSYS (none hangs)."""
    from jaula.oci import seccomp

    sc = spec.linux.seccomp
    try:
        for fd in fds[:1]:
            seccomp.send_to_listener(sc.listener_path, fd, c.oci_state(), sc.listener_metadata)
    except OSError as e:
        log.warning(f"exec: the seccomp listener not handed to {sc.listener_path!r}: {e}")
    finally:
        for fd in fds:
            os.close(fd)


def _exec_process(spec: Spec, p: Process, sock, console_sock, preserve_fds: int, log, tramp: int | None) -> None:
    step = "process"
    try:
        os.setsid()
        # A session keyring of its own: inherited, it would be the caller's, the host's (as init does).
        try:
            proc.join_session_keyring(None)
        except OSError as e:
            log.debug(f"no new session keyring: {e}")
        if p.terminal:
            step = "console"
            from jaula.oci.init import console

            console(p, console_sock, log, bind_console=False)
        step = "process"
        exe = procsec.lookup(p)
        procsec.apply_lsm(p, log)
        procsec.set_rlimits(p)
        sc = spec.linux.seccomp
        from jaula.oci.init import _setgroups_allowed

        if sc is not None and not p.no_new_privileges:
            _install_seccomp(sc, sock)
        procsec.drop_bounding(p)
        procsec.set_user(p, setgroups_allowed=_setgroups_allowed())
        procsec.set_caps(p)
        if p.no_new_privileges:
            proc.set_no_new_privs()
        procsec.close_fds({0, 1, 2, sock.fileno()} | set(range(3, 3 + preserve_fds)) | ({tramp} if tramp is not None else set()))
        step = "cwd"
        procsec.enter_cwd(p)
        env = dict(e.split("=", 1) for e in p.env)
        if sc is not None and p.no_new_privileges:
            _install_seccomp(sc, sock)
        procsec.exec_program(tramp, exe, p.args, env)
    except BaseException as e:  # noqa: BLE001
        try:
            sync.send(sock, sync.ERROR, f"exec: {step}: {e}")
        except OSError:
            pass
        os._exit(127)
