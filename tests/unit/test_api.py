"""jaulad's REST API over a real UNIX socket with a fake backend: the envelope, validation before
any change, operations, and every response checked against docs/openapi.json."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

from jaula.daemon.api import openapi_document
from jaula.errors import BadState, ExitCode, NotFound
from tests.unit.conftest import OPENAPI


def call(api: SimpleNamespace, spec: dict[str, Any], method: str, path: str, template: str | None = None,
         **kw: Any) -> tuple[int, dict[str, Any]]:
    """One raw request; its body validated against the document's schema for that route and status."""
    resp = api.client._http.request(method, path, **kw)
    body = resp.json()
    route = spec["paths"][template or path.split("?")[0]][method.lower()]
    responses = route["responses"]
    entry = responses.get(str(resp.status_code))
    assert entry is not None, f"{method} {path}: status {resp.status_code} is not in the document: {body}"
    schema = entry["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": spec["components"]})
    return resp.status_code, body


def wait(api: SimpleNamespace, spec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    assert body["type"] == "async" and body["operation"] == f"/1.0/operations/{body['metadata']['id']}"
    status, done = call(api, spec, "GET", body["operation"] + "/wait", "/1.0/operations/{op_id}/wait",
                        params={"timeout": 10})
    assert status == 200
    return done["metadata"]


def create(api: SimpleNamespace, spec: dict[str, Any], name: str, **body: Any) -> dict[str, Any]:
    status, resp = call(api, spec, "POST", "/1.0/instances", json={"name": name, "template": "bb", **body})
    assert status == 202, resp
    return wait(api, spec, resp)


def test_openapi_document_in_tree_is_current() -> None:
    assert json.loads(OPENAPI.read_text()) == openapi_document(), \
        "docs/openapi.json is stale: run `.venv/bin/python -m jaula.daemon.api > docs/openapi.json`"


def test_server_info_lists_the_settings(api, openapi) -> None:
    status, body = call(api, openapi, "GET", "/1.0")
    assert status == 200 and body["type"] == "sync"
    keys = {s["key"]: s for s in body["metadata"]["settings"]}
    assert keys["limits.processes"]["default"] == "2048" and keys["security.privileged"]["live"] is False


def test_create_stores_the_instance_with_canonical_settings(api, openapi) -> None:
    op = create(api, openapi, "web1", config={"limits.memory": "0.5GiB", "limits.cpu": "1.5"},
                description="the web")
    assert op["status"] == "success" and op["resources"] == {"instances": ["web1"]}
    assert api.backend.calls == [("create", "web1")]
    assert api.backend.configs["web1"] == {"limits.memory": 512 << 20, "limits.cpu": 1.5}
    _, body = call(api, openapi, "GET", "/1.0/instances/web1", "/1.0/instances/{name}")
    inst = body["metadata"]
    assert (inst["status"], inst["template"], inst["description"]) == ("stopped", "bb", "the web")
    assert inst["config"] == {"limits.cpu": "1.5", "limits.memory": "512MiB"}
    assert inst["privileged"] is False and api.db.get_instance("web1").idmap_base is not None
    _, listed = call(api, openapi, "GET", "/1.0/instances")
    assert [i["name"] for i in listed["metadata"]] == ["web1"]


def test_a_bad_name_or_settings_are_refused_before_any_change(api, openapi) -> None:
    status, body = call(api, openapi, "POST", "/1.0/instances", json={"name": "../etc", "template": "bb"})
    assert status == 400 and body["type"] == "error" and body["error_code"] == 400
    assert body["exit_code"] == ExitCode.INVALID_CONFIG and "would be a path" in body["error"]
    status, body = call(api, openapi, "POST", "/1.0/instances", json={
        "name": "web2", "template": "Bad", "profiles": ["nope"],
        "config": {"limits.memory": "12XB", "limits.cpus": "2"}})
    assert status == 400
    problems = body["problems"]
    assert len(problems) == 4, problems
    assert any("uppercase" in p for p in problems) and any("Profile 'nope' not found" in p for p in problems)
    assert any("12XB" in p and "512MiB" in p for p in problems)
    assert any("did you mean limits.cpu" in p for p in problems)
    assert api.db.list_instances() == [] and api.backend.calls == []
    status, body = call(api, openapi, "POST", "/1.0/instances", json={"name": "x", "template": "bb", "colour": 1})
    assert status == 422 and body["exit_code"] == ExitCode.INVALID_CONFIG and any("colour" in p for p in body["problems"])


def test_a_taken_name_is_409(api, openapi) -> None:
    create(api, openapi, "web1")
    status, body = call(api, openapi, "POST", "/1.0/instances", json={"name": "web1", "template": "bb"})
    assert status == 409 and body["exit_code"] == ExitCode.EXISTS and "already exists" in body["error"]


def test_a_failed_create_is_reverted_and_its_operation_says_why(api, openapi) -> None:
    api.backend.fail["create"] = NotFound("Template 'bb' not found: build it first")
    op = create(api, openapi, "web1")
    assert op["status"] == "failure" and op["err"] == "Template 'bb' not found: build it first"
    assert op["metadata"] == {"exit_code": ExitCode.NOT_FOUND}
    assert api.db.list_instances() == []


def test_lifecycle_through_state_operations(api, openapi) -> None:
    create(api, openapi, "web1")
    route = "/1.0/instances/{name}/state"

    def act(action: str, **kw: Any) -> dict[str, Any]:
        status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state", route, json={"action": action, **kw})
        assert status == 202, body
        return wait(api, openapi, body)

    assert act("start")["metadata"]["pid"] == 1001
    assert api.db.get_instance("web1").status == "running" and api.db.get_instance("web1").pid == 1001
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state", route, json={"action": "start"})
    assert status == 409 and body["exit_code"] == ExitCode.BAD_STATE and "already started" in body["error"]
    act("freeze")
    _, st = call(api, openapi, "GET", "/1.0/instances/web1/state", route)
    assert st["metadata"]["status"] == "frozen"
    act("unfreeze")
    assert act("stop", force=True, timeout=0)["metadata"] == {"clean": False}
    assert api.db.get_instance("web1").status == "stopped" and api.db.get_instance("web1").pid is None
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state", route, json={"action": "dance"})
    assert status == 422
    assert [c[0] for c in api.backend.calls] == ["create", "start", "freeze", "unfreeze", "stop"]


def test_a_state_change_with_wait_answers_the_ended_operation_in_one_request(api, openapi) -> None:
    create(api, openapi, "web1")
    route = "/1.0/instances/{name}/state"
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state?wait=-1", route, json={"action": "start"})
    assert status == 202 and body["type"] == "async", body
    assert body["metadata"]["status"] == "success" and body["metadata"]["metadata"]["pid"] == 1001
    assert api.db.get_instance("web1").status == "running" and api.db.get_instance("web1").pid == 1001
    api.backend.fail["stop"] = BadState("fake: will not stop")
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state?wait=10", route,
                        json={"action": "stop", "force": True})
    assert status == 202 and body["metadata"]["status"] == "failure"
    assert body["metadata"]["err"] == "fake: will not stop"
    # a refusal before any operation is still the error itself
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state?wait=-1", route, json={"action": "start"})
    assert status == 409 and "already started" in body["error"]
    # without wait: at once, as before (the operation may still run)
    del api.backend.fail["stop"]
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state", route, json={"action": "stop", "force": True})
    assert status == 202 and wait(api, openapi, body)["status"] == "success"


def test_the_client_starts_in_one_request(api, openapi, monkeypatch) -> None:
    create(api, openapi, "web1")
    sent: list[tuple[str, str]] = []
    request = api.client.request

    def counted(method: str, path: str, **kw: Any) -> dict[str, Any]:
        sent.append((method, path))
        return request(method, path, **kw)

    monkeypatch.setattr(api.client, "request", counted)
    op = api.client.start("web1")
    assert op["status"] == "success" and op["metadata"]["pid"] == 1001
    assert sent == [("PUT", "/1.0/instances/web1/state")]


def test_a_failed_start_leaves_it_stopped(api, openapi) -> None:
    create(api, openapi, "web1")
    api.backend.fail["start"] = BadState("fake: no init")
    with pytest.raises(BadState, match="fake: no init"):
        api.client.start("web1")
    assert api.db.get_instance("web1").status == "stopped"


def test_delete_of_a_running_instance_needs_force(api, openapi) -> None:
    create(api, openapi, "web1")
    api.client.start("web1")
    status, body = call(api, openapi, "DELETE", "/1.0/instances/web1", "/1.0/instances/{name}")
    assert status == 409 and "stop it first" in body["error"]
    status, body = call(api, openapi, "DELETE", "/1.0/instances/web1?force=true", "/1.0/instances/{name}")
    assert status == 202 and wait(api, openapi, body)["status"] == "success"
    assert api.db.list_instances() == [] and api.backend.calls[-2:] == [("stop", "web1"), ("delete", "web1")]
    status, body = call(api, openapi, "DELETE", "/1.0/instances/web1", "/1.0/instances/{name}")
    assert status == 404 and body["exit_code"] == ExitCode.NOT_FOUND


def test_patch_changes_settings_live_and_refuses_what_needs_a_stop(api, openapi) -> None:
    create(api, openapi, "web1", config={"limits.memory": "1GiB", "user.note": "x"})
    api.client.start("web1")
    route = "/1.0/instances/{name}"
    status, body = call(api, openapi, "PATCH", "/1.0/instances/web1", route,
                        json={"config": {"limits.memory": "2GiB", "user.note": None, "boot.autostart": "yes"}})
    assert status == 200, body
    assert body["metadata"]["config"] == {"boot.autostart": "true", "limits.memory": "2GiB"}
    assert body["metadata"]["autostart"] is True
    assert api.backend.configs["web1"]["limits.memory"] == 2 << 30
    status, body = call(api, openapi, "PATCH", "/1.0/instances/web1", route,
                        json={"config": {"security.nesting": "true"}})
    assert status == 409 and "stop it" in body["error"]
    status, body = call(api, openapi, "PATCH", "/1.0/instances/web1", route,
                        json={"config": {"limits.memory": "lots"}})
    assert status == 400 and "lots" in body["problems"][0]
    assert api.db.get_instance("web1").config == {"boot.autostart": "true", "limits.memory": "2GiB"}


def test_profiles_apply_at_create(api, openapi) -> None:
    status, body = call(api, openapi, "POST", "/1.0/profiles",
                        json={"name": "small", "config": {"limits.memory": "524288 KiB", "limits.cpu": "1"}})
    assert status == 201 and body["metadata"]["config"] == {"limits.cpu": "1.0", "limits.memory": "512MiB"}
    status, body = call(api, openapi, "POST", "/1.0/profiles", json={"name": "big", "config": {"limits.memory": "x"}})
    assert status == 400
    create(api, openapi, "web1", profiles=["small"], config={"limits.cpu": "2"})
    inst = api.client.get("web1")
    assert inst["profiles"] == ["small"] and inst["config"] == {"limits.cpu": "2.0"}
    assert inst["expanded_config"] == {"limits.cpu": "2.0", "limits.memory": "512MiB"}
    _, listed = call(api, openapi, "GET", "/1.0/profiles")
    assert [p["name"] for p in listed["metadata"]] == ["small"]
    _, one = call(api, openapi, "GET", "/1.0/profiles/small", "/1.0/profiles/{name}")
    assert one["metadata"]["name"] == "small"


def test_operations_are_listed_and_waited_on_with_a_timeout(api, openapi) -> None:
    gate = api.backend.gate["create"] = threading.Event()
    try:
        _, body = call(api, openapi, "POST", "/1.0/instances", json={"name": "web1", "template": "bb"})
        op_id = body["metadata"]["id"]
        _, early = call(api, openapi, "GET", f"/1.0/operations/{op_id}/wait", "/1.0/operations/{op_id}/wait",
                        params={"timeout": 0.05})
        assert early["metadata"]["status"] in ("pending", "running")
        _, listed = call(api, openapi, "GET", "/1.0/operations")
        assert [o["id"] for o in listed["metadata"]] == [op_id]
    finally:
        gate.set()
    assert api.client.wait_operation(op_id)["status"] == "success"
    _, got = call(api, openapi, "GET", f"/1.0/operations/{op_id}", "/1.0/operations/{op_id}")
    assert got["metadata"]["status"] == "success" and got["metadata"]["class"] == "task"
    status, body = call(api, openapi, "GET", "/1.0/operations/nope", "/1.0/operations/{op_id}")
    assert status == 404 and body["type"] == "error"


def test_unknown_endpoint_is_an_error_envelope(api) -> None:
    resp = api.client._http.get("/1.0/nothing")
    assert resp.status_code == 404 and resp.json()["type"] == "error" and "No such endpoint" in resp.json()["error"]


def test_a_pending_operation_can_be_cancelled_a_running_one_not(api, openapi) -> None:
    create(api, openapi, "web1")
    gate = api.backend.gate["start"] = threading.Event()
    try:
        first = api.client.start("web1", wait=False)           # runs, held at the gate
        second = api.client.restart("web1", wait=False)        # queued behind it on web1
        assert second["may_cancel"] is True
        status, body = call(api, openapi, "DELETE", f"/1.0/operations/{second['id']}", "/1.0/operations/{op_id}")
        assert status == 200 and body["metadata"]["status"] == "cancelled"
        for _ in range(200):
            if api.client.operation(first["id"])["status"] == "running":
                break
            threading.Event().wait(0.01)
        status, body = call(api, openapi, "DELETE", f"/1.0/operations/{first['id']}", "/1.0/operations/{op_id}")
        assert status == 409 and "only a pending operation" in body["error"]
    finally:
        gate.set()
    assert api.client.wait_operation(first["id"])["status"] == "success"
    assert api.client.wait_operation(second["id"], check=False)["status"] == "cancelled"
    assert [c for c in api.backend.calls if c[0] in ("start", "stop")] == [("start", "web1")]


def test_a_cancelled_create_leaves_no_instance(tmp_path) -> None:
    from jaula.daemon.db import Database
    from jaula.daemon.operations import Operations

    with Database(tmp_path / "jaula.db") as db:
        ops = Operations(db, workers=1)
        gate, ran = threading.Event(), []
        first = ops.submit("hold the only worker", lambda: gate.wait(10) and None)
        undone: list[str] = []
        second = ops.submit("create", lambda: ran.append(1) or {}, on_cancel=lambda: undone.append("row"))
        assert ops.cancel(second.id).status == "cancelled" and undone == ["row"]
        gate.set()
        assert ops.wait(first.id, 10).status == "success" and ops.wait(second.id, 1).status == "cancelled"
        ops.shutdown()
        assert ran == []


def test_events_record_the_lifecycle(api, openapi) -> None:
    create(api, openapi, "web1")
    api.client.start("web1")
    api.client.stop("web1")
    _, body = call(api, openapi, "GET", "/1.0/events/history")
    events = body["metadata"]
    assert [(e["type"], e["payload"]["name"]) for e in events] == [
        ("instance-created", "web1"), ("instance-started", "web1"), ("instance-stopped", "web1")]
    _, later = call(api, openapi, "GET", "/1.0/events/history",
                    params={"after": events[0]["id"], "type": "instance-stopped"})
    assert [e["id"] for e in later["metadata"]] == [events[2]["id"]]
    _, none = call(api, openapi, "GET", "/1.0/events/history", params={"after": events[2]["id"], "timeout": 0.2})
    assert none["metadata"] == []


def test_stats_are_the_backends_counters_while_it_runs(api, openapi) -> None:
    create(api, openapi, "web1", config={"limits.memory": "64MiB"})
    route = "/1.0/instances/{name}/stats"
    _, body = call(api, openapi, "GET", "/1.0/instances/web1/stats", route)
    assert body["metadata"] == {"name": "web1", "cpu_usage_ns": None, "rows": []}
    api.client.start("web1")
    _, body = call(api, openapi, "GET", "/1.0/instances/web1/stats", route)
    memory = body["metadata"]["rows"][0]
    assert (memory["resource"], memory["held"], memory["limit"]) == ("memory", 1 << 20, 64 << 20)


def test_an_instance_stored_with_a_setting_now_refused_is_still_listed(api, openapi) -> None:
    create(api, openapi, "web1")
    api.db.set_config("web1", {"limits.gone": "1"})     # as if the settings table had dropped a key
    _, body = call(api, openapi, "GET", "/1.0/instances")
    assert body["metadata"][0]["expanded_config"] == {"limits.gone": "1"}
