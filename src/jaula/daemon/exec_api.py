"""Commands inside an instance through the API (incus's exec): mounted into create_app's app.

- POST /1.0/instances/{name}/exec {command, environment, user, group, cwd, interactive, width,
  height}: checked first (the instance must be running), then an operation of class websocket,
  status running, whose metadata names its stream: {"websocket": "/1.0/operations/ID/websocket"}.
  The response alone carries the stream's secret (metadata.secret; never stored).
- WebSocket /1.0/operations/{id}/websocket?secret=S: the command starts when its client connects
  (no output is lost) and its I/O goes over the socket in jaula.frames' framing; its exit code
  ends the stream and the operation: {"return": N} in its metadata. A stream no client connects
  to within CONNECT_TIMEOUT_S fails its operation.

The command runs as the driver's exec runs it (every namespace joined, the instance's cgroup,
capabilities, seccomp, no host fd): the spawner forks a waiter for it (exec_process.py), so a
long command blocks neither the spawner nor any worker thread; jaulad moves the bytes in its
event loop. A client that goes away hangs the command up (SIGHUP), as a closed terminal does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import signal
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field

from jaula import frames
from jaula.daemon import fdstream
from jaula.daemon import schemas as s
from jaula.errors import BadState, ConfigError, JaulaError

log = logging.getLogger("jaula.exec")

CONNECT_TIMEOUT_S = 30.0   # a stream nobody attaches to fails after this
DRAIN_TIMEOUT_S = 2.0      # after the exit, output still buffered (or held by a background child)
MAX_ID = 65535             # an instance's ids: 0..65535 (instances.model.ID_RANGE)


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(description="the program and its arguments, looked up in the instance's PATH")
    environment: dict[str, str] = Field(default={}, description="added to the instance's environment")
    user: int | None = Field(default=None, description="uid inside the instance; default: the init's (root)")
    group: int | None = Field(default=None, description="gid inside the instance; default 0 (or the init's)")
    cwd: str | None = Field(default=None, description="absolute path inside; default: the init's")
    interactive: bool = Field(default=False, description="a pty inside the instance (stdout and stderr merged)")
    width: int = Field(default=0, ge=0, le=65535, description="the pty's columns (0: the kernel's default)")
    height: int = Field(default=0, ge=0, le=65535, description="the pty's rows")


def check(req: ExecRequest) -> None:
    """Every problem of a request at once (ConfigError), before anything runs."""
    problems: list[str] = []
    if not req.command:
        problems.append("command: give the program to run, e.g. [\"/bin/sh\", \"-c\", \"id\"]")
    if any("\0" in a for a in req.command):
        problems.append("command: an argument holds a NUL byte")
    for k, v in req.environment.items():
        if not k or "=" in k or "\0" in k or "\0" in v:
            problems.append(f"environment: {k!r}: a name is non-empty, without '=' or NUL (nor NUL in its value)")
    for what, v in (("user", req.user), ("group", req.group)):
        if v is not None and not 0 <= v <= MAX_ID:
            problems.append(f"{what}: {v} is not an id of the instance (0 to {MAX_ID})")
    if req.cwd is not None and (not req.cwd.startswith("/") or "\0" in req.cwd):
        problems.append(f"cwd: {req.cwd!r} is not an absolute path")
    if problems:
        raise ConfigError(problems)


class _Session:
    def __init__(self, op_id: str, secret: str, inst: Any, req: ExecRequest, timer: asyncio.TimerHandle) -> None:
        self.op_id, self.secret, self.inst, self.req, self.timer = op_id, secret, inst, req, timer


def mount(app: FastAPI, db: Any, backend: Any, instance: Callable[[Any], Any]) -> None:
    """Add the exec routes; `instance(row)` is the driver's model of a stored instance."""
    sessions: dict[str, _Session] = {}

    def told(op: Any) -> Any:
        """Tell the event stream (Operations.on_change) of the operation's new status."""
        tell = getattr(getattr(app.state, "operations", None), "on_change", None)
        if tell is not None:
            try:
                tell(op)
            except Exception:  # a listener's trouble never fails the command
                log.exception("exec operation %s: change not told", op.id)
        return op

    def finish(op_id: str, code: int | None, error: str | None) -> None:
        try:
            if error is None:
                told(db.update_operation(op_id, status="success", metadata={"return": code}))
            else:
                told(db.update_operation(op_id, status="failure", error=error, metadata={"return": code}))
        except JaulaError:
            log.exception("exec operation %s: status not recorded", op_id)

    def expire(op_id: str) -> None:
        if sessions.pop(op_id, None) is not None:
            finish(op_id, None, f"No client connected to the command's websocket within {CONNECT_TIMEOUT_S:.0f} s")

    @app.post("/1.0/instances/{name}/exec", response_model=s.Async, status_code=202, tags=["instances"],
              summary="Run a command inside a running instance; its I/O goes over the operation's websocket")
    async def exec_instance(name: str, body: ExecRequest) -> dict:
        row = db.get_instance(name)
        check(body)
        if row.status != "running":
            again = "unfreeze" if row.status == "frozen" else "start"
            raise BadState(f"Instance {name!r} is {row.status}: a command runs only in a running instance "
                           f"(jaula {again} {name})")
        if not hasattr(backend, "exec_start"):
            raise BadState("this jaulad's backend cannot run commands inside instances")
        inst = instance(row)
        op = db.create_operation("websocket", f"Executing a command in instance {name}",
                                 resources={"instances": [name]}, status="running",
                                 metadata={"command": list(body.command), "interactive": body.interactive})
        ws = f"/1.0/operations/{op.id}/websocket"
        op = told(db.update_operation(op.id, metadata={**op.metadata, "websocket": ws}))
        secret = secrets.token_urlsafe(24)
        timer = asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, expire, op.id)
        sessions[op.id] = _Session(op.id, secret, inst, body, timer)
        from jaula.daemon.api import _op_out

        out = _op_out(op)
        out.metadata = {**out.metadata, "secret": secret}
        return {"type": "async", "status": "Operation created", "status_code": 100,
                "operation": f"/1.0/operations/{op.id}", "metadata": out}

    @app.websocket("/1.0/operations/{op_id}/websocket")
    async def exec_stream(websocket: WebSocket, op_id: str, secret: str = "") -> None:
        sess = sessions.get(op_id)
        if sess is None or not secrets.compare_digest(sess.secret, secret):
            await websocket.close(code=4004, reason="no such stream, or a wrong secret (each stream is used once)")
            return
        sessions.pop(op_id, None)
        sess.timer.cancel()
        await websocket.accept()
        code, error = await _run(websocket, backend, sess)
        finish(op_id, code, error)

    app.state.exec_sessions = sessions


async def _run(ws: WebSocket, backend: Any, sess: _Session) -> tuple[int | None, str | None]:
    """Start the command, move its bytes, and tell the client how it ended."""
    req = sess.req
    user = None
    if req.user is not None or req.group is not None:
        user = (req.user or 0, req.group or 0)
    loop = asyncio.get_running_loop()
    try:
        proc = await loop.run_in_executor(None, functools.partial(
            backend.exec_start, sess.inst, list(req.command), env=dict(req.environment), user=user, cwd=req.cwd,
            tty=req.interactive, width=req.width, height=req.height))
    except JaulaError as exc:
        await _say(ws, frames.control("error", message=str(exc), exit_code=exc.exit_code))
        return None, str(exc)
    try:
        code, err = await _pump(ws, proc)
    finally:
        proc.close()
    if err is not None:
        await _say(ws, frames.control("error", message=str(err), exit_code=_shell_code(err)))
        return None, str(err)
    await _say(ws, frames.control("exit", code=code))
    return code, None


def _shell_code(err: JaulaError) -> int:
    """What a shell exits with when it cannot run a program: 127 not found, 126 not executable."""
    text = str(err)
    if "executable file not found" in text or "no such file or directory" in text:
        return 127
    if "permission denied" in text:
        return 126
    return err.exit_code


async def _say(ws: WebSocket, message: bytes) -> None:
    with contextlib.suppress(Exception):
        await ws.send_bytes(message)
        await ws.close(code=1000)


async def _pump(ws: WebSocket, proc: Any) -> tuple[int | None, JaulaError | None]:
    from jaula.daemon.exec_process import parse_status

    for fd in {proc.stdout, proc.status} | ({proc.stderr} if proc.stderr is not None else set()):
        fdstream.nonblocking(fd)
    if proc.stdin is not None:
        fdstream.nonblocking(proc.stdin)

    async def copy_out(fd: int, channel: int) -> None:
        while data := await fdstream.read(fd):
            await ws.send_bytes(frames.encode(channel, data))

    async def status() -> bytes:
        got = b""
        while chunk := await fdstream.read(proc.status):
            got += chunk
        return got

    outs = [asyncio.create_task(copy_out(proc.stdout, frames.STDOUT))]
    if proc.stderr is not None:
        outs.append(asyncio.create_task(copy_out(proc.stderr, frames.STDERR)))
    waiter = asyncio.create_task(status())
    inputs = asyncio.create_task(_copy_in(ws, proc))
    try:
        raw = await waiter
        _, pending = await asyncio.wait(outs, timeout=DRAIN_TIMEOUT_S)
        for t in pending:  # a background child keeps the pipe open: its output is not waited for
            t.cancel()
        return parse_status(raw)
    finally:
        inputs.cancel()
        for t in outs:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(inputs, *outs, return_exceptions=True)


async def _copy_in(ws: WebSocket, proc: Any) -> None:
    """The client's frames: stdin bytes, its end, resizes and signals. A client gone: SIGHUP."""
    writable = True
    try:
        while True:
            got = await ws.receive()
            if got["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(got.get("code", 1000))
            try:
                channel, payload = frames.decode(got["bytes"] if got.get("bytes") is not None else got.get("text", ""))
                if channel == frames.STDIN:
                    if not payload:
                        proc.close_stdin()
                        writable = False
                    elif writable and proc.stdin is not None:
                        try:
                            await fdstream.write_all(proc.stdin, payload)
                        except (BrokenPipeError, OSError):
                            writable = False  # the command closed its stdin: the rest is dropped
                elif channel == frames.CONTROL:
                    ctl = frames.parse_control(payload)
                    if ctl["type"] == "resize":
                        proc.resize(ctl["width"], ctl["height"])
                    else:
                        proc.signal(ctl["signal"])
            except frames.FrameError as exc:
                log.warning("exec stream: %s (ignored)", exc)
    except (WebSocketDisconnect, RuntimeError):
        proc.signal(signal.SIGHUP)

