"""The exec and console routes over a real UNIX socket with the fake backend, whose `exec_start`
runs the command on the host (a shell stands in for the spawner's waiter: same fds, same status
line): the operation and its secret, stdin and its end, stdout/stderr apart, a pty resized, a
signal, the exit code in the operation, a wrong secret or a stream nobody opens, and the
responses checked against docs/openapi.json. What runs inside a real instance is in
tests/e2e/test_jaulad_inside.py."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace
from typing import Any

import pytest

from jaula.client.stream import Stream, relay
from jaula.daemon import exec_api
from jaula.daemon.exec_process import ExecProcess
from jaula.errors import BadState, ConfigError, JaulaError
from tests.unit.test_api import call, create, wait

WAITER = 'sh -c "$0" "$@"; printf \'{"exit": %d}\\n\' $? >&3'


def host_exec(inst: Any, args: list[str], *, env: dict | None = None, user: Any = None, cwd: str | None = None,
              tty: bool = False, width: int = 0, height: int = 0) -> ExecProcess:
    """`exec_process.start`'s fds for a command on the host."""
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    if tty:
        master, slave = os.openpty()
        if width:
            import fcntl
            import struct
            import termios

            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        p = _popen(args, slave, slave, slave, status_w, env, cwd)
        os.close(slave)
        os.close(status_w)
        return ExecProcess(p.pid, None, status_r, master, master, None, True)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    p = _popen(args, in_r, out_w, err_w, status_w, env, cwd)
    for fd in (in_r, out_w, err_w, status_w):
        os.close(fd)
    return ExecProcess(p.pid, None, status_r, in_w, out_r, err_r, False)


def _popen(args: list[str], i: int, o: int, e: int, status: int, env: dict | None, cwd: str | None) -> subprocess.Popen:
    script = WAITER.replace(">&3", f">/dev/fd/{status}")   # dash's >&N takes one digit
    p = subprocess.Popen(["sh", "-c", script, *args], stdin=i, stdout=o, stderr=e, pass_fds=(status,),
                         env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    p.returncode = 0  # reaped by nobody in particular: the test's process ends soon
    return p


@pytest.fixture
def running(api: SimpleNamespace, openapi: dict) -> SimpleNamespace:
    create(api, openapi, "web1")
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state", "/1.0/instances/{name}/state",
                        json={"action": "start"})
    assert status == 202 and wait(api, openapi, body)["status"] == "success"
    api.backend.exec_start = host_exec
    return api


def _exec(api: SimpleNamespace, openapi: dict, command: list[str], **body: Any) -> dict:
    status, resp = call(api, openapi, "POST", "/1.0/instances/web1/exec", "/1.0/instances/{name}/exec",
                        json={"command": command, **body})
    assert status == 202, resp
    op = resp["metadata"]
    assert op["class"] == "websocket" and op["status"] == "running"
    assert op["metadata"]["websocket"] == f"/1.0/operations/{op['id']}/websocket" and op["metadata"]["secret"]
    assert "secret" not in api.client.operation(op["id"])["metadata"]   # never stored
    return op


def test_exec_pipes_stdin_stdout_stderr_and_the_exit_code(running, openapi, monkeypatch) -> None:
    told: list[tuple[str, str]] = []
    monkeypatch.setattr(running.app.state.operations, "on_change", lambda o: told.append((o.id, o.status)))
    op = _exec(running, openapi, ["tr a-z A-Z; echo to-err >&2; exit 7"], environment={"X": "1"})
    r_in, w_in = os.pipe()
    os.write(w_in, b"piped\n")
    os.close(w_in)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    code = relay(running.client.attach(op), tty=False, stdin=r_in, stdout=out_w, stderr=err_w, forward_signals=False)
    os.close(out_w)
    os.close(err_w)
    assert code == 7
    assert os.read(out_r, 100) == b"PIPED\n" and os.read(err_r, 100) == b"to-err\n"
    done = running.client.wait_operation(op["id"], timeout=10)
    assert done["status"] == "success" and done["metadata"] == {"return": 7}
    assert [st for i, st in told if i == op["id"]] == ["running", "success"]   # the event stream hears it
    with pytest.raises(JaulaError, match="rejected WebSocket connection: HTTP 403"):   # a stream is good once
        relay(running.client.attach(op), tty=False, stdin=os.open(os.devnull, os.O_RDONLY), forward_signals=False)


def test_a_pty_is_resized_and_a_signal_reaches_the_command(running, openapi) -> None:
    script = "stty size; read x; stty size; trap 'exit 42' TERM; echo armed; while :; do sleep 0.05; done"
    op = _exec(running, openapi, [script], interactive=True, width=90, height=30)
    stream = running.client.attach(op)
    seen = b""
    while b"30 90" not in seen:
        seen += stream.recv()[1]
    stream.resize(120, 40)
    stream.send_stdin(b"go\n")
    while b"40 120" not in seen:
        seen += stream.recv()[1]
    while b"armed" not in seen:
        seen += stream.recv()[1]
    stream.signal(15)
    assert relay(stream, tty=True, stdin=os.open(os.devnull, os.O_RDONLY), stdout=os.open(os.devnull, os.O_WRONLY)) == 42


def test_refusals_come_before_anything_runs(running, openapi) -> None:
    status, body = call(running, openapi, "POST", "/1.0/instances/nope/exec", "/1.0/instances/{name}/exec",
                        json={"command": ["true"]})
    assert status == 404
    status, body = call(running, openapi, "POST", "/1.0/instances/web1/exec", "/1.0/instances/{name}/exec",
                        json={"command": [], "user": -1, "cwd": "rel"})
    assert status == 400 and len(body["problems"]) == 3, body
    with pytest.raises(ConfigError):
        exec_api.check(exec_api.ExecRequest(command=["x\0y"]))
    running.client.freeze("web1")  # frozen: the way back is unfreeze, not start
    status, body = call(running, openapi, "POST", "/1.0/instances/web1/exec", "/1.0/instances/{name}/exec",
                        json={"command": ["true"]})
    assert status == 409 and "is frozen" in body["error"] and body["error"].endswith("(jaula unfreeze web1)")
    running.client.unfreeze("web1")
    running.client.stop("web1", force=True)
    status, body = call(running, openapi, "POST", "/1.0/instances/web1/exec", "/1.0/instances/{name}/exec",
                        json={"command": ["true"]})
    assert status == 409 and "is stopped" in body["error"] and body["error"].endswith("(jaula start web1)")
    assert not any(o["class"] == "websocket" for o in running.client.operations())


def test_a_stream_nobody_opens_fails_its_operation(running, openapi, monkeypatch) -> None:
    monkeypatch.setattr(exec_api, "CONNECT_TIMEOUT_S", 0.2)
    op = _exec(running, openapi, ["true"])
    done = running.client.wait_operation(op["id"], timeout=10, check=False)
    assert done["status"] == "failure" and "No client connected" in done["err"]
    assert not running.app.state.exec_sessions


def test_a_command_that_cannot_start_says_why(running, openapi) -> None:
    def refuse(*a: Any, **kw: Any) -> None:
        raise BadState("cannot exec in instance 'web1': it is frozen")

    running.backend.exec_start = refuse
    op = _exec(running, openapi, ["true"])
    with pytest.raises(BadState, match="it is frozen"):
        relay(running.client.attach(op), tty=False, stdin=os.open(os.devnull, os.O_RDONLY), forward_signals=False)
    done = running.client.wait_operation(op["id"], timeout=10, check=False)
    assert done["status"] == "failure" and "frozen" in done["err"]


def test_a_wrong_secret_is_refused(running, openapi) -> None:
    op = _exec(running, openapi, ["true"])
    with pytest.raises(JaulaError, match="rejected WebSocket connection: HTTP 403"):
        Stream(running.socket, op["metadata"]["websocket"], "not-it").recv()
    relay(running.client.attach(op), tty=False, stdin=os.open(os.devnull, os.O_RDONLY), forward_signals=False)
