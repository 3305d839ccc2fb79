"""`PUT /1.0/instances/{name}/state?wait=-1` runs the whole change in one operations' worker
(Operations.run_here): its operation row is still written, listeners still see pending, running
and the end, and a change asked while another runs on the instance still waits its turn and can
still be cancelled while it waits."""

from __future__ import annotations

import threading
from typing import Any

from tests.unit.test_api import call, create

ROUTE = "/1.0/instances/{name}/state"


def _put(api: Any, spec: dict, name: str, body: dict, out: list) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(call(api, spec, "PUT", f"/1.0/instances/{name}/state?wait=-1",
                                                        ROUTE, json=body)))
    t.start()
    return t


def _pending(api: Any, n: int = 1) -> list[Any]:
    for _ in range(500):
        found = api.db.list_operations("pending")
        if len(found) >= n:
            return found
        threading.Event().wait(0.01)
    raise AssertionError("no pending operation")


def test_a_free_instance_starts_with_its_operation_recorded_and_told(api, openapi) -> None:
    create(api, openapi, "web1")
    listener = api.app.state.events.subscribe("operation")
    try:
        status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state?wait=-1", ROUTE, json={"action": "start"})
        assert status == 202 and body["metadata"]["status"] == "success", body
        op_id = body["metadata"]["id"]
        stored = api.db.get_operation(op_id)
        assert stored.status == "success" and stored.metadata == {"pid": 1001}
        assert stored.resources == {"instances": ["web1"]} and stored.description == "Starting instance web1"
        seen = []
        while (event := listener.get(timeout=1)) is not None:
            if event["metadata"]["id"] == op_id:
                seen.append(event["metadata"]["status"])
            if seen[-1:] == ["success"]:
                break
        assert seen == ["pending", "running", "success"]
    finally:
        api.app.state.events.unsubscribe(listener)
    assert api.db.get_instance("web1").status == "running"


def test_a_change_asked_while_another_runs_waits_its_turn(api, openapi) -> None:
    create(api, openapi, "web1")
    gate = api.backend.gate["start"] = threading.Event()
    out: list = []
    try:
        first = api.client.start("web1", wait=False)                 # runs, held at the gate
        t = _put(api, openapi, "web1", {"action": "restart", "force": True}, out)
        (queued,) = _pending(api)
        assert queued.description == "Restarting instance web1" and out == []
    finally:
        gate.set()
    t.join(10)
    status, body = out[0]
    assert status == 202 and body["metadata"]["id"] == queued.id and body["metadata"]["status"] == "success"
    assert api.client.wait_operation(first["id"])["status"] == "success"
    assert [c[0] for c in api.backend.calls if c[0] in ("start", "stop")] == ["start", "stop", "start"]


def test_a_waiting_change_can_be_cancelled_and_answers_cancelled(api, openapi) -> None:
    create(api, openapi, "web1")
    gate = api.backend.gate["start"] = threading.Event()
    out: list = []
    try:
        first = api.client.start("web1", wait=False)
        t = _put(api, openapi, "web1", {"action": "restart", "force": True}, out)
        (queued,) = _pending(api)
        assert api.client.request("DELETE", f"/1.0/operations/{queued.id}")["metadata"]["status"] == "cancelled"
    finally:
        gate.set()
    t.join(10)
    status, body = out[0]
    assert status == 202 and body["metadata"]["status"] == "cancelled"
    assert api.client.wait_operation(first["id"])["status"] == "success"
    assert [c[0] for c in api.backend.calls if c[0] in ("start", "stop")] == ["start"]


def test_a_refusal_makes_no_operation(api, openapi) -> None:
    create(api, openapi, "web1")
    before = len(api.db.list_operations())
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state?wait=-1", ROUTE, json={"action": "stop"})
    assert status == 409 and "not running" in body["error"]
    status, body = call(api, openapi, "PUT", "/1.0/instances/nope/state?wait=-1", ROUTE, json={"action": "start"})
    assert status == 404
    assert len(api.db.list_operations()) == before


def test_with_every_worker_busy_the_change_is_queued_as_an_operation(api, openapi) -> None:
    """The API's fixture has 4 workers: 4 starts held at the gate take them all, and a fifth start
    with wait=-1 then gets its pending operation at once (listed, cancellable) as without wait."""
    for i in range(5):
        create(api, openapi, f"w{i}")
    gate = api.backend.gate["start"] = threading.Event()
    out: list = []
    try:
        held = [api.client.start(f"w{i}", wait=False) for i in range(4)]
        for _ in range(500):
            if len(api.db.list_operations("running")) == 4:
                break
            threading.Event().wait(0.01)
        assert not api.app.state.operations.worker_free()
        t = _put(api, openapi, "w4", {"action": "start"}, out)
        (queued,) = _pending(api)
        assert queued.description == "Starting instance w4"
    finally:
        gate.set()
    t.join(10)
    status, body = out[0]
    assert status == 202 and body["metadata"]["id"] == queued.id and body["metadata"]["status"] == "success"
    assert all(api.client.wait_operation(op["id"])["status"] == "success" for op in held)
    for _ in range(500):
        if api.app.state.operations.worker_free() and api.app.state.operations._outstanding == 0:
            break
        threading.Event().wait(0.01)
    assert api.app.state.operations._outstanding == 0
