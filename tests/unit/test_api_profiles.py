"""Profiles through the API (real UNIX socket, fake backend), every response checked against
docs/openapi.json: a change is checked for every instance using the profile before anything
changes, running instances take live settings at once and say what waits for a restart, a
failure half-way undoes what was applied, and a profile in use is neither deleted nor renamed."""

from __future__ import annotations

from typing import Any

from jaula.errors import BadState, ExitCode
from tests.unit.test_api import call, create

ONE = "/1.0/profiles/{name}"


def profile(api: Any, openapi: dict[str, Any], name: str, **config: str) -> dict[str, Any]:
    status, body = call(api, openapi, "POST", "/1.0/profiles", json={"name": name, "config": config})
    assert status == 201, body
    return body["metadata"]


def patch(api: Any, openapi: dict[str, Any], name: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return call(api, openapi, "PATCH", f"/1.0/profiles/{name}", ONE, json=body)


def test_show_lists_the_users_and_put_replaces_the_whole_config(api, openapi) -> None:
    p = profile(api, openapi, "small", **{"limits.memory": "512MiB", "user.note": "x"})
    assert p["used_by"] == []
    create(api, openapi, "web1", profiles=["small"])
    _, one = call(api, openapi, "GET", "/1.0/profiles/small", ONE)
    assert one["metadata"]["used_by"] == ["web1"]
    _, listed = call(api, openapi, "GET", "/1.0/profiles")
    assert [(x["name"], x["used_by"]) for x in listed["metadata"]] == [("small", ["web1"])]
    status, body = call(api, openapi, "PUT", "/1.0/profiles/small", ONE,
                        json={"config": {"limits.cpu": "2"}, "description": "two cpus"})
    assert status == 200, body
    got = body["metadata"]
    assert got["profile"]["config"] == {"limits.cpu": "2.0"} and got["profile"]["description"] == "two cpus"
    assert got["live"] == {} and got["next_start"] == {}  # web1 is stopped: it takes it at its start
    assert api.client.get("web1")["expanded_config"] == {"limits.cpu": "2.0"}
    assert [c for c in api.backend.calls if c[0] == "update"] == []
    # PATCH: a key set, one removed, the description kept when not given
    status, body = patch(api, openapi, "small", config={"limits.memory": "1GiB", "limits.cpu": None})
    assert status == 200 and body["metadata"]["profile"]["config"] == {"limits.memory": "1GiB"}
    assert body["metadata"]["profile"]["description"] == "two cpus"
    status, body = patch(api, openapi, "nope", config={})
    assert status == 404 and body["exit_code"] == ExitCode.NOT_FOUND


def test_running_instances_take_live_settings_at_once_and_the_rest_at_next_start(api, openapi) -> None:
    profile(api, openapi, "small", **{"limits.memory": "512MiB"})
    create(api, openapi, "web1", profiles=["small"])
    create(api, openapi, "web2", profiles=["small"])
    create(api, openapi, "web3", profiles=["small"], config={"limits.memory": "256MiB"})  # its own wins
    api.client.start("web1")
    api.client.start("web3")
    status, body = patch(api, openapi, "small", config={"limits.memory": "1GiB", "limits.processes": "300"})
    assert status == 200, body
    assert body["metadata"]["live"] == {"web1": ["limits.memory", "limits.processes"], "web3": ["limits.processes"]}
    assert body["metadata"]["next_start"] == {}
    assert api.backend.configs["web1"]["limits.memory"] == 1 << 30
    assert api.backend.configs["web1"]["limits.processes"] == 300
    assert api.backend.configs["web3"]["limits.memory"] == 256 << 20
    assert ("update", "web2") not in api.backend.calls  # stopped: nothing to apply
    # a setting that needs a restart: stored, said, not applied
    before = len(api.backend.calls)
    status, body = patch(api, openapi, "small", config={"security.nesting": "true"})
    assert status == 200, body
    assert body["metadata"]["live"] == {}
    assert body["metadata"]["next_start"] == {"web1": ["security.nesting"], "web3": ["security.nesting"]}
    assert api.backend.calls[before:] == []
    assert api.client.get("web2")["expanded_config"]["security.nesting"] == "true"


def test_a_change_bad_for_one_user_is_refused_before_any_change(api, openapi) -> None:
    profile(api, openapi, "small", **{"limits.memory": "512MiB"})
    create(api, openapi, "web1", profiles=["small"])
    host = {"network.mode": "host", "security.privileged": "true"}  # valid alone: no NIC of its own
    create(api, openapi, "web2", profiles=["small"], config=host)
    create(api, openapi, "web3", profiles=["small"], config=host)
    api.client.start("web1")
    before = list(api.backend.calls)
    status, body = patch(api, openapi, "small", config={"limits.cpu": "1", "nic.eth0.network": "default"})
    assert status == 400 and body["exit_code"] == ExitCode.INVALID_CONFIG, body
    problems = body["problems"]  # every instance's problems, each named
    assert any("'web2'" in p and "host's network has no NICs" in p for p in problems), problems
    assert any("'web3'" in p and "host's network has no NICs" in p for p in problems), problems
    assert api.db.get_profile("small").config == {"limits.memory": "512MiB"}
    assert api.backend.calls == before  # web1 (running) was not touched
    status, body = patch(api, openapi, "small", config={"limits.memory": "12XB"})
    assert status == 400 and "12XB" in body["problems"][0]
    assert api.db.get_profile("small").config == {"limits.memory": "512MiB"}


def test_a_failure_half_way_undoes_the_live_changes(api, openapi) -> None:
    profile(api, openapi, "small", **{"limits.memory": "512MiB"})
    for name in ("web1", "web2"):
        create(api, openapi, name, profiles=["small"])
        api.client.start(name)
    real = api.backend.update

    def update(inst: Any, config: dict[str, Any]) -> dict[str, Any]:
        if inst.name == "web2":
            raise BadState("fake: the cgroup refused it")
        return real(inst, config)

    api.backend.update = update
    status, body = patch(api, openapi, "small", config={"limits.memory": "1GiB"})
    assert status == 409 and "cgroup refused" in body["error"]
    assert api.backend.configs["web1"]["limits.memory"] == 512 << 20  # applied, then undone
    assert [c for c in api.backend.calls if c == ("update", "web1")] == [("update", "web1")] * 2
    assert api.db.get_profile("small").config == {"limits.memory": "512MiB"}


def test_delete_and_rename_are_refused_while_in_use_naming_the_instances(api, openapi) -> None:
    profile(api, openapi, "small", **{"limits.memory": "512MiB"})
    profile(api, openapi, "big")
    create(api, openapi, "web1", profiles=["small"])
    create(api, openapi, "web2", profiles=["big", "small"])
    status, body = call(api, openapi, "DELETE", "/1.0/profiles/small", ONE)
    assert status == 409 and body["exit_code"] == ExitCode.BAD_STATE
    assert "used by web1, web2" in body["error"]
    status, body = call(api, openapi, "POST", "/1.0/profiles/small", ONE, json={"name": "tiny"})
    assert status == 409 and "used by web1, web2" in body["error"]
    assert [p.name for p in api.db.list_profiles()] == ["big", "small"]
    api.client.update("web1", profiles=[])
    api.client.update("web2", profiles=["big"])
    status, body = call(api, openapi, "POST", "/1.0/profiles/small", ONE, json={"name": "big"})
    assert status == 409 and "already exists" in body["error"]
    status, body = call(api, openapi, "POST", "/1.0/profiles/small", ONE, json={"name": "Bad/name"})
    assert status == 400
    status, body = call(api, openapi, "POST", "/1.0/profiles/small", ONE, json={"name": "tiny"})
    assert status == 200 and body["metadata"]["name"] == "tiny"
    assert body["metadata"]["config"] == {"limits.memory": "512MiB"}
    status, body = call(api, openapi, "DELETE", "/1.0/profiles/tiny", ONE)
    assert status == 200, body
    status, body = call(api, openapi, "DELETE", "/1.0/profiles/tiny", ONE)
    assert status == 404
    assert [p.name for p in api.db.list_profiles()] == ["big"]
    kinds = [e.type for e in api.db.events()]
    assert "profile-renamed" in kinds and "profile-deleted" in kinds


def test_client_methods(api) -> None:
    c = api.client
    c.create_profile("small", {"limits.memory": "512MiB"})
    c.create("bb", "web1", profiles=["small"])
    c.start("web1")
    got = c.update_profile("small", {"limits.memory": "1GiB"}, description="bigger")
    assert got["live"] == {"web1": ["limits.memory"]} and got["profile"]["description"] == "bigger"
    got = c.replace_profile("small", {"limits.cpu": "1"})
    assert got["profile"]["config"] == {"limits.cpu": "1.0"} and got["profile"]["description"] == "bigger"
    c.update("web1", profiles=[])
    assert c.rename_profile("small", "tiny")["name"] == "tiny"
    c.delete_profile("tiny")
    assert c.profiles() == []
