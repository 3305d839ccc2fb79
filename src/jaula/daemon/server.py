"""Serving the API on a UNIX socket with uvicorn: in jaulad's main thread (`serve`), or in a
thread for tests (`ServerThread`).

We bind the socket ourselves rather than give uvicorn `uds=`: uvicorn makes its socket mode
0666 (anyone on the host could drive jaulad, which runs as root). Ours is 0660, group `jaula`
when that group exists, as the architecture says (root or the `jaula` group).

uvicorn parses HTTP with httptools (a dependency: C, 0.1-0.2 ms less per request than h11's pure
Python, measured on a start's PUT over kept connections), h11 where it is missing.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from jaula.errors import JaulaError, Locked

SOCKET_MODE = 0o660
SOCKET_GROUP = "jaula"


def bind_unix(path: str | os.PathLike[str], mode: int = SOCKET_MODE, group: str | None = SOCKET_GROUP) -> socket.socket:
    """A listening UNIX socket at `path` with `mode` from its creation; a stale socket file is
    replaced, but one another process still answers on is refused (Locked)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise JaulaError(f"{str(p)!r} exists and is not a socket: move it away, or give another socket path")
        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as probe:
            try:
                probe.connect(str(p))
            except OSError:
                p.unlink()  # stale: its server is gone
            else:
                raise Locked(f"Another jaulad answers on {str(p)!r}: stop it first, or give another socket path")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)  # the mode holds from bind on: no window with a wider one
    try:
        sock.bind(str(p))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    if group and os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            os.chown(p, 0, grp.getgrnam(group).gr_gid)
    sock.listen(128)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) (`jaulad --listen`), close-on-exec."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise JaulaError(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class _Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn waits for open connections before the app's shutdown: end the event streams
        # first, or each open `GET /1.0/events` would hold jaulad's exit for the grace period.
        bus = getattr(getattr(self.config.app, "state", None), "events", None)
        if bus is not None:
            bus.close()
        await super().shutdown(sockets)


def _server(app: FastAPI, token: str | None = None, web: Any = None) -> uvicorn.Server:
    served: Any = app
    if token is not None:  # a TCP listener: requests over it need the token (auth.py)
        from jaula.daemon.auth import TokenGate
        served = TokenGate(app, token)
        served.state = app.state
    if web is not None:  # the control center's listener: sessions instead (jaula.web.gate.WebGate)
        from jaula.web.gate import WebGate
        served = WebGate(app, served, web)
    return _Server(uvicorn.Config(served, log_level="warning", access_log=False, lifespan="on",
                                  timeout_graceful_shutdown=5))


def serve(app: FastAPI, socket_path: str | os.PathLike[str], tcp: socket.socket | None = None,
          token: str | None = None, web: tuple[socket.socket, Any] | None = None) -> None:
    """Serve until SIGINT or SIGTERM (jaulad's main thread); the socket file goes at the end.
    `tcp`: a listening TCP socket (bind_tcp) served too, every request on it needing `token`.
    `web`: the control center's listening socket and its jaula.web.gate.WebConfig."""
    sock = bind_unix(socket_path)
    try:
        _server(app, token if tcp is not None else None, web[1] if web else None).run(
            sockets=[sock] + ([tcp] if tcp is not None else []) + ([web[0]] if web else []))
    finally:
        sock.close()
        if web is not None:
            web[0].close()
        if tcp is not None:
            tcp.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)


class ServerThread:
    """The API served from a thread until `stop()` (or the end of a `with` block)."""

    def __init__(self, app: FastAPI, socket_path: str | os.PathLike[str], tcp: socket.socket | None = None,
                 token: str | None = None) -> None:
        self.socket_path = str(socket_path)
        self.tcp = tcp
        self.server = _server(app, token if tcp is not None else None)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="jaula-api", daemon=True)

    def _run(self) -> None:
        assert self._sock is not None
        self.server.run(sockets=[self._sock] + ([self.tcp] if self.tcp is not None else []))

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._sock = bind_unix(self.socket_path)
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
        if self._sock is not None:
            self._sock.close()
        if self.tcp is not None:
            self.tcp.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
