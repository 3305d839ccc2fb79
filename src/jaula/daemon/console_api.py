"""The console and the output log through the API, mounted by inside_api.

- GET /1.0/instances/{name}/console: the kept console output (its last 128 KiB, text/plain).
- GET /1.0/instances/{name}/logs: the instance's output log, the same bytes (a system
  instance's console output, an app's stdout and stderr), for `jaula logs`.
- WebSocket /1.0/instances/{name}/console?attach=true&replay=false: attach to a running system
  instance's console, read and write (jaula.frames: its output on channel 1, input on channel 0,
  {"type": "resize"} on channel 3 sets the pty's window size). The output comes from the console
  log, which the console keeper fills from the pty's master (console_keeper.py), so an attach
  neither steals bytes from the log nor misses what came while no one was attached; the input
  and the resize go to a dup of the master the keeper hands over. When the instance stops the
  stream ends with {"type": "exit", "code": 0}; a stopped instance, an app instance or one
  started while no keeper ran gets {"type": "error", "message": ...} and the stream closes.
- WebSocket /1.0/instances/{name}/console?replay=false (attach=false): follow the console log
  only, read-only (`jaula logs -f`); with replay=true the kept output comes first.

jaulad caps every instance's log to its last 128 KiB every CAP_INTERVAL_S (console_log.cap).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import select
import struct
import termios
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from jaula import frames
from jaula.daemon import console_log, fdstream
from jaula.errors import BadState, JaulaError

log = logging.getLogger("jaula.console")

FOLLOW_INTERVAL_S = 0.2   # how often a follower looks at the log
ATTACH_INTERVAL_S = 0.03  # the same while attached (typed keys echo within this)
INPUT_TIMEOUT_S = 5.0     # typed input the console does not take within this is dropped
_TEXT: dict[int | str, dict[str, Any]] = {200: {"description": "the last 128 KiB of the instance's console output",
                                                "content": {"text/plain": {}}}}


def mount(app: FastAPI, db: Any, backend: Any) -> None:
    def path_of(name: str) -> str:
        db.get_instance(name)  # NotFound first
        if not hasattr(backend, "console_log"):
            raise BadState("this jaulad's backend keeps no console log")
        return str(backend.console_log(name))

    def kept(name: str) -> Response:
        path = path_of(name)
        console_log.cap(path)
        return Response(console_log.tail(path), media_type="text/plain")

    @app.get("/1.0/instances/{name}/console", tags=["instances"], responses=_TEXT, response_class=Response,
             summary="The kept console output of an instance (its last 128 KiB)",
             description="The same path as a WebSocket attaches to the console: `?attach=true` reads and "
                         "writes a running system instance's console (its pty; jaula.frames: output on "
                         "channel 1, input on 0, resize on 3), `?replay=true` sends the kept output first; "
                         "without `attach` it follows the output read-only. See docs/exec.md.")
    def get_console(name: str) -> Response:
        return kept(name)

    @app.get("/1.0/instances/{name}/logs", tags=["instances"], responses=_TEXT, response_class=Response,
             summary="The instance's output log: its console's output (an app's stdout and stderr), the last 128 KiB")
    def get_logs(name: str) -> Response:
        return kept(name)

    @app.websocket("/1.0/instances/{name}/console")
    async def follow_console(websocket: WebSocket, name: str, replay: bool = False, attach: bool = False) -> None:
        try:
            path = path_of(name)
        except JaulaError as exc:
            await websocket.close(code=4004, reason=str(exc)[:120])
            return
        master = -1
        if attach:
            try:
                master = await asyncio.get_running_loop().run_in_executor(None, master_of, name)
            except JaulaError as exc:  # said in a frame: a close reason holds 123 bytes only
                await websocket.accept()
                with contextlib.suppress(Exception):
                    await websocket.send_bytes(frames.control("error", message=str(exc), exit_code=exc.exit_code))
                    await websocket.close(code=1000)
                return
        try:
            await websocket.accept()
            await _follow(websocket, path, replay, master)
        finally:
            if master >= 0:
                os.close(master)

    def master_of(name: str) -> int:
        """A dup of the console's master, once the instance is known to run."""
        row = db.get_instance(name)
        if row.mode != "system":
            raise BadState(f"Instance {name!r} is an app instance: its console is no terminal (its output: jaula logs "
                           f"-f {name}; a shell inside: jaula shell {name})")
        if row.status not in ("running", "frozen"):
            raise BadState(f"Instance {name!r} is {row.status}: its console exists while it runs (jaula start "
                           f"{name}; jaula console {name} --show-log prints what it last wrote)")
        keeper = getattr(backend, "console_keeper", None)
        if keeper is None:
            raise BadState("this jaulad runs no console keeper: consoles are read-only (jaula logs -f)")
        return keeper.master(name)

    async def cap_all() -> None:
        while True:
            await asyncio.sleep(console_log.CAP_INTERVAL_S)
            try:
                names = [r.name for r in db.list_instances() if r.status != "stopped"]
                for name in names:
                    await asyncio.get_running_loop().run_in_executor(None, console_log.cap, backend.console_log(name))
            except Exception:
                log.exception("capping the console logs")

    tasks: list[asyncio.Task] = []

    async def start_capping() -> None:
        if hasattr(backend, "console_log"):
            tasks.append(asyncio.get_running_loop().create_task(cap_all()))

    async def stop_capping() -> None:
        for t in tasks:
            t.cancel()

    app.router.add_event_handler("startup", start_capping)
    app.router.add_event_handler("shutdown", stop_capping)


async def _follow(ws: WebSocket, path: str, replay: bool, master: int = -1) -> None:
    """Send what the log gains until the client goes; a log truncated (a restart) or replaced
    (a new instance of the name) is followed from its start. With `master` (attached) the
    client's input and resizes go to the console's pty, and the stream ends when the instance
    stops (no slave of the pty is left open)."""
    gone = asyncio.Event()
    ended = False
    interval = FOLLOW_INTERVAL_S if master < 0 else ATTACH_INTERVAL_S
    if master >= 0:
        fdstream.nonblocking(master)

    async def listen() -> None:
        with contextlib.suppress(Exception):
            while (got := await ws.receive())["type"] != "websocket.disconnect":
                if master >= 0:
                    await _input(master, got)
        gone.set()

    listener = asyncio.create_task(listen())
    fd, ino, pos = -1, None, 0
    try:
        while not gone.is_set():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (fd < 0 or st.st_ino != ino):
                if fd >= 0:
                    os.close(fd)
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                first = ino is None
                ino = st.st_ino
                pos = (max(0, st.st_size - console_log.KEEP) if replay else st.st_size) if first else 0
            if master >= 0 and ended:
                await ws.send_bytes(frames.control("exit", code=0))
                break
            ended = master >= 0 and _hung_up(master)  # one more pass: what the log got meanwhile
            if fd >= 0:
                size = os.fstat(fd).st_size
                if size < pos:
                    pos = 0                                    # truncated: a new start
                pos = max(pos, size - console_log.KEEP)        # what was freed is not sent
                while pos < size:
                    data = os.pread(fd, min(65536, size - pos), pos)
                    if not data:
                        break
                    pos += len(data)
                    await ws.send_bytes(frames.encode(frames.STDOUT, data))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gone.wait(), interval)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        listener.cancel()
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(Exception):
            await ws.close(code=1000)


def _hung_up(master: int) -> bool:
    """No slave of the pty is open any more: the keeper dropped it, the instance is gone."""
    p = select.poll()
    p.register(master, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


async def _input(master: int, got: dict[str, Any]) -> None:
    """One client frame: stdin bytes to the pty, a resize to its window size (TIOCSWINSZ: the
    kernel signals SIGWINCH inside); an EOF or a signal means nothing to a console."""
    try:
        raw = got["bytes"] if got.get("bytes") is not None else got.get("text", "")
        channel, payload = frames.decode(raw)
        if channel == frames.STDIN and payload:
            try:  # a console nobody reads (its input queue full) drops the keys, never hangs the stream
                await asyncio.wait_for(fdstream.write_all(master, payload), INPUT_TIMEOUT_S)
            except TimeoutError:
                log.warning("console stream: the console reads no input; %d bytes dropped", len(payload))
        elif channel == frames.CONTROL:
            ctl = frames.parse_control(payload)
            if ctl["type"] == "resize":
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", ctl["height"], ctl["width"], 0, 0))
    except frames.FrameError as exc:
        log.warning("console stream: %s (ignored)", exc)
