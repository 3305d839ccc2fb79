"""The interactive console of a system instance (issue 4 item 3) through a real jaulad, a real
busybox instance and `jaula console` on a real pty: the init's console is a pty whose master the
console keeper holds (jaula.daemon.console_keeper).

- attach, type a command, see its output; the terminal's size reaches the shell (stty size);
  ctrl-a q detaches and the instance keeps running; no host fd in the init (/proc/<init>/fd);
  the keeper's socket is 0600.
- `kill -9` of jaulad: the keeper and the instance live on, output printed meanwhile is in the
  log, the next jaulad reconnects to the same keeper (no second one) and attaching works again.
- stop and delete leave no fd of the instance in the keeper (/proc/<keeper>/fd); the console of a
  stopped instance is a clear error; `--show-log` prints the kept output.
- the keeper killed: jaulad starts another one, and an instance started then has a console; a
  stop while attached ends the attach (exit 0).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import stat
import struct
import subprocess
import termios
import time

import pytest

from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root

DETACH = b"\x01q"


class Term:
    """`jaula console NAME` with a pty as its controlling terminal; `read_until` collects its output."""

    def __init__(self, d: Daemon, name: str, rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols, signal_it=False)

        # its own session with this pty as its controlling terminal (resizes signal it)
        self.proc = subprocess.Popen(["setsid", "--ctty", "--wait", *JAULA, "--socket", str(d.socket), "console", name],
                                     stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.seen = b""

    def resize(self, rows: int, cols: int, signal_it: bool = True) -> None:
        # on the master of the client's terminal: the kernel sends SIGWINCH to its foreground group
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, want: bytes, timeout: float = 30.0, poke: bytes | None = None) -> bytes:
        deadline = time.monotonic() + timeout
        next_poke = time.monotonic() + 2
        while want not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{want!r} not seen; the terminal showed:\n{self.seen.decode(errors='replace')}"
            if poke is not None and time.monotonic() > next_poke:
                self.write(poke)
                next_poke = time.monotonic() + 2
            r, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if r:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: the client exited
                    time.sleep(0.05)
        return self.seen

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            os.close(self.master)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _keeper_pid(d: Daemon) -> int:
    """The keeper serving this root: the peer of a connection to its socket (SO_PEERCRED)."""
    import socket

    from jaula.instances.console_pty import connect

    s = connect(str(d.root / "console-keeper.sock"))
    try:
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    finally:
        s.close()
    return pid


def _fd_targets(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _shell_prompt(t: Term, name: str) -> None:
    """The console's shell answers (a line typed until its prompt shows)."""
    t.read_until(b"Attached to")
    t.read_until(f"root@{name}".encode(), poke=b"\r")


def _run(t: Term, command: str, want: bytes) -> None:
    t.write(command.encode() + b"\r")
    t.read_until(want)


def test_console_attach_type_resize_detach_kill9_and_stop(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    d.jaula("launch", "busybox", "k1")
    init = d.note("k1")["pid"]
    keeper = _keeper_pid(d)
    sock = d.root / "console-keeper.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and os.stat(sock).st_uid == 0

    # the init's fds: its console (the instance's own pty, bound on /dev/console) only, nothing of the host
    for target in _fd_targets(init):
        assert target.startswith("/dev/pts/") or target == "/dev/console", f"the init holds {target!r}"
    assert "k1" in _held(d)

    t = Term(d, "k1", rows=24, cols=80)
    try:
        _shell_prompt(t, "k1")
        _run(t, "echo out-$((6*7))", b"out-42")
        _run(t, "stty size", b"24 80")
        t.resize(33, 101)
        time.sleep(0.5)  # the client's SIGWINCH handler sends the resize
        _run(t, "stty size", b"33 101")
        # output printed while jaulad is down: a background job prints it later
        _run(t, "(sleep 4; echo while-$((1+1))-down) & echo started", b"started")
        t.write(DETACH)
        assert t.wait() == 0, t.seen.decode(errors="replace")
    finally:
        t.kill()
    assert d.instances()["k1"]["status"] == "running" and pid_alive(init)

    d.kill(signal.SIGKILL)
    assert pid_alive(init) and pid_alive(keeper)
    time.sleep(6)
    d.start()
    assert d.note("k1")["pid"] == init
    assert _keeper_pid(d) == keeper, "the next jaulad started a second keeper instead of reconnecting"
    assert b"while-2-down" in _console_log(d, "k1")

    t = Term(d, "k1")
    try:
        _shell_prompt(t, "k1")
        _run(t, "echo again-$((7*6))", b"again-42")
        t.write(DETACH)
        assert t.wait() == 0
    finally:
        t.kill()

    # stop: the keeper drops its fds of the instance (the master, its slave, the log, the pidfd)
    before = _fd_targets(keeper)
    assert any("ptmx" in x for x in before), before
    d.jaula("stop", "k1")
    deadline = time.monotonic() + 10
    while any("ptmx" in x or "k1/console.log" in x for x in _fd_targets(keeper)):
        assert time.monotonic() < deadline, f"the keeper still holds: {_fd_targets(keeper)}"
        time.sleep(0.1)
    assert "k1" not in _held(d)

    r = subprocess.run([*JAULA, "--socket", str(d.socket), "console", "k1"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "is stopped" in r.stderr and "jaula start k1" in r.stderr, r
    assert "out-42" in d.jaula("console", "k1", "--show-log")
    d.jaula("delete", "k1")
    assert not any("k1" in x for x in _fd_targets(keeper))


def test_console_keeper_killed_is_started_again(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    first = _keeper_pid(d)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            if _keeper_pid(d) != first:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no new keeper: {d.logs()}"
        time.sleep(0.1)
    d.jaula("launch", "busybox", "k2")
    d.note("k2")
    t = Term(d, "k2")
    try:
        _shell_prompt(t, "k2")
        _run(t, "echo new-keeper-$((2*2))", b"new-keeper-4")
        d.jaula("stop", "k2")  # while attached: the stream ends when the console does
        assert t.wait() == 0, t.seen.decode(errors="replace")
    finally:
        t.kill()
    d.jaula("delete", "k2")


def _held(d: Daemon) -> list[str]:
    from jaula.instances.console_pty import held

    return held(str(d.root / "console-keeper.sock"))


def _console_log(d: Daemon, name: str) -> bytes:
    return subprocess.run([*JAULA, "--socket", str(d.socket), "console", name, "--show-log"], check=True,
                          capture_output=True, timeout=60).stdout
