"""An app instance's own command (issue 4: mode app "runs one command"): given at create
(`POST /1.0/instances` `command`, `jaula launch busybox a1 --mode app -- sleep 1000`), stored
(schema migration 5), handed to the driver as Instance.command, shown by GET, kept by copy and by
export/import; refused for a system instance. Without one an app runs its template's command.
Responses are checked against docs/openapi.json."""

from __future__ import annotations

from click.testing import CliRunner

from jaula.cli.main import cli
from jaula.errors import ExitCode
from tests.unit.test_api import call, create, wait


def test_an_app_instance_runs_its_own_command(api, openapi, monkeypatch) -> None:
    seen: dict[str, list[str]] = {}
    real_start = api.backend.start

    def start(inst):  # type: ignore[no-untyped-def]
        seen[inst.name] = list(inst.command)
        return real_start(inst)
    monkeypatch.setattr(api.backend, "start", start)

    assert create(api, openapi, "a1", mode="app", command=["sleep", "1000"])["status"] == "success"
    status, body = call(api, openapi, "GET", "/1.0/instances/a1", "/1.0/instances/{name}")
    assert status == 200 and body["metadata"]["command"] == ["sleep", "1000"]
    api.client.start("a1")
    assert seen["a1"] == ["sleep", "1000"]
    assert api.db.get_instance("a1").command == ["sleep", "1000"]

    assert create(api, openapi, "a2", mode="app")["status"] == "success"  # the template's command
    api.client.start("a2")
    assert seen["a2"] == []

    # a copy keeps it
    status, body = call(api, openapi, "POST", "/1.0/instances/a1/copy", "/1.0/instances/{name}/copy",
                        json={"name": "a3"})
    assert status == 202 and wait(api, openapi, body)["status"] == "success", body
    assert api.db.get_instance("a3").command == ["sleep", "1000"]


def test_a_system_instance_takes_no_command(api, openapi) -> None:
    status, body = call(api, openapi, "POST", "/1.0/instances",
                        json={"name": "s1", "template": "bb", "command": ["sleep", "1"]})
    assert status == 400 and any("only an app instance" in p for p in body["problems"]), body
    status, body = call(api, openapi, "POST", "/1.0/instances",
                        json={"name": "s1", "template": "bb", "mode": "app", "command": ["a\0b"]})
    assert status == 400 and any("NUL" in p for p in body["problems"]), body
    assert api.client.list() == []


def test_export_and_import_keep_the_command(api, openapi, tmp_path) -> None:
    assert create(api, openapi, "a1", mode="app", command=["/bin/echo", "hi there"])["status"] == "success"
    path = str(tmp_path / "a1.tar")
    status, body = call(api, openapi, "POST", "/1.0/instances/a1/export", "/1.0/instances/{name}/export",
                        json={"path": path})
    assert status == 202 and wait(api, openapi, body)["status"] == "success", body
    status, body = call(api, openapi, "POST", "/1.0/import", json={"path": path, "name": "a2"})
    assert status == 202 and wait(api, openapi, body)["status"] == "success", body
    assert api.db.get_instance("a2").command == ["/bin/echo", "hi there"]


def test_cli_takes_the_command_after_the_name(api) -> None:
    def jaula(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--socket", api.socket, *args], catch_exceptions=False)
    r = jaula("launch", "bb", "a1", "--mode", "app", "--", "sleep", "-n", "1000")
    assert r.exit_code == 0, r.output
    assert api.client.get("a1")["command"] == ["sleep", "-n", "1000"]
    r = jaula("create", "bb", "s1", "--", "sleep", "1")
    assert r.exit_code == ExitCode.USAGE and "COMMAND is for an app instance" in r.output
    assert [i["name"] for i in api.client.list()] == ["a1"]
