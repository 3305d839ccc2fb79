"""The console and the output log through the API, mounted by inside_api.

- GET /1.0/instances/{name}/console: the kept console output (its last 128 KiB, text/plain).
- GET /1.0/instances/{name}/logs: the instance's output log, the same bytes (the init's stdout
  and stderr are its console), for `jaula logs`.
- WebSocket /1.0/instances/{name}/console?replay=false: follow the console (jaula.frames; new
  output on channel 1; with replay=true the kept output comes first). Input is not delivered:
  the init's stdin is /dev/null (console_log.py says why no pty holds it); `jaula shell` gives
  a terminal inside.

jaulad caps every instance's log to its last 128 KiB every CAP_INTERVAL_S (console_log.cap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from jaula import frames
from jaula.daemon import console_log
from jaula.errors import BadState, JaulaError

log = logging.getLogger("jaula.console")

FOLLOW_INTERVAL_S = 0.2
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
             summary="The kept console output of an instance (its last 128 KiB)")
    def get_console(name: str) -> Response:
        return kept(name)

    @app.get("/1.0/instances/{name}/logs", tags=["instances"], responses=_TEXT, response_class=Response,
             summary="The instance's output log: its init's stdout and stderr (the last 128 KiB)")
    def get_logs(name: str) -> Response:
        return kept(name)

    @app.websocket("/1.0/instances/{name}/console")
    async def follow_console(websocket: WebSocket, name: str, replay: bool = False) -> None:
        try:
            path = path_of(name)
        except JaulaError as exc:
            await websocket.close(code=4004, reason=str(exc)[:120])
            return
        await websocket.accept()
        await _follow(websocket, path, replay)

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


async def _follow(ws: WebSocket, path: str, replay: bool) -> None:
    """Send what the log gains until the client goes; a log truncated (a restart) or replaced
    (a new instance of the name) is followed from its start."""
    gone = asyncio.Event()

    async def listen() -> None:
        with contextlib.suppress(Exception):
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass  # input is not delivered: the init's stdin is /dev/null
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
                await asyncio.wait_for(gone.wait(), FOLLOW_INTERVAL_S)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        listener.cancel()
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(Exception):
            await ws.close(code=1000)
