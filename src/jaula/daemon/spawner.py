"""The spawner: a single-threaded process that drives instances for the threaded daemon.

Why: starting an instance forks (jaula.oci's create) and unshares a user namespace, which fails
or is unsafe in a process with threads, and jaulad has threads (its event loop's executors).
So jaulad makes this process *before any thread exists*, with `Spawner.start(make_driver)`,
and sends it every driver call.

Protocol (one SOCK_SEQPACKET socketpair, so one message is one datagram-like packet):
  request  {"id": N, "op": OP, "instance": {...} | null, "args": {...}}
  reply    {"id": N, "ok": true, "result": ...}
           {"id": N, "ok": false, "error": {"type": "BadState", "message": "..."}}
OPs: create start stop freeze unfreeze state stats update delete mount_root unmount_root (the
Driver's methods, the instance as `Instance.to_json()`, `args` as keyword arguments), ping (-> the
spawner's pid), exit_status (args {"pid": P}: the exit code of an init the spawner reaped, else
null) and exec (the driver's `spawn_exec`, with the fds the request carries: it forks a waiter
and answers at once with {"pid": waiter}, so a long command never blocks the spawner; the reply
carries a pidfd of the waiter).
The reply to "start" carries a pidfd of the instance's init (SCM_RIGHTS, opened in the
spawner right after the start) so the daemon can watch it in its event loop (supervisor.py);
`SpawnerClient.call` returns it in the result as "pidfd" (the caller owns and closes it).
The first message of a new spawner is {"id": 0, "ok": true, "result": {"pid": P}} once its
driver is built (or the error building it).

Requests are served one at a time. The client side is thread-safe (one lock around each
request and its reply) and is used from asyncio through `acall` (run_in_executor).

Exit statuses: the spawner is a child subreaper, so an instance's init (whose parent, the
runtime's intermediate process, exits during create) becomes its child; it reaps them and keeps
their exit codes, and `exit_status` answers with one. Only the reaper can know it: jaulad, not
the init's parent, sees through a pidfd only *that* it exited. An init adopted after a daemon
restart was reaped by someone else (the host's init): its exit status is unknown.

If the spawner dies, `call` raises SpawnerDied and `restart()` makes a new one. A process with
threads must not fork and go on running Python, so `restart()` from a threaded process
starts a fresh interpreter on the small entry point `python -m jaula.daemon.spawner --fd N
--factory MODULE:NAME [--args JSON]` (subprocess's fork+exec is safe with threads), passing it
its end of a new socketpair; that needs `make_driver` importable (a module-level function, or a
"module:name" string) and its `args` JSON. Without threads, `restart()` forks as `start` does.
`Spawner.start(..., hold_fds=[fd])` gives the spawner fds to hold for life, and every restart
holds them again (`--hold-fd N`, made close-on-exec there): jaulad's root lock, so no second
jaulad starts on the root while a spawner of this one lives, restarted or not.
The spawner ends when its socket closes (the daemon went): running instances are left alone.
"""

from __future__ import annotations

import array
import asyncio
import errno
import functools
import gc
import importlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from jaula import errors
from jaula.errors import BadState, JaulaError

MAX_MESSAGE = 1 << 20            # a request or reply larger than this is refused
MAX_STATUSES = 4096              # exit codes kept for `exit_status` (the oldest go first)
DRIVER_OPS = frozenset(("create", "start", "stop", "freeze", "unfreeze", "state", "stats", "update", "delete",
                        "snapshot", "restore", "delete_snapshot", "copy", "export", "import_",
                        "personalize", "mount_root", "unmount_root"))
OPS = DRIVER_OPS | {"ping", "exit_status", "exec"}
_IDLE_REAP_S = 1.0


class SpawnerError(JaulaError):
    """The spawner failed a request with an error that is not one of jaula.errors' (its type
    and message are kept: `remote_type`)."""

    def __init__(self, remote_type: str, message: str) -> None:
        self.remote_type = remote_type
        super().__init__(f"{remote_type}: {message}")


class SpawnerDied(JaulaError):
    """The spawner process is gone: call `restart()`."""


# --- wire ---------------------------------------------------------------------------------------
def _send(sock: socket.socket, msg: dict, fds: list[int] = ()) -> None:  # type: ignore[assignment]
    data = json.dumps(msg, default=_plain).encode()
    if len(data) > MAX_MESSAGE:
        raise JaulaError(f"spawner message of {len(data)} bytes is over {MAX_MESSAGE}")
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], anc)


def _recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """One message and the fds it carried; (None, []) at end of stream."""
    fds = array.array("i")
    data, anc, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data and not fds:
        return None, []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise JaulaError("spawner message truncated")
    return json.loads(data), list(fds)


def _plain(v: Any) -> Any:
    """JSON for what drivers return: Records (InstanceState, Stats) as dicts."""
    if hasattr(v, "as_dict"):
        return v.as_dict()
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    return str(v)


def _error(e: BaseException) -> dict:
    return {"type": type(e).__name__, "message": str(e)}


def _raise(err: dict) -> None:
    kind, message = str(err.get("type", "Error")), str(err.get("message", ""))
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, JaulaError) and cls is not errors.SyscallError:
        raise cls(message)
    raise SpawnerError(kind, message)


# --- the spawner process ------------------------------------------------------------------------
class _Server:
    """The spawner's side: serves requests one at a time and reaps the inits it inherits."""

    def __init__(self, sock: socket.socket, driver: Any) -> None:
        self.sock = sock
        self.driver = driver
        self.statuses: dict[int, int] = {}

    def reap(self, pid: int = -1) -> None:
        """Reap exited children (or just `pid`), keeping their exit codes (128+N for signal N)."""
        while True:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if got == 0:
                return
            self.keep(got, status)
            if pid != -1:
                return

    def keep(self, pid: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        self.statuses[pid] = code if code >= 0 else 128 - code
        while len(self.statuses) > MAX_STATUSES:
            del self.statuses[next(iter(self.statuses))]

    def serve(self) -> None:
        import select

        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while True:
            if not poller.poll(int(_IDLE_REAP_S * 1000)):
                self.reap()
                continue
            try:
                msg, fds = _recv(self.sock)
            except JaulaError:
                continue
            except OSError:
                return
            if msg is None:
                return  # the daemon went
            rid = msg.get("id") if isinstance(msg, dict) else None
            passed: list[int] = []
            try:
                result = self.handle(msg, passed, fds)
                reply = {"id": rid, "ok": True, "result": result}
            except Exception as e:  # noqa: BLE001 - every failure goes back to the caller
                reply = {"id": rid, "ok": False, "error": _error(e)}
            finally:
                for fd in fds:  # what the request carried is the waiter's now (or nobody's)
                    os.close(fd)
            try:
                try:
                    _send(self.sock, reply, passed)
                except (TypeError, ValueError, JaulaError) as e:  # a result JSON cannot hold
                    _send(self.sock, {"id": rid, "ok": False, "error": _error(e)})
            except OSError:
                return
            finally:
                for fd in passed:
                    os.close(fd)
            self.reap()
            _collect_due()

    def handle(self, msg: dict, passed: list[int], fds: list[int] = ()) -> Any:  # type: ignore[assignment]
        op = msg.get("op")
        args = msg.get("args") or {}
        if op not in OPS or not isinstance(args, dict):
            raise JaulaError(f"unknown spawner request {op!r}: use one of {', '.join(sorted(OPS))}")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "exit_status":
            pid = int(args["pid"])
            self.reap(pid)
            return self.statuses.get(pid)
        from jaula.instances.model import Instance

        if not isinstance(msg.get("instance"), dict):
            raise JaulaError(f"spawner request {op!r} needs an instance")
        inst = Instance.from_json(msg["instance"])
        if op == "start":
            from jaula.instances.start_timing import mark

            mark(inst.name, "sp.recv")
        if op == "exec":
            from jaula.linux.proc import pidfd_open

            pid = self.driver.spawn_exec(inst, fds=list(fds), **args)
            self.statuses.pop(pid, None)
            passed.append(pidfd_open(pid))
            return {"pid": pid}
        result = getattr(self.driver, op)(inst, **args)
        if op == "start":
            pid = int(getattr(result, "pid", 0) or 0)
            if pid > 0:
                self.statuses.pop(pid, None)  # an older process's status under a reused pid
                from jaula.linux.proc import pidfd_open

                passed.append(pidfd_open(pid))
        return result


#: the collector's thresholds (gc.set_threshold) while the spawner serves: a young collection
#: (0.2-0.5 ms here) waits for the reply of the request that made it due (`_collect_due`), unless
#: one request makes this many objects
_GC_IN_REQUEST = 100_000
_GC_DUE = gc.get_threshold()  # Python's (700, 10, 10): when a collection is due


def _collect_due() -> None:
    """After a request's reply, the collection Python's thresholds would have made during it."""
    c0, c1, c2 = gc.get_count()
    if c0 < _GC_DUE[0]:
        return
    gc.collect(2 if c1 + 1 >= _GC_DUE[1] and c2 + 1 >= _GC_DUE[2] else 1 if c1 + 1 >= _GC_DUE[1] else 0)


def _keep_reaped_statuses(server: _Server) -> None:
    """ContainerDriver reaps an init it stopped itself (its module's `_reap`, for a caller that is
    a subreaper) and drops the status: in the spawner, keep it for `exit_status`."""
    try:
        from jaula.instances import container
    except ImportError:
        return
    if not callable(getattr(container, "_reap", None)):
        return

    def reap(pid: int) -> None:
        server.reap(pid)

    container._reap = reap  # type: ignore[attr-defined]


def _serve(sock: socket.socket, make_driver: Callable[..., Any], args: dict) -> None:
    """The spawner's whole life: build the driver, say hello, serve until the socket closes."""
    from jaula.linux.proc import set_child_subreaper, set_name

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the daemon must not cut a start in half
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    set_name("jaula-spawner")
    try:
        set_child_subreaper()
        driver = make_driver(**args)
    except Exception as e:  # noqa: BLE001 - told to the daemon
        _send(sock, {"id": 0, "ok": False, "error": _error(e)})
        return
    server = _Server(sock, driver)
    _keep_reaped_statuses(server)
    # Its imports and driver live as long as it does: out of the collector's passes (a full one
    # took ~10 ms), and their pages no longer written by a collection in the inits it forks
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_IN_REQUEST, *_GC_DUE[1:])  # young collections between requests: serve
    _send(sock, {"id": 0, "ok": True, "result": {"pid": os.getpid()}})
    server.serve()


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    if not module or not name:
        raise JaulaError(f"driver factory {ref!r}: give it as module:name")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _reference(make_driver: Callable[..., Any] | str) -> str | None:
    """'module:qualname' when the entry point can import `make_driver` back, else None."""
    if isinstance(make_driver, str):
        return make_driver
    module, qual = getattr(make_driver, "__module__", None), getattr(make_driver, "__qualname__", "")
    if not module or "<" in qual:
        return None
    try:
        return f"{module}:{qual}" if _resolve(f"{module}:{qual}") is make_driver else None
    except Exception:  # noqa: BLE001
        return None


# --- the daemon's side --------------------------------------------------------------------------
class SpawnerClient:
    """The daemon's end of the socketpair: `call` is thread-safe (one request at a time)."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock: socket.socket | None = sock
        self.pid = pid
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._dead: str | None = None

    def call(self, op: str, instance: Any = None, *, pass_fds: list[int] = (), **args: Any) -> Any:  # type: ignore[assignment]
        """Send one request (with `pass_fds`, by SCM_RIGHTS) and return its result; raise the
        spawner's error (jaula.errors' class of the same name, else SpawnerError), or SpawnerDied
        when the spawner is gone."""
        if op not in OPS:
            raise JaulaError(f"unknown spawner request {op!r}: use one of {', '.join(sorted(OPS))}")
        if instance is not None and hasattr(instance, "to_json"):
            instance = instance.to_json()
        with self._lock:
            sock = self.sock
            if sock is None or self._dead:
                raise SpawnerDied(self._dead or "the spawner is closed")
            rid = next(self._ids)
            try:
                _send(sock, {"id": rid, "op": op, "instance": instance, "args": args}, list(pass_fds))
                while True:
                    reply, fds = _recv(sock)
                    if reply is None:
                        raise self._died(None)
                    got = reply.get("id")
                    if not (isinstance(got, int) and got < rid):
                        break
                    for fd in fds:  # the late reply of a call interrupted (KeyboardInterrupt) before it came
                        os.close(fd)
            except (BrokenPipeError, ConnectionResetError) as e:
                raise self._died(e) from None
        if reply.get("id") != rid:
            for fd in fds:
                os.close(fd)
            raise JaulaError(f"spawner answered request {reply.get('id')!r} to request {rid}")
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            _raise(reply.get("error") or {})
        result = reply.get("result")
        if fds:
            if op in ("start", "exec") and isinstance(result, dict) and len(fds) == 1:
                result["pidfd"] = fds[0]
            else:
                for fd in fds:
                    os.close(fd)
        return result

    async def acall(self, op: str, instance: Any = None, **args: Any) -> Any:
        """`call` from asyncio, in the loop's default executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.call, op, instance, **args))

    def _died(self, cause: BaseException | None) -> SpawnerDied:
        import time

        deadline = time.monotonic() + 0.5  # its socket closes as it exits: reap it to say how
        while (status := self._wait(block=False)) is None and time.monotonic() < deadline:
            time.sleep(0.005)
        why = f"exit status {status}" if status is not None else (str(cause) if cause else "its socket closed")
        self._dead = (f"the spawner (pid {self.pid}) died ({why}); the request's outcome is unknown: "
                      "call restart() and look at the instance's state")
        return SpawnerDied(self._dead)

    def _wait(self, block: bool) -> int | None:
        """Reap the spawner; its exit code when it has ended."""
        return None


class Spawner(SpawnerClient):
    """The spawner process and the client of it. Make it with `Spawner.start`, before any thread."""

    def __init__(self, sock: socket.socket, pid: int, make_driver: Callable[..., Any] | str, args: dict,
                 proc: subprocess.Popen | None = None, hold_fds: tuple[int, ...] = ()) -> None:
        super().__init__(sock, pid)
        self._make_driver = make_driver
        self._args = args
        self._proc = proc
        self._status: int | None = None
        self._hold_fds = hold_fds

    @classmethod
    def start(cls, make_driver: Callable[..., Any] | str, args: dict | None = None, *,
              hold_fds: Iterable[int] = ()) -> Spawner:
        """Fork the spawner now; in it, `make_driver(**args)` builds the driver it serves.

        Call it while the process has one thread (before asyncio's executors, sqlite's or any
        library's threads): forking a threaded process and going on in Python is unsafe, and a
        user namespace cannot be unshared from one. A threaded caller gets BadState.

        `hold_fds`: the caller's fds the spawner keeps open for its life, and so does a spawner
        restarted in its place (jaulad's root lock: its flock stays held while a spawner lives,
        even one re-exec'd after a crash). The caller keeps them open too, for the restarts.
        """
        args = dict(args or {})
        if threading.active_count() != 1:
            raise BadState(f"Spawner.start must run before any thread exists ({threading.active_count()} "
                           "threads now): start it first thing in the daemon")
        if isinstance(make_driver, str):
            make_driver = _resolve(make_driver)
        return cls._fork(make_driver, args, tuple(hold_fds))

    @classmethod
    def _fork(cls, make_driver: Callable[..., Any], args: dict, hold_fds: tuple[int, ...] = ()) -> Spawner:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ours.close()
                _serve(theirs, make_driver, args)
            except BaseException:  # noqa: BLE001 - never return into the caller's stack
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        sp = cls(ours, pid, make_driver, args, hold_fds=hold_fds)  # the fork inherited hold_fds
        sp._hello()
        return sp

    @classmethod
    def _exec(cls, ref: str, args: dict, hold_fds: tuple[int, ...] = ()) -> Spawner:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
            held = [a for fd in hold_fds for a in ("--hold-fd", str(fd))]
            proc = subprocess.Popen(
                [sys.executable, "-m", "jaula.daemon.spawner", "--fd", str(theirs.fileno()), "--factory", ref,
                 "--args", json.dumps(args), *held],
                pass_fds=(theirs.fileno(), *hold_fds), stdin=subprocess.DEVNULL, env=env, start_new_session=False)
        finally:
            theirs.close()
        sp = cls(ours, proc.pid, ref, args, proc, hold_fds)
        sp._hello()
        return sp

    def _hello(self) -> None:
        try:
            msg, fds = _recv(self.sock)  # type: ignore[arg-type]
        except OSError as e:
            msg, fds = None, []
            cause: BaseException | None = e
        else:
            cause = None
        for fd in fds:
            os.close(fd)
        if msg is None:
            err = self._died(cause)
            self.close()
            raise err
        if not msg.get("ok"):
            self.close()
            _raise(msg.get("error") or {})

    def restart(self) -> Spawner:
        """Replace a dead (or live) spawner by a new one, in place; returns self.

        Without threads it forks; with threads it re-execs `python -m jaula.daemon.spawner`
        (make_driver must be importable then: see the module's doc)."""
        with self._lock:
            self._stop_process()
            if threading.active_count() == 1:
                make = self._make_driver if callable(self._make_driver) else _resolve(self._make_driver)
                new = self._fork(make, self._args, self._hold_fds)
            else:
                ref = _reference(self._make_driver)
                if ref is None:
                    raise BadState(f"cannot restart the spawner from a threaded process: its driver factory "
                                   f"{self._make_driver!r} cannot be imported by name (use a module-level "
                                   "function or a 'module:name' string)")
                new = self._exec(ref, self._args, self._hold_fds)
            self.sock, self.pid, self._proc, new.sock = new.sock, new.pid, new._proc, None
            self._status, self._dead = None, None
        return self

    def alive(self) -> bool:
        return self.sock is not None and self._wait(block=False) is None and not self._dead

    def _wait(self, block: bool) -> int | None:
        if self._status is not None:
            return self._status
        if self._proc is not None:
            code = self._proc.wait() if block else self._proc.poll()
            if code is not None:
                self._status = code
            return code
        try:
            got, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self._status = -1
            return -1
        if got == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        self._status = code
        return code

    def _stop_process(self, timeout: float = 5.0) -> None:
        """Close our end (the spawner exits at end of stream), then wait for it; kill it if it hangs."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._status is not None:
            return
        import time

        deadline = time.monotonic() + timeout
        while self._wait(block=False) is None:
            if time.monotonic() > deadline:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._wait(block=True)
                return
            time.sleep(0.005)

    def close(self) -> None:
        """End the spawner (running instances are left running) and reap it."""
        with self._lock:
            self._stop_process()
            self._dead = self._dead or "the spawner is closed"

    def __enter__(self) -> Spawner:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """The re-exec entry point: `python -m jaula.daemon.spawner --fd N --factory MOD:NAME [--args JSON]`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m jaula.daemon.spawner",
                                description="jaulad's spawner (started by jaulad; not for people)")
    p.add_argument("--fd", type=int, required=True, help="its end of a SOCK_SEQPACKET socketpair")
    p.add_argument("--factory", required=True, help="module:name of the function that builds the driver")
    p.add_argument("--args", default="{}", help="JSON object of keyword arguments for the factory")
    p.add_argument("--hold-fd", type=int, action="append", default=[],
                   help="an fd to keep open for life, not passed on to what it starts (jaulad's root lock)")
    ns = p.parse_args(argv)
    for fd in ns.hold_fd:
        try:
            os.set_inheritable(fd, False)  # held here; the instances' inits must not inherit it
        except OSError as e:
            print(f"jaula spawner: --hold-fd {fd}: {os.strerror(e.errno or errno.EBADF)}", file=sys.stderr)
            return 2
    try:
        sock = socket.socket(fileno=ns.fd)
    except OSError as e:
        print(f"jaula spawner: fd {ns.fd}: {os.strerror(e.errno or errno.EBADF)}", file=sys.stderr)
        return 2
    if sock.type != socket.SOCK_SEQPACKET:
        print(f"jaula spawner: fd {ns.fd} is not a SOCK_SEQPACKET socket", file=sys.stderr)
        return 2
    try:
        make = _resolve(ns.factory)
        args = json.loads(ns.args)
    except Exception as e:  # noqa: BLE001
        _send(sock, {"id": 0, "ok": False, "error": _error(e)})
        return 1
    _serve(sock, make, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
