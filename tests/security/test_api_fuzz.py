"""The REST API fuzzed against its own OpenAPI document (schemathesis), on the fake backend of
tests/unit (no kernel, nothing real made): whatever a client sends, jaulad answers with a status
below 500 and an error envelope, never a traceback. Streams (events, console, exec, logs), the
events' long poll and uploads are left out: they wait for their peer rather than answer."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from jaula.daemon.api import create_app
from jaula.daemon.db import Database
from tests.support.containers import wait_until
from tests.unit.fake_backend import FakeBackend

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# streams and long polls wait for their peer (events/history up to its timeout, 300 s) by design
STREAMS = r"^/1\.0/(events(/history)?$|instances/\{name\}/(console|exec|logs)$|import/upload$)"


@pytest.fixture(scope="module")
def api_app() -> Iterator[object]:
    top = Path(tempfile.mkdtemp(prefix="jaula-fuzz-"))
    db = Database(top / "jaula.db")
    backend = FakeBackend()
    backend.backups = str(top / "backups")  # type: ignore[attr-defined]
    (top / "backups").mkdir()
    app = create_app(db, backend, workers=2)
    # the app's shutdown handlers stop the operations' executor: this fixture does it, once, at the end
    app.router.on_shutdown.clear()
    try:
        yield app
    finally:
        app.state.operations.shutdown(wait=True)
        app.state.events.close()
        db.close()
        shutil.rmtree(top, ignore_errors=True)
        # schemathesis keeps one event loop thread (and anyio's workers) for the process's life; the
        # battery forks instances from this process, which must be single-threaded again by then
        from schemathesis.python import asgi

        asgi._shutdown()
        wait_until("the fuzzer's threads to end", lambda: threading.active_count() == 1, timeout=20)


@pytest.fixture(scope="module")
def api_schema(api_app: object):
    return schemathesis.openapi.from_asgi("/openapi.json", api_app).exclude(path_regex=STREAMS)


def _operations() -> list[tuple[str, str]]:
    doc = json.loads(OPENAPI.read_text())
    return [(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete") and not re.match(STREAMS, path)]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_error_and_no_traceback(api_schema, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call()
        body = response.text
        assert response.status_code < 500, f"{method} {case.formatted_path}: {response.status_code} {body[:500]}"
        assert "Traceback (most recent call last)" not in body, body[:500]
        kind = response.headers.get("content-type") or [""]
        kind = kind[0] if isinstance(kind, list) else kind
        if response.status_code >= 400 and kind.startswith("application/json"):
            doc = response.json()
            assert doc.get("type") == "error" or "detail" in doc, doc

    fuzz()
