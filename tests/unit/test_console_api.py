"""The console websocket's attach (console_api.py) over a real UNIX socket without root: the fake
backend's instance, a real console keeper (started by KeeperService as jaulad starts it) holding
a real pty whose slave a shell holds, as a system instance's init does.

- attach: typed input reaches the shell, its output comes back (through the log the keeper fills),
  a resize reaches the pty (stty size), the stream ends with {"type": "exit"} when the console's
  last holder is gone;
- refused in a frame, saying why: a stopped instance, an app instance, an instance whose console
  no keeper holds; without `attach` the stream stays read-only (`jaula logs -f`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jaula import frames
from jaula.daemon.console_keeper_service import KeeperService
from jaula.instances import console_pty
from tests.unit.test_api import call, create, wait


@pytest.fixture
def consoles(api: SimpleNamespace, openapi: dict, tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    keeper = KeeperService(root)
    assert keeper.start()
    logs = tmp_path / "logs"
    api.backend.console_log = lambda name: str(logs / name / "console.log")
    api.backend.console_keeper = keeper
    children: list[subprocess.Popen] = []

    def start(name: str, script: str) -> subprocess.Popen:
        """A running instance `name` whose console a shell holds, handed to the keeper."""
        create(api, openapi, name)
        status, body = call(api, openapi, "PUT", f"/1.0/instances/{name}/state", "/1.0/instances/{name}/state",
                            json={"action": "start"})
        assert status == 202 and wait(api, openapi, body)["status"] == "success"
        (logs / name).mkdir(parents=True)
        master, slave = os.openpty()
        child = subprocess.Popen(["/bin/sh", "-c", script], stdin=slave, stdout=slave, stderr=slave,
                                 start_new_session=True)
        children.append(child)
        os.close(slave)
        log = os.open(logs / name / "console.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        pidfd = os.pidfd_open(child.pid)
        s = console_pty.connect(keeper.path)
        try:
            console_pty.hand_over(s, name, master, log, pidfd)
        finally:
            s.close()
            for fd in (master, log, pidfd):
                os.close(fd)
        deadline = time.monotonic() + 10
        while name not in keeper.held():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return child

    try:
        yield SimpleNamespace(start=start, keeper=keeper)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
            c.wait(10)
        keeper.close()


def _until(stream, want: bytes, timeout: float = 15.0) -> tuple[bytes, dict | None]:
    """Output until `want` shows (or a control message comes): (output, control message)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while want not in seen:
        assert time.monotonic() < deadline, f"{want!r} not seen in {seen!r}"
        frame = stream.recv()
        assert frame is not None, f"the stream closed; seen {seen!r}"
        channel, payload = frame
        if channel == frames.CONTROL:
            return seen, json.loads(payload)
        seen += payload
    return seen, None


def test_attach_reads_writes_resizes_and_ends_with_the_console(api, consoles) -> None:
    child = consoles.start("c1", "read line; echo got-$line; stty size; read line; stty size; read x")
    stream = api.client.console("c1", attach=True)
    try:
        time.sleep(0.2)
        stream.resize(101, 33)
        stream.send_stdin(b"hello\r")
        out, ctl = _until(stream, b"33 101")
        assert ctl is None and b"got-hello" in out
        stream.resize(90, 20)
        time.sleep(0.2)
        stream.send_stdin(b"\r")
        _until(stream, b"20 90")
        stream.send_stdin(b"bye\r")   # the shell ends: no one holds the pty, the keeper drops it
        child.wait(10)
        _, ctl = _until(stream, b"\0never")
        assert ctl == {"type": "exit", "code": 0}
    finally:
        stream.close()


def _refusal(api, name: str) -> str:
    stream = api.client.console(name, attach=True)
    try:
        _, ctl = _until(stream, b"\0never")
    finally:
        stream.close()
    assert ctl is not None and ctl["type"] == "error", ctl
    return ctl["message"]


def test_attach_refusals_say_why_and_follow_stays_read_only(api, openapi, consoles) -> None:
    consoles.start("c2", "echo ready; sleep 30")
    create(api, openapi, "stopped1")
    assert "Instance 'stopped1' is stopped" in _refusal(api, "stopped1")
    assert "jaula start stopped1" in _refusal(api, "stopped1")
    create(api, openapi, "app1", mode="app")
    status, body = call(api, openapi, "PUT", "/1.0/instances/app1/state", "/1.0/instances/{name}/state",
                        json={"action": "start"})
    assert status == 202 and wait(api, openapi, body)["status"] == "success"
    assert "Instance 'app1' is an app instance" in _refusal(api, "app1")
    # a running system instance the keeper does not hold (started while none ran)
    create(api, openapi, "c4")
    status, body = call(api, openapi, "PUT", "/1.0/instances/c4/state", "/1.0/instances/{name}/state",
                        json={"action": "start"})
    assert status == 202 and wait(api, openapi, body)["status"] == "success"
    assert "no console held by the console keeper" in _refusal(api, "c4")
    # read-only follow: input is not delivered, the output still comes
    follow = api.client.console("c2", replay=True)
    try:
        follow.send_stdin(b"typed\r")
        _until(follow, b"ready")
        time.sleep(0.5)
        assert b"typed" not in Path(api.backend.console_log("c2")).read_bytes()  # not even the pty's echo
    finally:
        follow.close()
    assert "c2" in consoles.keeper.held()
