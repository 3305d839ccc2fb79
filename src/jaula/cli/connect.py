"""How `jaula` reaches jaulad: the UNIX socket, or a remote over TCP with a token; and jaulad
started on first use.

When no jaulad answers on the socket, the caller is root, nothing named the place to look
explicitly (`--socket` on the command line, `--remote`, `$JAULA_REMOTE`), and the socket is the
default one or `$JAULA_ROOT` is set (a test or trial root: `JAULA_ROOT=/tmp/r
JAULA_SOCKET=/tmp/r/jaula.sock jaula list`), jaula starts jaulad itself with the same
environment (so `$JAULA_ROOT` and `$JAULA_SOCKET` mean the same to both), says so on stderr, and
waits until it answers. `$JAULA_NO_AUTOSTART=1` turns this off.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jaula.client import DEFAULT_SOCKET, Client, default_socket
from jaula.errors import JaulaError

DEFAULT_LOG = "/var/log/jaula/jaulad.log"
START_WAIT_S = 90.0  # jaulad may first wait for a killed one's spawner (its root lock, 60 s at most)


def connect(socket_path: str | None, remote: str | None, token_file: str | None, *,
            may_start: bool) -> Client:
    """The client for the CLI's options; jaulad started first when `may_start` and none answers."""
    if remote:
        from jaula.client.remote import read_token_file

        token = read_token_file(token_file) if token_file else os.environ.get("JAULA_TOKEN") or None
        if not token:
            raise JaulaError("A remote needs its token: give --token-file FILE or set JAULA_TOKEN "
                             "(jaulad --show-token prints it on jaulad's host)")
        return Client(remote=remote, token=token)
    path = socket_path or default_socket()
    if may_start and autostarts(path) and not answers(path):
        with _start_lock(path):  # two jaula at once start one jaulad, not two
            if not answers(path):
                start_jaulad(path)
    return Client(path)


@contextlib.contextmanager
def _start_lock(path: str) -> Iterator[None]:
    """flock on "<socket>.start.lock", next to the socket."""
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.start.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def autostarts(path: str) -> bool:
    """Whether jaula may start jaulad for socket `path`: as root, on the default socket, or on
    another one when $JAULA_ROOT says which root that jaulad serves (a socket set alone may be
    a jaulad elsewhere that is down: starting one on /var/lib/jaula would be a surprise)."""
    if os.geteuid() != 0 or os.environ.get("JAULA_NO_AUTOSTART") == "1":
        return False
    return path == DEFAULT_SOCKET or bool(os.environ.get("JAULA_ROOT"))


def answers(path: str) -> bool:
    """Whether something accepts connections on the UNIX socket `path`."""
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def log_path() -> Path:
    """$JAULA_ROOT/jaulad.log for a jaulad on another root (tests, trials), else /var/log/jaula/jaulad.log."""
    root = os.environ.get("JAULA_ROOT")
    return Path(root) / "jaulad.log" if root else Path(DEFAULT_LOG)


def start_jaulad(path: str) -> int:
    """Start jaulad on socket `path` in its own session, its output appended to `log_path()`;
    returns its pid once it answers (JaulaError with its log's end if it does not)."""
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    root = os.environ.get("JAULA_ROOT")
    if root:
        Path(root).mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "jaula.daemon.main", "--socket", path]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                cwd="/")
    finally:
        os.close(fd)
    deadline = time.monotonic() + START_WAIT_S
    while not answers(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-10:])
            raise JaulaError(f"jaulad did not start (see {log}):\n{tail.rstrip()}")
        time.sleep(0.05)
    print(f"jaula: started jaulad (pid {proc.pid}), log in {log}", file=sys.stderr)
    return proc.pid
