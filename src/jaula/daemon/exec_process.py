"""One command run inside an instance for the API: the fds jaulad keeps of it, and how it starts.

jaulad makes the pipes (or, with a pty, a private listening socket), hands the command's ends to
the spawner with the request (SCM_RIGHTS), and the spawner forks a waiter that runs the driver's
exec and answers at once (spawner.py, ContainerDriver.spawn_exec): jaulad then owns

  stdin  the write end of the command's stdin pipe, or the pty's master
  stdout the read end of its stdout pipe, or the pty's master
  stderr the read end of its stderr pipe (None with a pty)
  status a pipe on which the waiter writes one JSON line when it ends: {"exit": N} or {"error": ...}
  pidfd  of the waiter, which forwards HUP INT QUIT USR1 USR2 TERM WINCH to the command

The pty is allocated *inside* the instance, from its own devpts, as runc's console socket does
(jaula.oci.init.console), and only the master comes out: the instance never holds a host pty
or any host fd, and /dev/pts/N inside is the instance's own device (a host pty's slave would
give the instance an fd of the host's devpts, and its ioctls, TIOCSTI included).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import struct
import tempfile
import termios
from collections.abc import Callable
from typing import Any

from jaula import errors
from jaula.errors import JaulaError

#: seconds the pty's master may take to come back from the instance
MASTER_TIMEOUT_S = 30.0


class ExecProcess:
    """The fds of one running command (see the module's doc); `close()` closes them all."""

    def __init__(self, pid: int, pidfd: int | None, status: int, stdin: int, stdout: int,
                 stderr: int | None, tty: bool) -> None:
        self.pid, self.pidfd, self.status, self.tty = pid, pidfd, status, tty
        self.stdin: int | None = stdin
        self.stdout, self.stderr = stdout, stderr

    def resize(self, width: int, height: int) -> None:
        """TIOCSWINSZ on the master: the kernel sends SIGWINCH to the pty's foreground group."""
        if self.tty and self.stdout >= 0:
            fcntl.ioctl(self.stdout, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def signal(self, signum: int) -> None:
        """Send `signum` to the command: through its waiter for the signals the waiter forwards,
        else to the waiter's children (the command: the waiter is its subreaper)."""
        from jaula.oci.foreground import FORWARDED

        if signum in FORWARDED and self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                from jaula.linux.proc import pidfd_send_signal

                pidfd_send_signal(self.pidfd, signum)
            return
        for pid in _children(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def close_stdin(self) -> None:
        """End of stdin: the pipe's write end closes (with a pty there is no such thing)."""
        if not self.tty and self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    def close(self) -> None:
        fds = {self.status, self.stdout}
        fds |= {fd for fd in (self.stdin, self.stderr, self.pidfd) if fd is not None}
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stdin = self.stderr = self.pidfd = None
        self.stdout = self.status = -1


def parse_status(data: bytes) -> tuple[int | None, JaulaError | None]:
    """(exit code, None) or (None, the error) from the waiter's status line; an empty one means
    the waiter died without a word (killed)."""
    line = data.decode(errors="replace").strip()
    if not line:
        return None, JaulaError("the command's waiter ended without reporting (killed?): its exit code is unknown")
    try:
        msg = json.loads(line.splitlines()[0])
    except ValueError:
        return None, JaulaError(f"the command's waiter said {line[:200]!r}")
    if isinstance(msg.get("exit"), int):
        return int(msg["exit"]), None
    cls = getattr(errors, str(msg.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, JaulaError)) or cls is errors.SyscallError:
        cls = JaulaError
    text = str(msg.get("error") or "the command could not run")
    return None, (cls([text]) if cls is errors.ConfigError else cls(text))


def start(call: Callable[..., Any], inst: Any, args: list[str], *, env: dict[str, str] | None = None,
          user: tuple[int, int] | None = None, cwd: str | None = None, tty: bool = False,
          width: int = 0, height: int = 0) -> ExecProcess:
    """Run `args` in `inst` through the spawner (`call` is SpawnerBackend.call); blocking (run it
    in an executor). Nothing is left open when it fails."""
    mine: list[int] = []      # jaulad's ends, closed on failure
    theirs: list[int] = []    # the command's ends, closed once handed over
    tmp = listener = None
    try:
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        mine.append(status_r)
        theirs.append(status_w)
        if tty:
            tmp = tempfile.mkdtemp(prefix="jaula-exec-")   # 0700, root's: nobody else can connect
            path = os.path.join(tmp, "console.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            listener.bind(path)
            listener.listen(1)
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            theirs[:0] = [null, null, null]
            console = path
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            mine += [in_w, out_r, err_r]
            theirs[:0] = [in_r, out_w, err_w]
            console = None
        try:
            reply = call("exec", inst, pass_fds=theirs, args=list(args), env=env, user=list(user) if user else None,
                         cwd=cwd, tty=tty, width=width, height=height, console_socket=console)
        finally:
            for fd in set(theirs):
                os.close(fd)
            theirs = []
        pidfd = reply.get("pidfd")
        if pidfd is not None:
            mine.append(pidfd)
        pid = int(reply["pid"])
        if tty:
            assert listener is not None
            master = _receive_master(listener, status_r)
            mine.append(master)
            proc = ExecProcess(pid, pidfd, status_r, master, master, None, True)
        else:
            proc = ExecProcess(pid, pidfd, status_r, in_w, out_r, err_r, False)
        mine = []
        return proc
    finally:
        for fd in mine + theirs:
            with contextlib.suppress(OSError):
                os.close(fd)
        if listener is not None:
            listener.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _receive_master(listener: socket.socket, status_r: int) -> int:
    """The pty master the command's setup sends to the console socket, or the waiter's error."""
    from jaula.oci import sync

    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(status_r, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(int(MASTER_TIMEOUT_S * 1000))}
    if listener.fileno() in ready:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(MASTER_TIMEOUT_S)
            _, _, fds = sync.recv(conn, with_fds=True)
        if fds:
            for extra in fds[1:]:
                os.close(extra)
            return fds[0]
    if status_r in ready or listener.fileno() in ready:
        _, err = parse_status(_read_all(status_r))
        raise err or JaulaError("the command ended before its pty was set up")
    raise JaulaError(f"the command's pty did not come back from the instance in {MASTER_TIMEOUT_S:.0f} s")


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
