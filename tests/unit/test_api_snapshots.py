"""The API's snapshot, copy, export and import routes over a real UNIX socket with the fake
backend: checks before any change, the rows, the config kept and restored, reverts on failure,
and every response checked against docs/openapi.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from jaula.errors import BadState, ConfigError, Exists, ExitCode, NotFound
from tests.unit.test_api import call, create, wait

SNAPS = "/1.0/instances/{name}/snapshots"
SNAP = "/1.0/instances/{name}/snapshots/{snap}"


def snapshot(api, openapi, name: str, snap: str, **body: Any) -> tuple[int, dict[str, Any]]:
    status, resp = call(api, openapi, "POST", f"/1.0/instances/{name}/snapshots", SNAPS, json={"name": snap, **body})
    return status, (wait(api, openapi, resp) if status == 202 else resp)


def test_snapshot_keeps_the_config_of_its_moment_and_restore_brings_it_back(api, openapi) -> None:
    create(api, openapi, "web1", config={"limits.memory": "512MiB"})
    api.backend.roots["web1"] = {"/etc/motd": "one"}
    status, op = snapshot(api, openapi, "web1", "s1")
    assert status == 202 and op["status"] == "success", op
    assert op["metadata"]["snapshot"]["config"] == {"limits.memory": "512MiB"} and op["metadata"]["live"] is False
    api.client.update("web1", config={"limits.memory": "1GiB"})
    api.backend.roots["web1"] = {"/etc/motd": "two"}
    _, listed = call(api, openapi, "GET", "/1.0/instances/web1/snapshots", SNAPS)
    assert [(x["name"], x["size"]) for x in listed["metadata"]] == [("s1", 4096)]
    _, one = call(api, openapi, "GET", "/1.0/instances/web1/snapshots/s1", SNAP)
    assert one["metadata"]["profiles"] == [] and one["metadata"]["stateful"] is False

    status, resp = call(api, openapi, "POST", "/1.0/instances/web1/snapshots/s1/restore", SNAP + "/restore")
    assert status == 202 and wait(api, openapi, resp)["status"] == "success"
    assert api.backend.roots["web1"] == {"/etc/motd": "one"}
    assert api.db.get_instance("web1").config == {"limits.memory": "512MiB"}
    assert [s.name for s in api.db.list_snapshots("web1")] == ["s1"]  # kept
    types = [e.type for e in api.db.events()]
    assert "instance-snapshot-created" in types and "instance-snapshot-restored" in types


def test_bad_snapshot_requests_are_refused_before_any_change(api, openapi) -> None:
    create(api, openapi, "web1")
    status, body = call(api, openapi, "POST", "/1.0/instances/web1/snapshots", SNAPS,
                        json={"name": "Bad.Name", "stateful": True})
    assert status == 400 and body["exit_code"] == ExitCode.INVALID_CONFIG
    assert any("uppercase" in p for p in body["problems"]) and any("stateful" in p for p in body["problems"])
    status, body = call(api, openapi, "POST", "/1.0/instances/nope/snapshots", SNAPS, json={"name": "s1"})
    assert status == 404 and "Instance 'nope' not found" in body["error"]
    snapshot(api, openapi, "web1", "s1")
    status, body = snapshot(api, openapi, "web1", "s1")
    assert status == 409 and body["exit_code"] == ExitCode.EXISTS and "already has a snapshot 's1'" in body["error"]
    for method, path in (("GET", "/1.0/instances/web1/snapshots/s9"), ("DELETE", "/1.0/instances/web1/snapshots/s9"),
                         ("POST", "/1.0/instances/web1/snapshots/s9/restore")):
        status, body = call(api, openapi, method, path, SNAP + ("/restore" if path.endswith("restore") else ""))
        assert status == 404 and "has no snapshot 's9'" in body["error"], (method, path, body)
    assert [c[0] for c in api.backend.calls] == ["create", "snapshot"]


def test_restore_of_a_running_instance_needs_stop_then_restarts_it(api, openapi) -> None:
    create(api, openapi, "web1")
    snapshot(api, openapi, "web1", "s1")
    api.client.start("web1")
    with pytest.raises(BadState, match="restore with stop"):
        api.client.restore_snapshot("web1", "s1")
    op = api.client.restore_snapshot("web1", "s1", stop=True)
    assert op["metadata"]["pid"] > 0 and api.db.get_instance("web1").status == "running"
    assert [c[0] for c in api.backend.calls][-3:] == ["stop", "restore", "start"]


def test_put_restore_as_incus_does(api, openapi) -> None:
    create(api, openapi, "web1", config={"user.note": "first"})
    api.backend.roots["web1"] = {"/etc/motd": "one"}
    snapshot(api, openapi, "web1", "s1")
    api.client.update("web1", config={"user.note": "second"})
    api.backend.roots["web1"] = {"/etc/motd": "two"}
    # stopped: restored
    status, resp = call(api, openapi, "PUT", "/1.0/instances/web1", "/1.0/instances/{name}", json={"restore": "s1"})
    assert status == 202 and wait(api, openapi, resp)["status"] == "success", resp
    assert api.backend.roots["web1"] == {"/etc/motd": "one"}
    assert api.db.get_instance("web1").config == {"user.note": "first"}
    assert api.db.get_instance("web1").status == "stopped"
    # running: stopped, restored, started again (Incus's PUT restarts it)
    api.client.start("web1")
    status, resp = call(api, openapi, "PUT", "/1.0/instances/web1", "/1.0/instances/{name}", json={"restore": "s1"})
    op = wait(api, openapi, resp)
    assert op["status"] == "success" and op["metadata"]["pid"] > 0, op
    assert [c[0] for c in api.backend.calls][-3:] == ["stop", "restore", "start"]
    assert api.db.get_instance("web1").status == "running"
    # refused: a missing snapshot, a stateful restore, a body that is not a restore
    for body, code, words in (({"restore": "s9"}, 404, "has no snapshot 's9'"),
                              ({"restore": "s1", "stateful": True}, 400, "stateful"),
                              ({"restore": "Bad_Name"}, 400, "Snapshot"),
                              ({"config": {"user.note": "x"}}, 422, "restore: Field required")):
        status, resp = call(api, openapi, "PUT", "/1.0/instances/web1", "/1.0/instances/{name}", json=body)
        assert status == code and words in resp["error"], (body, status, resp)
    assert [c[0] for c in api.backend.calls][-1] == "start"  # nothing done by the refusals


def test_a_snapshot_whose_row_cannot_be_written_is_removed_again(api, openapi) -> None:
    create(api, openapi, "web1")
    real = api.db.add_snapshot
    api.db.add_snapshot = lambda row: (_ for _ in ()).throw(ConfigError("db: refused"))
    try:
        _, op = snapshot(api, openapi, "web1", "s1")
    finally:
        api.db.add_snapshot = real
    assert op["status"] == "failure" and "db: refused" in op["err"]
    assert api.backend.snaps["web1"] == {} and api.db.list_snapshots("web1") == []


def test_delete_snapshot_and_instance_delete_take_the_rows(api, openapi) -> None:
    create(api, openapi, "web1")
    snapshot(api, openapi, "web1", "s1")
    snapshot(api, openapi, "web1", "s2")
    status, resp = call(api, openapi, "DELETE", "/1.0/instances/web1/snapshots/s1", SNAP)
    assert status == 202 and wait(api, openapi, resp)["status"] == "success"
    assert [s.name for s in api.db.list_snapshots("web1")] == ["s2"] and list(api.backend.snaps["web1"]) == ["s2"]
    api.client.delete("web1")
    create(api, openapi, "web1")
    assert api.db.list_snapshots("web1") == []


def test_copy_from_the_root_or_a_snapshot_without_volatile_settings(api, openapi) -> None:
    create(api, openapi, "web1", config={"limits.memory": "512MiB", "user.note": "a"})
    api.backend.roots["web1"] = {"/f": "one"}
    snapshot(api, openapi, "web1", "s1")
    api.backend.roots["web1"] = {"/f": "two"}
    api.client.start("web1")

    status, resp = call(api, openapi, "POST", "/1.0/instances/web1/copy", "/1.0/instances/{name}/copy",
                        json={"name": "web2"})
    assert status == 202 and wait(api, openapi, resp)["status"] == "success"
    web2 = api.db.get_instance("web2")
    assert web2.status == "stopped" and web2.config == {"limits.memory": "512MiB", "user.note": "a"}
    assert web2.idmap_base != api.db.get_instance("web1").idmap_base
    assert api.backend.roots["web2"] == {"/f": "two"}
    api.client.copy("web1", "web3", snapshot="s1", description="old one")
    assert api.backend.roots["web3"] == {"/f": "one"} and api.db.get_instance("web3").description == "old one"


def test_a_copy_does_not_take_the_nics_own_mac_and_static_addresses() -> None:
    from jaula.daemon.transfer_api import without_volatile

    config = {"nic.eth0.type": "bridged", "nic.eth0.mac": "02:00:00:00:00:01", "nic.eth0.ipv4": "10.71.3.5",
              "nic.eth0.ipv6": "auto", "nic.eth1.ipv4": "none", "nic.eth1.mtu": "9000", "limits.cpu": "1.0"}
    assert without_volatile(config) == {"nic.eth0.type": "bridged", "nic.eth0.ipv6": "auto", "nic.eth1.ipv4": "none",
                                        "nic.eth1.mtu": "9000", "limits.cpu": "1.0"}


def test_copy_refusals_and_a_failed_copy_leaves_no_row(api, openapi) -> None:
    create(api, openapi, "web1")
    with pytest.raises(NotFound, match="has no snapshot 'nope'"):
        api.client.copy("web1", "web2", snapshot="nope")
    with pytest.raises(Exists, match="already exists"):
        api.client.copy("web1", "web1")
    with pytest.raises(ConfigError, match="uppercase"):
        api.client.copy("web1", "Web2")
    with pytest.raises(NotFound, match="Instance 'nope' not found"):
        api.client.copy("nope", "web2")
    api.backend.fail["copy"] = BadState("fake: pool full")
    with pytest.raises(BadState, match="pool full"):
        api.client.copy("web1", "web2")
    assert [r.name for r in api.db.list_instances()] == ["web1"]


def test_export_then_import_under_a_new_name(api, openapi, tmp_path: Path) -> None:
    api.client.create_profile("small", {"limits.memory": "256MiB"})
    create(api, openapi, "web1", config={"limits.cpu": "1"}, profiles=["small"], description="d")
    api.backend.roots["web1"] = {"/f": "one"}
    path = str(tmp_path / "web1.tar.gz")
    status, resp = call(api, openapi, "POST", "/1.0/instances/web1/export", "/1.0/instances/{name}/export",
                        json={"path": path})
    assert status == 202
    op = wait(api, openapi, resp)
    assert op["status"] == "success" and op["metadata"]["path"] == path and op["metadata"]["size"] > 0
    with pytest.raises(Exists, match="exists already"):
        api.client.export("web1", path)
    with pytest.raises(ConfigError, match="must be absolute"):
        api.client.export("web1", "rel.tar")

    status, resp = call(api, openapi, "POST", "/1.0/import", json={"path": path, "name": "web9"})
    assert status == 202 and wait(api, openapi, resp)["status"] == "success"
    web9 = api.db.get_instance("web9")
    assert (web9.config, web9.profiles, web9.description) == ({"limits.cpu": "1.0"}, ["small"], "d")
    assert api.backend.roots["web9"] == {"/f": "one"}
    with pytest.raises(Exists, match="already exists"):
        api.client.import_(path)  # named web1 in the file: taken


def test_import_refusals_before_any_change(api, openapi, tmp_path: Path) -> None:
    tmp_path = tmp_path / "files"
    tmp_path.mkdir()
    with pytest.raises(NotFound, match="No backup file"):
        api.client.import_(str(tmp_path / "none.tar"))
    with pytest.raises(ConfigError, match="must be absolute"):
        api.client.import_("x.tar")
    junk = tmp_path / "junk.tar"
    junk.write_text("not json")
    with pytest.raises(ConfigError, match="not a jaula volume backup"):
        api.client.import_(str(junk))
    bare = tmp_path / "bare.tar"
    bare.write_text('{"format": "jaula-volume", "root": {}}')
    with pytest.raises(ConfigError, match="without an instance record"):
        api.client.import_(str(bare))
    bad = tmp_path / "bad.tar"
    bad.write_text('{"instance": {"name": "x", "mode": "vm-ish", "template": "bb", "config": {"limits.memory": "1XB"},'
                   ' "profiles": ["gone"]}, "root": {}}')
    with pytest.raises(ConfigError) as exc:
        api.client.import_(str(bad))
    problems = exc.value.problems
    assert any("mode 'vm-ish'" in p for p in problems) and any("1XB" in p for p in problems)
    assert any("Profile 'gone' not found" in p for p in problems)
    assert api.db.list_instances() == [] and api.backend.calls == []
    assert sorted(os.listdir(tmp_path)) == ["bad.tar", "bare.tar", "junk.tar"]


def test_export_download_and_import_upload(api, openapi, tmp_path: Path) -> None:
    import time

    backups = tmp_path / "backups"
    backups.mkdir()
    api.backend.backups = str(backups)
    create(api, openapi, "web1", config={"user.a": "b"})
    api.backend.roots["web1"] = {"/f": "one"}
    out = tmp_path / "web1.tar.xz"
    op = api.client.export_to("web1", str(out), compression="xz")
    bid = op["metadata"]["backup"]
    assert op["metadata"]["download"] == f"/1.0/backups/{bid}" and op["metadata"]["size"] == out.stat().st_size
    assert '"root": {"/f": "one"}' in out.read_text()
    deadline = time.monotonic() + 10  # the file goes once sent (after the response)
    while os.listdir(backups) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(backups) == []
    with pytest.raises(Exists, match="exists already"):
        api.client.export_to("web1", str(out))
    for method in ("GET", "DELETE"):
        resp = api.client._http.request(method, f"/1.0/backups/{bid}")
        assert resp.status_code == 404 and "No backup" in resp.json()["error"]
    resp = api.client._http.request("GET", "/1.0/backups/..%2F..%2Fetc%2Fpasswd")
    assert resp.status_code == 404

    op = api.client.import_from(str(out), "web7")
    assert op["status"] == "success" and op["metadata"] == {"instance": "web7"}
    assert api.backend.roots["web7"] == {"/f": "one"} and api.db.get_instance("web7").config == {"user.a": "b"}
    junk = tmp_path / "junk.tar"
    junk.write_text("junk")
    with pytest.raises(ConfigError, match="not a jaula volume backup"):
        api.client.import_from(str(junk), "web8")
    with pytest.raises(Exists, match="already exists"):
        api.client.import_from(str(out))  # web1, as in the file
    assert os.listdir(backups) == []  # uploads go, imported or refused
    assert [r.name for r in api.db.list_instances()] == ["web1", "web7"]


def test_a_download_that_is_not_fetched_can_be_deleted(api, openapi, tmp_path: Path) -> None:
    tmp_path = tmp_path / "backups"
    tmp_path.mkdir()
    api.backend.backups = str(tmp_path)
    create(api, openapi, "web1")
    status, resp = call(api, openapi, "POST", "/1.0/instances/web1/export", "/1.0/instances/{name}/export", json={})
    op = wait(api, openapi, resp)
    assert status == 202 and op["status"] == "success" and os.listdir(tmp_path) == [op["metadata"]["backup"] + ".tar.gz"]
    status, _ = call(api, openapi, "DELETE", op["metadata"]["download"], "/1.0/backups/{backup}")
    assert status == 200 and os.listdir(tmp_path) == []


def test_export_and_import_with_snapshots(api, openapi, tmp_path: Path) -> None:
    import json

    backups = tmp_path / "backups"
    backups.mkdir()
    api.backend.backups = str(backups)
    api.client.create_profile("small", {"limits.memory": "256MiB"})
    create(api, openapi, "web1", config={"user.a": "1"}, profiles=["small"])
    api.backend.roots["web1"] = {"/f": "one"}
    snapshot(api, openapi, "web1", "s1")
    api.client.update("web1", config={"user.a": "2"}, profiles=[])
    api.backend.roots["web1"] = {"/f": "two"}
    snapshot(api, openapi, "web1", "s2")
    out = tmp_path / "web1.tar.gz"
    api.client.export_to("web1", str(out), snapshots=True)
    assert [k["name"] for k in json.loads(out.read_text())["instance"]["snapshots"]] == ["s1", "s2"]

    api.client.import_from(str(out), "web2")
    kept = api.db.list_snapshots("web2")
    assert [(k.name, k.config, k.profiles) for k in kept] == [("s1", {"user.a": "1"}, ["small"]),
                                                               ("s2", {"user.a": "2"}, [])]
    assert [k.created for k in kept] == [k.created for k in api.db.list_snapshots("web1")]
    api.client.restore_snapshot("web2", "s1")
    assert api.backend.roots["web2"] == {"/f": "one"} and api.db.get_instance("web2").profiles == ["small"]

    plain = tmp_path / "plain.tar.gz"  # without snapshots: none come
    api.client.export_to("web1", str(plain))
    api.client.import_from(str(plain), "web3")
    assert api.db.list_snapshots("web3") == []


def test_a_backup_with_bad_snapshot_records_is_refused(api, openapi, tmp_path: Path) -> None:
    import json

    def backup(snaps: object) -> str:
        path = tmp_path / f"b{len(list(tmp_path.iterdir()))}.tar"
        path.write_text(json.dumps({"instance": {"name": "x", "mode": "system", "template": "bb", "config": {},
                                                 "profiles": [], "snapshots": snaps}, "root": {}, "snapshots": {}}))
        return str(path)

    for snaps, words in (
        ({"s1": {}}, "not a list"),
        ([{"name": "Bad!"}], "uppercase"),
        ([{"name": "s1", "config": {"a": 1}}], "malformed"),
        ([{"name": "s1"}, {"name": "s1"}], "listed twice"),
        ([{"name": "s1", "profiles": ["gone"]}], "Profile 'gone' not found"),
    ):
        with pytest.raises(ConfigError) as exc:
            api.client.import_(backup(snaps))
        assert any(words in p for p in exc.value.problems), (snaps, exc.value.problems)
    assert api.db.list_instances() == [] and api.backend.calls == []


def test_a_snapshot_left_in_the_pool_without_its_row_is_replaced(api, openapi) -> None:
    create(api, openapi, "web1")
    api.backend.snaps["web1"] = {"s1": {"/f": "stale"}}  # jaulad killed between the pool and the row
    api.backend.roots["web1"] = {"/f": "now"}
    _, op = snapshot(api, openapi, "web1", "s1")
    assert op["status"] == "success" and api.backend.snaps["web1"]["s1"] == {"/f": "now"}
    assert [c[0] for c in api.backend.calls] == ["create", "snapshot", "delete_snapshot", "snapshot"]


def test_an_upload_that_would_fill_the_disk_is_dropped(api, openapi, tmp_path: Path, monkeypatch) -> None:
    from jaula.daemon import transfer_api

    api.backend.backups = str(tmp_path / "backups")
    os.mkdir(api.backend.backups)
    big = tmp_path / "big.tar"
    big.write_bytes(b"x" * (3 << 20))
    st = os.statvfs(tmp_path)
    monkeypatch.setattr(transfer_api, "UPLOAD_RESERVE", st.f_blocks * st.f_frsize + 1)  # more than the disk
    with pytest.raises(ConfigError, match="Not enough disk on jaulad's host"):
        api.client.import_from(str(big), "web1")
    assert os.listdir(api.backend.backups) == [] and api.db.list_instances() == []


def test_a_failed_restore_starts_the_stopped_instance_again(api, openapi) -> None:
    create(api, openapi, "web1", config={"user.a": "1"})
    snapshot(api, openapi, "web1", "s1")
    api.client.update("web1", config={"user.a": "2"})
    api.client.start("web1")
    api.backend.fail["restore"] = BadState("fake: pool busy")
    with pytest.raises(BadState, match="pool busy"):
        api.client.restore_snapshot("web1", "s1", stop=True)
    row = api.db.get_instance("web1")
    assert row.status == "running" and row.config == {"user.a": "2"}
    assert [c[0] for c in api.backend.calls][-3:] == ["stop", "restore", "start"]


def test_copy_with_the_sources_snapshots(api, openapi) -> None:
    create(api, openapi, "web1", config={"user.a": "1"})
    api.backend.roots["web1"] = {"/f": "one"}
    snapshot(api, openapi, "web1", "s1")
    api.client.update("web1", config={"user.a": "2"})
    api.backend.roots["web1"] = {"/f": "two"}
    snapshot(api, openapi, "web1", "s2")
    with pytest.raises(ConfigError, match="give one of them"):
        api.client.copy("web1", "web2", snapshot="s1", snapshots=True)
    api.client.copy("web1", "web2", snapshots=True)
    rows = api.db.list_snapshots("web2")
    assert [(k.name, k.config) for k in rows] == [("s1", {"user.a": "1"}), ("s2", {"user.a": "2"})]
    assert [k.created for k in rows] == [k.created for k in api.db.list_snapshots("web1")]
    assert api.backend.snaps["web2"] == api.backend.snaps["web1"]
    api.client.restore_snapshot("web2", "s1")
    assert api.backend.roots["web2"] == {"/f": "one"} and api.db.get_instance("web2").config == {"user.a": "1"}
    api.client.copy("web1", "web3")
    assert api.db.list_snapshots("web3") == [] and api.backend.snaps["web3"] == {}
