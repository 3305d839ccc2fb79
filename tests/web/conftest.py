"""Fixtures of the control center's tests: the API with the fake backend served by uvicorn as
jaulad serves it (server._server with the web gate) on a UNIX socket and a loopback TCP port."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest


class Clock:
    """A clock the sessions read: tests move it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def web(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """`.url` (http://127.0.0.1:PORT), `.root`, `.config` (WebConfig), `.clock`, `.db`, `.socket`."""
    from jaula.daemon import server
    from jaula.daemon.api import create_app
    from jaula.daemon.db import Database
    from jaula.web.gate import WebConfig
    from jaula.web.sessions import LoginThrottle, Sessions
    from tests.unit.fake_backend import FakeBackend

    root = tmp_path / "root"
    root.mkdir()
    sock_dir = tempfile.mkdtemp(prefix="jaula-web-", dir="/tmp")
    socket_path = f"{sock_dir}/api.sock"
    db = Database(root / "jaula.db")
    app = create_app(db, FakeBackend(), workers=2)
    tcp = server.bind_tcp("127.0.0.1", 0)
    clock = Clock()
    config = WebConfig(root=root, address=tcp.getsockname()[:2], sessions=Sessions(db, clock=clock),
                       throttle=LoginThrottle(clock=clock))
    unix = server.bind_unix(socket_path)
    srv = server._server(app, None, config)
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [unix, tcp]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{config.address[1]}", root=root, config=config, clock=clock,
                              db=db, socket=socket_path)
    finally:
        srv.should_exit = True
        thread.join(10)
        unix.close()
        tcp.close()
        db.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture
def browser_like(web: SimpleNamespace) -> Iterator[httpx.Client]:
    """An HTTP client that keeps cookies, as a browser does."""
    with httpx.Client(base_url=web.url, timeout=10) as c:
        yield c
