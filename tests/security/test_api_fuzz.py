"""The REST API fuzzed against its own OpenAPI document (schemathesis), on the fake backend of
tests/unit (no kernel, nothing real made): whatever a client sends, jaulad answers with a status
below 500 and an error envelope, never a traceback. Streams (events, console, exec, logs), the
events' long poll and uploads are left out: they wait for their peer rather than answer.

And no partial state: around every generated request the backend's state is taken (every table
of the database, the fake backend's instances, configs, roots, snapshots and templates, the
files under the daemon's folder), once no operation is pending or running. A refused request
(4xx) leaves it exactly as it was; an accepted one whose operation failed leaves it as it was but
for its operation's row and events (a failure half-way is rolled back)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from jaula.daemon.api import create_app
from jaula.daemon.db import Database
from tests.security.lab import FIGURES
from tests.support.containers import wait_until
from tests.unit.fake_backend import FakeBackend

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# streams and long polls wait for their peer (events/history up to its timeout, 300 s) by design
TOTALS = {"refused": 0, "failed": 0}  # requests whose state was checked, for the battery's figures
STREAMS = r"^/1\.0/(events(/history)?$|instances/\{name\}/(console|exec|logs)$|import/upload$)"


class Backend(NamedTuple):
    top: Path
    db: Path
    fake: FakeBackend


def _settled(db: Path) -> sqlite3.Connection:
    """A read-only connection once no operation is pending or running (accepted requests done)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    wait_until("the operations to end",
               lambda: not con.execute("SELECT count(*) FROM operations WHERE status IN ('pending', 'running')")
               .fetchone()[0], timeout=30, interval=0.01)
    return con


def state(b: Backend, leave_out: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Everything a request could leave behind, comparable."""
    con = _settled(b.db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables if t not in leave_out}
    finally:
        con.close()
    f = b.fake
    dump = lambda v: json.dumps(v, sort_keys=True, default=repr)  # noqa: E731
    out["backend"] = [dump(f.status), dump(f.configs), dump(f.roots), dump(f.snaps),
                      dump(sorted(f.templates.templates))]
    out["files"] = sorted(str(p.relative_to(b.top)) for p in b.top.rglob("*") if not p.name.startswith("jaula.db"))
    return out


def _operation_failed(b: Backend, body: dict) -> bool:
    op = (body.get("metadata") or {}).get("id") if isinstance(body, dict) else None
    if not op:
        return False
    con = _settled(b.db)
    try:
        row = con.execute("SELECT status FROM operations WHERE id = ?", (op,)).fetchone()
    finally:
        con.close()
    return bool(row) and row[0] in ("failure", "cancelled")


def _diff(before: dict, after: dict) -> dict:
    return {k: {"gone": sorted(set(before.get(k, [])) - set(v)), "new": sorted(set(v) - set(before.get(k, [])))}
            for k, v in after.items() if v != before.get(k)}


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    top = Path(tempfile.mkdtemp(prefix="jaula-fuzz-"))
    fake = FakeBackend()
    fake.backups = str(top / "backups")  # type: ignore[attr-defined]
    (top / "backups").mkdir()
    yield Backend(top, top / "jaula.db", fake)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def api_app(backend: Backend) -> Iterator[object]:
    top = backend.top
    db = Database(backend.db)
    app = create_app(db, backend.fake, workers=2)
    # the app's shutdown handlers stop the operations' executor: this fixture does it, once, at the end
    app.router.on_shutdown.clear()
    try:
        yield app
    finally:
        FIGURES.append(f"API fuzzing: {TOTALS['refused']} refused requests and {TOTALS['failed']} failed operations, "
                       "each left the backend as it was (database tables, instances, files)")
        app.state.operations.shutdown(wait=True)
        app.state.events.close()
        db.close()
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
def test_no_server_error_no_traceback_no_partial_state(api_schema, backend: Backend, method: str, path: str) -> None:
    operation = api_schema[path][method]
    counts = TOTALS

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        before = state(backend)
        response = case.call()
        if 400 <= response.status_code < 500:
            after = state(backend)
            counts["refused"] += 1
            assert after == before, (f"{method} {case.formatted_path} was refused ({response.status_code}) but left "
                                     f"{_diff(before, after)}")
        elif response.status_code == 202 and _operation_failed(backend, response.json()):
            counts["failed"] += 1
            some = frozenset({"operations", "events"})
            after, before = state(backend, some), {k: v for k, v in before.items() if k not in some}
            assert after == before, (f"{method} {case.formatted_path}: its operation failed but left "
                                     f"{_diff(before, after)}")
        body = response.text
        assert response.status_code < 500, f"{method} {case.formatted_path}: {response.status_code} {body[:500]}"
        assert "Traceback (most recent call last)" not in body, body[:500]
        kind = response.headers.get("content-type") or [""]
        kind = kind[0] if isinstance(kind, list) else kind
        if response.status_code >= 400 and kind.startswith("application/json"):
            doc = response.json()
            assert doc.get("type") == "error" or "detail" in doc, doc

    fuzz()


@pytest.fixture(scope="module")
def seeded(api_schema, backend: Backend) -> str:
    """An instance `web1` (of a template `bb` in the fake store) for the snapshot requests."""
    backend.fake.templates.build("bb", "busybox")
    r = api_schema["/1.0/instances"]["POST"].Case(body={"name": "web1", "template": "bb"}).call()
    assert r.status_code == 202, r.text
    assert "web1" in state(backend)["backend"][0], "the seed instance was not made"
    return "web1"


NAMED = {  # what makes a named object: (path, method, path parameters, body of a name)
    "instance": ("/1.0/instances", "POST", {}, lambda n: {"name": n, "template": "bb"}),
    "profile": ("/1.0/profiles", "POST", {}, lambda n: {"name": n}),
    "network": ("/1.0/networks", "POST", {}, lambda n: {"name": n}),
    "snapshot": ("/1.0/instances/{name}/snapshots", "POST", {"name": "web1"}, lambda n: {"name": n}),
}


@pytest.mark.parametrize("kind", sorted(NAMED))
def test_bad_names_through_the_api_make_nothing(api_schema, backend: Backend, seeded: str, kind: str) -> None:
    """The names of test_bad_input.py's tricks (path parts, control characters, unicode, long)
    sent as an instance, profile, network or snapshot name: refused, and nothing made."""
    from hypothesis import given as given_
    from hypothesis import settings as settings_

    from tests.security.test_bad_input import TRICKS

    path, method, params, body = NAMED[kind]
    operation = api_schema[path][method]

    @settings_(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given_(name=TRICKS)
    def bad(name: str) -> None:
        before = state(backend)
        r = operation.Case(path_parameters=dict(params), body=body(name)).call()
        assert 400 <= r.status_code < 500, f"{kind} name {name!r}: {r.status_code} {r.text[:300]}"
        after = state(backend)
        assert after == before, f"{kind} name {name!r} was refused but left {_diff(before, after)}"

    bad()


@pytest.mark.parametrize(("kind", "verb"), [("instance", "create"), ("snapshot", "snapshot")])
def test_a_failure_half_way_leaves_nothing(api_schema, backend: Backend, seeded: str, kind: str, verb: str) -> None:
    """An accepted request whose backend call fails (the fake's `fail`): its operation ends in
    failure and every row, record and file is as before but for the operation and its events."""
    from jaula.errors import BadState

    path, method, params, body = NAMED[kind]
    some = frozenset({"operations", "events"})
    before = state(backend, some)
    backend.fake.fail[verb] = BadState(f"fake: {verb} failed half-way")
    try:
        r = api_schema[path][method].Case(path_parameters=dict(params), body=body("half-way")).call()
        assert r.status_code == 202, r.text
        assert _operation_failed(backend, r.json()), f"the {verb} did not fail: {r.text}"
    finally:
        backend.fake.fail.pop(verb)
    after = state(backend, some)
    assert after == before, f"a failed {verb} left {_diff(before, after)}"
