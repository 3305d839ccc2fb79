"""Fixtures of the API's tests: a temporary database, the fake backend, and the API served by
uvicorn on a real UNIX socket in a thread."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """`.db`, `.backend` (FakeBackend), `.socket`, `.client` (jaula.client.Client) of a served API."""
    from jaula.client import Client
    from jaula.daemon.api import create_app
    from jaula.daemon.db import Database
    from jaula.daemon.server import ServerThread
    from tests.unit.fake_backend import FakeBackend

    sock_dir = tempfile.mkdtemp(prefix="jaula-api-", dir="/tmp")  # short: sun_path is 108 bytes
    socket = f"{sock_dir}/api.sock"
    db = Database(tmp_path / "jaula.db")
    backend = FakeBackend()
    app = create_app(db, backend, workers=4)
    server = ServerThread(app, socket).start()
    client = Client(socket, timeout=10)
    try:
        yield SimpleNamespace(db=db, backend=backend, socket=socket, client=client, app=app)
    finally:
        client.close()
        server.stop()
        db.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def openapi() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())
