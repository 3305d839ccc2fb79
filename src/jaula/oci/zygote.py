"""The zygote: a small process that clones containers' inits for a long-lived runtime.

jaulad's spawner, where the runtime runs, is a Python process of ~17 MiB of anonymous memory (the
driver's, storage's and network's modules). An init cloned from it pays for that size three times:
the clone3 copies its page tables (~1 ms), both write-fault pages they share (copy-on-write), and
the init's execve tears its copy down again (~1 ms). A process that made two containers (jaulad's
spawner, a test; never a one-shot `jaula-runtime`) keeps a zygote instead: `python -IS` with
only the init's modules (~7 MiB), started by posix_spawn (no copy of the caller), which clones
each init with CLONE_PARENT: the init is the caller's child all the same (its reaper: waitpid,
the exit status), born from the small process.

One SOCK_SEQPACKET pair. A request is the init's Plan pickled (jaula.oci.init.Plan, without its
fds and its log) with its fds in SCM_RIGHTS (the sync socket, the exec fifo, the trampoline, the
exec pipe, a cgroup2 folder, a console socket); the answer `pid N` (the init's pid, in the
caller's pid namespace) or `error TEXT`. The zygote exits when the caller's end closes, and dies
with the caller (PR_SET_PDEATHSIG). It is non-dumpable, so are the inits at birth; it holds no fd
but its socket, which an init closes first. The caller clones the init itself while no zygote
answers (starting, gone, or an older C module without CLONE_PARENT: `libc.can_clone_parent`).
"""

from __future__ import annotations

import _thread
import os
import sys

CLONE_PARENT = 0x00008000
# the fds sent with a request, in this order: the plan's, then the caller's stdio (the init's own)
_SLOTS = ("sock", "console_sock", "fifo_fd", "tramp", "exec_w", "cgroup_fd", "stdin", "stdout", "stderr")
_STDIO = {"stdin": 0, "stdout": 1, "stderr": 2}
_z: _Zygote | None = None
_broken = False  # a zygote failed once: this process clones its inits itself from then on
cloned = 0  # inits the zygote cloned for this process (tests)
_lock = _thread.allocate_lock()


class _Zygote:
    def __init__(self, pid: int, sock) -> None:
        self.pid = pid
        self.sock = sock
        self.ready = False
        self.owner = os.getpid()  # a fork of ours inherits this object, not the zygote's service


def _mine() -> None:
    """In a fork of the process that started the zygote (a spawner forked from a caller that had
    one, a test's): forget it. Its inits would be that process's children, not ours (CLONE_PARENT),
    and two processes would talk on one socket. We start our own when we need one."""
    global _z
    if _z is not None and _z.owner != os.getpid():
        try:
            _z.sock.close()  # our copy of the fd: the zygote stays its starter's
        except OSError:
            pass
        _z = None


def keep() -> None:
    """Start a zygote for this process's next creates, unless one runs (it is used once it said ready)."""
    with _lock:
        _keep()


def _keep() -> None:
    global _z, _broken
    _mine()
    if _z is not None or _broken:
        return
    from jaula.linux import libc

    if not libc.can_clone_parent():
        _broken = True
        return
    import _socket

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys; sys.path.insert(0, {src!r}); from jaula.oci.zygote import main; "
            f"main({b.fileno()}, {os.getpid()})")
    try:
        os.set_inheritable(b.fileno(), True)
        # posix_spawn: vfork and exec, no copy of this (big) process; its own session, so a
        # terminal's ^C to our process group does not reach it
        pid = os.posix_spawn(sys.executable, [sys.executable, "-IS", "-c", code], os.environ, setsid=True)
    except OSError:
        a.close()
        _broken = True
        return
    finally:
        b.close()
    _z = _Zygote(pid, a)


def ready() -> bool:
    """Whether a zygote answers now (clone() will use it, unless it goes meanwhile)."""
    with _lock:
        return _ready() is not None


def _ready() -> _Zygote | None:
    _mine()
    z = _z
    if z is None:
        return None
    if not z.ready:
        import select

        if not select.select([z.sock], [], [], 0)[0]:
            return None  # still starting
        try:
            said = z.sock.recv(16)
        except OSError:
            said = b""
        if said != b"ready":
            _drop()
            return None
        z.ready = True
    return z


def _drop() -> None:
    """Forget the zygote (gone, or failed): kill it if it is still there; never start another."""
    global _z, _broken
    z, _z, _broken = _z, None, True
    if z is None:
        return
    z.sock.close()
    try:
        os.kill(z.pid, 9)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(z.pid, 0)
    except ChildProcessError:
        pass  # reaped by the caller's own reaper (jaulad's spawner reaps its children)


def clone(plan, flags: int) -> int | None:
    """The pid of the init cloned by the zygote with CLONE_NEW* `flags`, or None where no zygote
    is ready, or where the plan has fds it cannot pass (preserve_fds): clone it yourself then.
    Raises when the zygote went while it had the request (the caller undoes its create)."""
    if plan.preserve_fds:
        return None
    with _lock:  # one request and its answer at a time (a threaded caller)
        return _clone(plan, flags)


def _clone(plan, flags: int) -> int | None:
    global cloned
    z = _ready()
    if z is None:
        return None
    import _socket
    import pickle

    from jaula.errors import JaulaError
    from jaula.oci.log import Log

    fields = dict(plan.__dict__)
    fds, slots = [], []
    for name in _SLOTS:
        v = fields.pop(name) if name not in _STDIO else _STDIO[name]
        fd = v.fileno() if hasattr(v, "fileno") else v
        if name in _STDIO:
            try:
                os.fstat(fd)
            except OSError:
                continue  # closed here: closed in the init too
        if fd is not None and fd >= 0:
            fds.append(fd)
            slots.append(name)
    log = fields.pop("log")
    fields["log"] = (log.path, log.fmt, log.level) if isinstance(log, Log) else None
    # What an init inherits from the process that clones it, as it would from us: the stdio above
    # (the container's, set by jaulad's driver), the signals we ignore (an ignored signal stays
    # ignored across execve: jaulad's spawner ignores SIGINT), our umask and our folder.
    try:
        cwd = os.getcwd()
    except OSError:
        return None  # our folder is gone: a direct clone inherits it as it is
    umask = os.umask(0o22)
    os.umask(umask)
    inherit = {"ignored": _ignored(), "umask": umask, "cwd": cwd}
    msg = pickle.dumps((fields, slots, flags, inherit), pickle.HIGHEST_PROTOCOL)
    rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
    try:
        z.sock.sendmsg([msg], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    except OSError:
        _drop()
        return None  # it did not get the request: nothing was cloned
    try:
        answer = z.sock.recv(4096)
    except OSError:
        answer = b""
    if answer.startswith(b"pid "):
        cloned += 1
        return int(answer[4:])
    _drop()
    if answer.startswith(b"error "):
        return None  # it failed before or at its clone3: nothing was cloned, clone it yourself
    # gone with the request: it may have cloned an init, which our sync socket's close ends
    raise JaulaError("the zygote exited while it cloned the init")


def _ignored() -> list[int]:
    import signal

    out = []
    for sig in range(1, signal.NSIG):
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                out.append(sig)
        except ValueError:
            pass
    return out


def _inherit(fds: dict[str, int], inherit: dict) -> None:
    """In the init, right after its clone: what it would have had from the caller (see _clone)."""
    import signal

    for name, target in _STDIO.items():
        if name in fds:
            os.dup2(fds[name], target)  # not close-on-exec, as the caller's
        else:
            try:
                os.close(target)
            except OSError:
                pass
    ignored = set(inherit["ignored"])
    for sig in range(1, signal.NSIG):
        try:
            now = signal.getsignal(sig)
            if sig in ignored and now != signal.SIG_IGN:
                signal.signal(sig, signal.SIG_IGN)
            elif sig not in ignored and now == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP, the C library's own
    os.umask(inherit["umask"])
    os.chdir(inherit["cwd"])


def main(fd: int, parent: int) -> None:
    """The zygote's loop (python -IS -c ...): clone an init for each request. Never returns."""
    import _socket

    # what an init imports (its _preload included: a console's, hooks'), once, not in each init
    import fcntl  # noqa: F401
    import pickle
    import signal
    import struct  # noqa: F401
    import termios  # noqa: F401

    from jaula.linux import fs, libc, mount, proc  # noqa: F401
    from jaula.oci import hooks, init, log, process, rootfs, seccomp, sync, timing  # noqa: F401

    proc.prctl(proc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)  # the caller is already gone
    proc.set_dumpable(False)
    # glibc's posix_spawn left its two internal signals (32, 33) ignored here, and an ignored
    # signal stays so across execve: back to their default (a struct sigaction of zeros), as in
    # the caller, or every container would have them ignored
    for sig in (32, 33):
        libc.call("rt_sigaction", sig, bytes(32), None, 8, detail=f"signal {sig}")
    sock = _socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    sock.send(b"ready")
    space = _socket.CMSG_SPACE(len(_SLOTS) * 4)
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(1 << 20, space, _socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            continue
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)  # the caller closed its end
        fds: list[int] = []
        for level, kind, blob in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(blob[i:i + 4], sys.byteorder) for i in range(0, len(blob) - len(blob) % 4, 4)]
        socks = []
        try:
            fields, slots, flags, inherit = pickle.loads(data)
            if len(slots) != len(fds):
                raise ValueError(f"{len(fds)} fds for {len(slots)} slots")
            stdio = {name: f for name, f in zip(slots, fds) if name in _STDIO}
            plan = init.Plan.__new__(init.Plan)
            lg = fields.pop("log")
            plan.__dict__.update(fields)
            plan.sock = plan.console_sock = None
            plan.tramp, plan.fifo_fd, plan.exec_w, plan.cgroup_fd = None, -1, -1, -1
            for name, f in zip(slots, fds):
                if name in _STDIO:
                    continue
                if name in ("sock", "console_sock"):
                    s = _socket.socket(fileno=f)
                    socks.append(s)
                    setattr(plan, name, s)
                else:
                    setattr(plan, name, f)
            plan.log = log.Log(lg[0], lg[1]) if lg else log.Log()
            if lg:
                plan.log.level = lg[2]
            pid = libc.clone3(flags | CLONE_PARENT, plan.cgroup_fd)
            if pid == 0:
                try:
                    sock.close()
                    _inherit(stdio, inherit)
                except BaseException as e:  # noqa: BLE001 - told to the runtime as any init's failure
                    init._report(plan.sock, "zygote", e)
                    os._exit(1)
                init._cloned(plan, flags)  # never returns
            answer = f"pid {pid}"
        except BaseException as e:  # noqa: BLE001 - answered, never fatal to the zygote
            answer = f"error {type(e).__name__}: {e}"
        for s in socks:
            s.detach()
        for f in fds:
            os.close(f)
        try:
            sock.send(answer.encode())
        except OSError:
            os._exit(0)
