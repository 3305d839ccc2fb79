"""A live change of a running instance's limits (`jaula config set web1 limits.memory=...`,
PATCH /1.0/instances/{name}) is held to the host's overcommit ratios as a start is: a raise past
them is refused saying by how much, and changes nothing; a lowering always passes; a stopped
instance's limits are checked at its start, not at the change."""

from __future__ import annotations

import pytest

from tests.unit.test_api import call, create, wait

GiB = 1 << 30


@pytest.fixture
def small_host(api):
    """A host of 4 cpus and 24 GiB."""
    api.app.state.host.probe = lambda: {"physical": {"cpu": 4, "memory": 24 * GiB, "disk": 100 * GiB},
                                        "used": {"cpu": 0.5, "memory": 2 * GiB, "disk": 10 * GiB}}
    return api


def patch(api, openapi, name: str, config: dict) -> tuple[int, dict]:
    return call(api, openapi, "PATCH", f"/1.0/instances/{name}", "/1.0/instances/{name}", json={"config": config})


def test_a_live_raise_past_the_memory_ratio_is_refused_and_changes_nothing(small_host, openapi) -> None:
    api = small_host
    create(api, openapi, "db1", config={"limits.memory": "16GiB"})
    create(api, openapi, "web1", config={"limits.memory": "4GiB"})
    api.client.start("db1")
    api.client.start("web1")
    updates = [c for c in api.backend.calls if c[0] == "update"]
    status, body = patch(api, openapi, "web1", {"limits.memory": "100GiB"})
    assert status == 409, body
    assert body["error"].startswith("this change to web1 would commit 116 GiB of memory against 24 GiB "
                                    "physical (ratio 1): 92 GiB over; lower limits.memory or raise the ratio")
    assert api.db.get_instance("web1").config["limits.memory"] == "4GiB"
    assert [c for c in api.backend.calls if c[0] == "update"] == updates  # nothing applied to the instance
    # within the ratio: applied and kept
    status, body = patch(api, openapi, "web1", {"limits.memory": "8GiB"})
    assert status == 200, body
    status, body = call(api, openapi, "GET", "/1.0/host")
    assert body["metadata"]["committed"]["memory"] == 24 * GiB


def test_a_live_raise_of_cpu_past_its_ratio_is_refused(small_host, openapi) -> None:
    api = small_host
    create(api, openapi, "a", config={"limits.cpu": "12"})
    create(api, openapi, "b", config={"limits.cpu": "2"})
    api.client.start("a")
    api.client.start("b")
    status, body = patch(api, openapi, "b", {"limits.cpu": "5"})
    assert status == 409 and "this change to b would commit 17 cpus against 4 physical (ratio 4): 1 over" in body["error"]


def test_a_lowering_passes_even_over_the_ratio_and_a_stopped_instance_is_checked_at_start(small_host, openapi) -> None:
    api = small_host
    create(api, openapi, "big", config={"limits.memory": "20GiB"})
    api.client.start("big")
    status, body = call(api, openapi, "PUT", "/1.0/host", json={"overcommit.memory": 0.5})  # now 8 GiB over
    assert status == 200, body
    status, body = patch(api, openapi, "big", {"limits.memory": "16GiB"})  # still over, but less: allowed
    assert status == 200, body
    create(api, openapi, "idle", config={"limits.memory": "1GiB"})
    status, body = patch(api, openapi, "idle", {"limits.memory": "64GiB"})  # stopped: commits nothing yet
    assert status == 200, body


def test_a_restart_that_could_not_start_again_is_refused_before_its_stop(small_host, openapi) -> None:
    """A running instance over the ratios (they were lowered under it): its restart is refused
    at once, saying by how much, and it keeps running (it was stopped, then left stopped)."""
    api = small_host
    create(api, openapi, "big", config={"limits.memory": "20GiB"})
    api.client.start("big")
    status, body = call(api, openapi, "PUT", "/1.0/host", json={"overcommit.memory": 0.5})
    assert status == 200, body
    status, body = call(api, openapi, "PUT", "/1.0/instances/big/state", "/1.0/instances/{name}/state",
                        json={"action": "restart"})
    assert status == 409 and body["error"].startswith("starting big would commit 20 GiB of memory against "
                                                      "24 GiB physical (ratio 0.5): 8 GiB over"), body
    assert api.db.get_instance("big").status == "running" and ("stop", "big") not in api.backend.calls
    # within the ratio, a restart goes through
    call(api, openapi, "PUT", "/1.0/host", json={"overcommit.memory": 1})
    status, body = call(api, openapi, "PUT", "/1.0/instances/big/state", "/1.0/instances/{name}/state",
                        json={"action": "restart"})
    assert status == 202 and wait(api, openapi, body)["status"] == "success"
    assert api.db.get_instance("big").status == "running"
