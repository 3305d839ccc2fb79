"""The console keeper process (jaula.daemon.console_keeper) on its own, without root: a real keeper
over a temporary root, a real pty (openpty) whose slave a child process holds as an init would,
the protocol of jaula.instances.console_pty.

- HOLD: what the slave side writes is drained into the log; GET hands a dup of the master, whose
  input reaches the child; the child's end drops every fd of it (the keeper's /proc/PID/fd).
- the socket is 0600; an unknown name is a clear error; OWNER: the keeper exits once jaulad's
  connection closes and it holds nothing, and stays while it holds a console.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.errors import BadState
from jaula.instances import console_pty
from jaula.oci import sync


def _wait(what: str, ok, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Keeper:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = str(root / console_pty.SOCKET_NAME)
        self.proc = subprocess.Popen([sys.executable, "-m", "jaula.daemon.console_keeper", "--root", str(root)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

        def up() -> bool:
            try:
                console_pty.connect(self.sock).close()
                return True
            except OSError:
                assert self.proc.poll() is None, "the keeper exited"
                return False
        _wait("the keeper's socket", up)

    def fds(self) -> list[str]:
        out = []
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                out.append(os.readlink(f"/proc/{self.proc.pid}/fd/{fd}"))
            except OSError:
                pass
        return out

    def hold(self, name: str, master: int, log: int, pidfd: int) -> None:
        s = console_pty.connect(self.sock)
        try:
            console_pty.hand_over(s, name, master, log, pidfd)
        finally:
            s.close()


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[Keeper]:
    k = Keeper(tmp_path)
    try:
        yield k
    finally:
        if k.proc.poll() is None:
            k.proc.kill()
        k.proc.wait(10)


def _child_on(slave: int, script: str) -> subprocess.Popen:
    """A shell whose stdio is the pty's slave, as an init's console is."""
    return subprocess.Popen(["/bin/sh", "-c", script], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)


def test_hold_drain_input_and_drop(keeper: Keeper, tmp_path: Path) -> None:
    assert stat.S_IMODE(os.stat(keeper.sock).st_mode) == 0o600
    master, slave = os.openpty()
    child = _child_on(slave, "echo hello-$((6*7)); read line; echo got-$line; sleep 30")
    os.close(slave)
    log_path = tmp_path / "console.log"
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    pidfd = os.pidfd_open(child.pid)
    try:
        keeper.hold("c1", master, log, pidfd)
    finally:
        for fd in (master, log, pidfd):
            os.close(fd)
    try:
        _wait("the child's output in the log", lambda: b"hello-42" in log_path.read_bytes())
        assert console_pty.held(keeper.sock) == ["c1"]
        dup = console_pty.fetch_master(keeper.sock, "c1")
        try:
            os.write(dup, b"abc\r")
        finally:
            os.close(dup)
        _wait("the input's answer in the log", lambda: b"got-abc" in log_path.read_bytes())
        assert any("ptmx" in t or "/dev/pts/" in t for t in keeper.fds())
    finally:
        child.kill()
        child.wait(10)
    _wait("the keeper to drop c1", lambda: console_pty.held(keeper.sock) == [])
    left = keeper.fds()
    assert not any("ptmx" in t or "/dev/pts/" in t or t.endswith("console.log") or "pidfd" in t for t in left), left
    with pytest.raises(BadState, match="no console held"):
        console_pty.fetch_master(keeper.sock, "c1")


def test_keeper_lives_while_jaulad_or_a_console_holds_it(keeper: Keeper, tmp_path: Path) -> None:
    owner = console_pty.connect(keeper.sock)
    sync.send(owner, "OWNER")
    verb, pid, _ = sync.recv(owner)
    assert (verb, int(pid)) == ("KEEPER", keeper.proc.pid)
    master, slave = os.openpty()
    child = _child_on(slave, "sleep 30")
    os.close(slave)
    log = os.open(tmp_path / "c.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    pidfd = os.pidfd_open(child.pid)
    keeper.hold("c2", master, log, pidfd)
    for fd in (master, log, pidfd):
        os.close(fd)
    _wait("c2 held", lambda: console_pty.held(keeper.sock) == ["c2"])
    owner.close()  # jaulad killed: the keeper stays for the running console
    time.sleep(0.5)
    assert keeper.proc.poll() is None
    child.kill()
    child.wait(10)
    _wait("the keeper to exit", lambda: keeper.proc.poll() is not None)  # nothing held, no jaulad
    assert keeper.proc.returncode == 0


def test_the_keeper_caps_the_log_it_writes(keeper: Keeper, tmp_path: Path) -> None:
    """A chatty console stays bounded on disk without jaulad (which caps only every 5 s, and not at all while down)."""
    from jaula.daemon import console_keeper, console_log

    assert console_keeper.KEEPER_CAP_BYTES == console_log.KEEPER_CAP_BYTES  # the keeper's own copy (no import)
    master, slave = os.openpty()
    child = _child_on(slave, "i=0; while [ $i -lt 24000 ]; do echo \"line $i $(printf '%080d' 0)\"; i=$((i+1)); done; "
                             "echo all-done; sleep 30")
    os.close(slave)
    log_path = tmp_path / "chatty.log"
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    pidfd = os.pidfd_open(child.pid)
    keeper.hold("chatty", master, log, pidfd)
    for fd in (master, log, pidfd):
        os.close(fd)
    try:
        _wait("the burst in the log", lambda: b"all-done" in console_log.tail(log_path), timeout=60)
        st = os.stat(log_path)
        assert st.st_size > 2 * 1024 * 1024, st  # ~2.2 MiB written
        assert st.st_blocks * 512 <= console_log.KEEPER_CAP_BYTES + console_log.KEEP + 16 * st.st_blksize, st
        assert b"line 23999" in console_log.tail(log_path)
    finally:
        child.kill()
        child.wait(10)
