"""Cancelling a running operation (DELETE /1.0/operations/{id}): a template build stops at its
next progress report (the builder undoes its work) and ends `cancelled`, leaving no template
and the name free again; a running operation that cannot stop (an instance's start) is refused
(409) and runs on. `jaula template build` cancels its build on Ctrl-C. Responses are checked
against docs/openapi.json."""

from __future__ import annotations

import threading
import time

from jaula.errors import ExitCode
from tests.unit.test_api import call, create, wait


def _running(api, openapi, op_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, got = call(api, openapi, "GET", f"/1.0/operations/{op_id}", "/1.0/operations/{op_id}")
        if got["metadata"]["status"] == "running" and got["metadata"]["metadata"].get("stage"):
            return got["metadata"]
        time.sleep(0.02)
    raise AssertionError(f"operation {op_id} never ran: {got}")


def test_a_running_build_is_cancelled_and_leaves_nothing(api, openapi) -> None:
    store = api.backend.templates
    store.gate = threading.Event()
    status, body = call(api, openapi, "POST", "/1.0/templates", json={"name": "bb", "source": "busybox"})
    assert status == 202, body
    op_id = body["metadata"]["id"]
    assert _running(api, openapi, op_id)["may_cancel"] is True
    status, asked = call(api, openapi, "DELETE", f"/1.0/operations/{op_id}", "/1.0/operations/{op_id}")
    assert status == 200 and asked["metadata"]["status"] == "running", asked  # asked; it stops at its next report
    store.gate.set()
    done = wait(api, openapi, body)
    assert done["status"] == "cancelled" and done["err"] == "Cancelled by request" and done["may_cancel"] is False
    assert store.list() == [] and [t.name for t in api.db.list_templates()] == []
    status, again = call(api, openapi, "DELETE", f"/1.0/operations/{op_id}", "/1.0/operations/{op_id}")
    assert status == 409 and "is cancelled" in again["error"]
    # the name is free again: a new build goes through
    status, body = call(api, openapi, "POST", "/1.0/templates", json={"name": "bb", "source": "busybox"})
    assert status == 202 and wait(api, openapi, body)["status"] == "success"


def test_a_running_operation_that_cannot_stop_is_refused(api, openapi) -> None:
    api.backend.templates.build("bb", "busybox")
    assert create(api, openapi, "web1")["status"] == "success"
    api.backend.gate["start"] = threading.Event()
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state", "/1.0/instances/{name}/state",
                        json={"action": "start"})
    assert status == 202
    op_id = body["metadata"]["id"]
    deadline = time.monotonic() + 5
    while ("start", "web1") not in api.backend.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    _, got = call(api, openapi, "GET", f"/1.0/operations/{op_id}", "/1.0/operations/{op_id}")
    assert got["metadata"]["status"] == "running" and got["metadata"]["may_cancel"] is False
    status, refused = call(api, openapi, "DELETE", f"/1.0/operations/{op_id}", "/1.0/operations/{op_id}")
    assert status == 409 and "only a pending operation, or a running template build" in refused["error"]
    api.backend.gate["start"].set()
    assert wait(api, openapi, body)["status"] == "success"


def test_ctrl_c_during_template_build_cancels_it(api, monkeypatch) -> None:
    from click.testing import CliRunner

    from jaula.cli import templates_host
    from jaula.cli.main import cli

    store = api.backend.templates
    store.gate = threading.Event()
    interrupted = []
    real_sleep = time.sleep

    def sleep(s: float) -> None:  # "Ctrl-C" once the build runs (held at its gate), then let it go on
        if store.builds and not interrupted:
            interrupted.append(True)
            threading.Timer(0.3, store.gate.set).start()  # after the cancel was sent
            raise KeyboardInterrupt
        real_sleep(0.05)
    monkeypatch.setattr(templates_host.time, "sleep", sleep)
    r = CliRunner().invoke(cli, ["--socket", api.socket, "template", "build", "bb", "busybox"])
    assert r.exit_code == ExitCode.FAILURE, r.output
    assert "Cancelling building bb" in r.output and "Cancelled by request" in r.output, r.output
    assert store.list() == []
