"""The templates and host routes (templates_api.py, host.py) with the fake backend and its fake
template store: builds as operations with progress, delete refused while used, and the host's
figures and overcommit refusal. Every response is checked against docs/openapi.json."""

from __future__ import annotations

import threading
import time

import pytest

from jaula.daemon.host import gib
from jaula.errors import BadState
from tests.unit.test_api import call, create, wait

GiB = 1 << 30


def test_build_is_an_operation_whose_metadata_shows_progress(api, openapi) -> None:
    store = api.backend.templates
    store.gate = threading.Event()
    status, body = call(api, openapi, "POST", "/1.0/templates",
                        json={"name": "bb", "source": "busybox", "options": {}})
    assert status == 202, body
    op_id = body["metadata"]["id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, got = call(api, openapi, "GET", f"/1.0/operations/{op_id}", "/1.0/operations/{op_id}")
        if got["metadata"]["metadata"].get("stage") == "fetch":
            break
        time.sleep(0.05)
    assert got["metadata"]["status"] == "running"
    assert got["metadata"]["metadata"] == {"stage": "fetch", "done": 0, "total": 3}
    assert got["metadata"]["resources"] == {"templates": ["bb"]}
    status, again = call(api, openapi, "POST", "/1.0/templates", json={"name": "bb", "source": "busybox"})
    assert status == 409 and "being built" in again["error"]
    store.gate.set()
    done = wait(api, openapi, body)
    assert done["status"] == "success", done
    assert done["metadata"]["stage"] == "done" and done["metadata"]["template"]["name"] == "bb"
    assert api.db.get_template("bb").source == "busybox"

    status, listed = call(api, openapi, "GET", "/1.0/templates")
    assert [t["name"] for t in listed["metadata"]] == ["bb"]
    status, one = call(api, openapi, "GET", "/1.0/templates/bb", "/1.0/templates/{name}")
    assert one["metadata"]["command"] == ["/bin/sh"] and one["metadata"]["used_by"] == []


def test_build_refuses_unknown_sources_and_taken_names(api, openapi) -> None:
    status, body = call(api, openapi, "POST", "/1.0/templates", json={"name": "x", "source": "nosuch"})
    assert status == 400, body
    api.backend.templates.build("bb", "busybox")
    status, body = call(api, openapi, "POST", "/1.0/templates", json={"name": "bb", "source": "busybox"})
    assert status == 409 and "exists" in body["error"]


def test_import_takes_a_server_side_path(api, openapi) -> None:
    status, body = call(api, openapi, "POST", "/1.0/templates/import",
                        json={"name": "img", "path": "/srv/alpine.tar", "format": "image"})
    assert status == 202, body
    assert wait(api, openapi, body)["status"] == "success"
    assert api.backend.templates.builds == [("img", "oci", {"path": "/srv/alpine.tar"})]
    status, body = call(api, openapi, "POST", "/1.0/templates/import", json={"name": "rel", "path": "a.tar"})
    assert status == 400 and "must be absolute" in body["error"]


def test_delete_is_refused_while_an_instance_uses_it(api, openapi) -> None:
    api.backend.templates.build("bb", "busybox")
    assert create(api, openapi, "web1")["status"] == "success"
    status, body = call(api, openapi, "DELETE", "/1.0/templates/bb", "/1.0/templates/{name}")
    assert status == 409 and "web1" in body["error"]
    api.client.delete("web1")
    status, body = call(api, openapi, "DELETE", "/1.0/templates/bb", "/1.0/templates/{name}")
    assert status == 200, body
    assert api.backend.templates.list() == []
    status, body = call(api, openapi, "DELETE", "/1.0/templates/bb", "/1.0/templates/{name}")
    assert status == 404


@pytest.fixture
def small_host(api):
    """A host of 4 cpus and 24 GiB."""
    api.app.state.host.probe = lambda: {"physical": {"cpu": 4, "memory": 24 * GiB, "disk": 100 * GiB},
                                        "used": {"cpu": 0.5, "memory": 2 * GiB, "disk": 10 * GiB}}
    return api


def test_host_reports_physical_committed_and_used(small_host, openapi) -> None:
    api = small_host
    create(api, openapi, "a", config={"limits.memory": "8GiB", "limits.cpu": "2"})
    create(api, openapi, "b", config={"limits.memory": "4GiB"})
    create(api, openapi, "c", config={"limits.memory": "16GiB"})  # stopped: commits nothing
    api.client.start("a")
    api.client.start("b")
    status, body = call(api, openapi, "GET", "/1.0/host")
    assert status == 200
    h = body["metadata"]
    assert h["physical"] == {"cpu": 4, "memory": 24 * GiB, "disk": 100 * GiB}
    assert h["committed"] == {"memory": 12 * GiB, "cpu": 2, "instances": 2,
                              "unlimited": {"memory": 0, "cpu": 1}}
    assert h["overcommit"] == {"overcommit.memory": 1.0, "overcommit.cpu": 4.0}
    assert h["allowed"] == {"memory": 24 * GiB, "cpu": 16}
    assert h["used"]["memory"] == 2 * GiB


def test_a_start_past_the_memory_ratio_is_refused_saying_by_how_much(small_host, openapi) -> None:
    api = small_host
    create(api, openapi, "db1", config={"limits.memory": "16GiB"})
    create(api, openapi, "web1", config={"limits.memory": "10GiB"})
    api.client.start("db1")
    status, body = call(api, openapi, "PUT", "/1.0/instances/web1/state", "/1.0/instances/{name}/state",
                        json={"action": "start"})
    assert status == 409
    assert body["error"].startswith("starting web1 would commit 26 GiB of memory against 24 GiB physical "
                                    "(ratio 1): 2 GiB over; lower limits.memory or raise the ratio")
    assert api.db.get_instance("web1").status == "stopped" and ("start", "web1") not in api.backend.calls
    # a higher ratio lets it start
    status, body = call(api, openapi, "PUT", "/1.0/host", json={"overcommit.memory": 1.25})
    assert status == 200 and body["metadata"]["allowed"]["memory"] == 30 * GiB
    api.client.start("web1")
    assert api.db.get_instance("web1").status == "running"


def test_a_launch_past_the_ratio_is_refused_before_anything_is_made(small_host, openapi) -> None:
    api = small_host
    create(api, openapi, "db1", config={"limits.memory": "16GiB"})
    api.client.start("db1")
    ops_before = len(api.db.list_operations())
    status, body = call(api, openapi, "POST", "/1.0/instances",
                        json={"name": "web1", "template": "bb", "config": {"limits.memory": "10GiB"},
                              "start": True})
    assert status == 409, body
    assert body["error"].startswith("starting web1 would commit 26 GiB of memory against 24 GiB physical "
                                    "(ratio 1): 2 GiB over; lower limits.memory or raise the ratio")
    assert [r.name for r in api.db.list_instances()] == ["db1"]  # no row, no operation, no create
    assert len(api.db.list_operations()) == ops_before
    assert not [c for c in api.backend.calls if c[1] == "web1"], api.backend.calls
    # within the ratio: made and started in one operation
    status, body = call(api, openapi, "POST", "/1.0/instances",
                        json={"name": "web2", "template": "bb", "config": {"limits.memory": "8GiB"},
                              "start": True})
    assert status == 202, body
    op = wait(api, openapi, body)
    assert op["status"] == "success" and op["description"] == "Launching instance web2", op
    assert api.db.get_instance("web2").status == "running"
    assert [c for c in api.backend.calls if c[1] == "web2"] == [("create", "web2"), ("start", "web2")]


def test_cpu_ratio_and_bad_ratios(small_host, openapi) -> None:
    api = small_host
    create(api, openapi, "a", config={"limits.cpu": "12"})
    create(api, openapi, "b", config={"limits.cpu": "5"})
    api.client.start("a")
    with pytest.raises(BadState, match=r"17 cpus against 4 physical \(ratio 4\): 1 over"):
        api.client.start("b")
    status, body = call(api, openapi, "PUT", "/1.0/host", json={"overcommit.cpu": 0, "nosuch": 1})
    assert status == 400 and len(body["problems"]) == 2


def test_gib() -> None:
    assert gib(26 * GiB) == "26 GiB" and gib(1.5 * GiB) == "1.5 GiB" and gib(512 << 20) == "512 MiB"
