"""Serving the API on a UNIX socket with uvicorn: in jaulad's main thread, or in a thread for tests."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from jaula.errors import JaulaError


def make_server(app: FastAPI, socket_path: str | os.PathLike[str]) -> uvicorn.Server:
    """A uvicorn server for `app` on `socket_path` (a stale socket file there is replaced)."""
    path = Path(socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = uvicorn.Config(app, uds=str(path), log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


class ServerThread:
    """The API served from a thread until `stop()` (or the end of a `with` block)."""

    def __init__(self, app: FastAPI, socket_path: str | os.PathLike[str]) -> None:
        self.socket_path = str(socket_path)
        self.server = make_server(app, socket_path)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._thread = threading.Thread(target=self.server.run, name="jaula-api", daemon=True)

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise JaulaError(f"The API did not start on {self.socket_path!r}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
