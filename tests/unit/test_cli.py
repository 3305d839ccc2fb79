"""The `jaula` CLI (click's CliRunner) against the API served on a real UNIX socket, fake backend."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import yaml
from click.testing import CliRunner

from jaula.cli.main import cli
from jaula.errors import ExitCode


def jaula(api: SimpleNamespace, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--socket", api.socket, *args], catch_exceptions=False)


def test_launch_list_info_and_formats(api) -> None:
    assert jaula(api, "profile", "create", "small", "-c", "limits.memory=512MiB").exit_code == 0
    r = jaula(api, "launch", "bb", "web1", "-c", "limits.cpu=1.5", "--profile", "small")
    assert r.exit_code == 0, r.output
    assert r.output == "Instance web1 created from bb\nInstance web1 started\n"
    assert jaula(api, "create", "bb", "db1").exit_code == 0
    table = jaula(api, "list").output.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "TEMPLATE", "MODE", "PROFILES", "IPV4"]
    assert table[1].split() == ["db1", "stopped", "bb", "system"] and table[2].split() == ["web1", "running", "bb", "system", "small"]
    as_json = json.loads(jaula(api, "list", "--format", "json").output)
    assert [i["name"] for i in as_json] == ["db1", "web1"] and as_json[1]["expanded_config"]["limits.memory"] == "512MiB"
    assert yaml.safe_load(jaula(api, "list", "--format", "yaml").output) == as_json
    rows = list(csv.reader(io.StringIO(jaula(api, "list", "--format", "csv", "-c", "name,status,pid").output)))
    assert rows == [["name", "status", "pid"], ["db1", "stopped", ""], ["web1", "running", "1001"]]
    info = yaml.safe_load(jaula(api, "info", "web1").output)
    assert info["config"] == {"limits.cpu": "1.5"} and info["profiles"] == ["small"]
    r = jaula(api, "list", "-c", "name,colour")
    assert r.exit_code == ExitCode.USAGE and "unknown column colour" in r.output


def test_lifecycle_and_config(api) -> None:
    assert jaula(api, "create", "bb", "web1", "-c", "user.note=hi").exit_code == 0
    assert jaula(api, "start", "web1").output == "Instance web1 started\n"
    assert jaula(api, "config", "set", "web1", "limits.memory=1GiB").exit_code == 0
    assert jaula(api, "config", "show", "web1").output == "limits.memory=1GiB\nuser.note=hi\n"
    assert jaula(api, "config", "unset", "web1", "user.note").exit_code == 0
    assert jaula(api, "config", "show", "web1").output == "limits.memory=1GiB\n"
    assert jaula(api, "freeze", "web1").exit_code == 0 and jaula(api, "unfreeze", "web1").exit_code == 0
    assert jaula(api, "restart", "web1").output == "Instance web1 restarted\n"
    r = jaula(api, "stop", "web1", "--force", "--timeout", "0")
    assert r.output == "Instance web1 stopped (killed)\n"  # --force: no timeout was waited
    assert jaula(api, "delete", "web1").output == "Instance web1 deleted\n"
    assert api.db.list_instances() == []


def test_errors_have_the_api_message_and_documented_exit_codes(api) -> None:
    r = jaula(api, "info", "nope")
    assert r.exit_code == ExitCode.NOT_FOUND and "Error: Instance 'nope' not found" in r.output
    r = jaula(api, "create", "bb", "Web_1")
    assert r.exit_code == ExitCode.INVALID_CONFIG and "uppercase" in r.output
    r = jaula(api, "create", "bb", "web1", "-c", "limits.memory=lots", "-c", "limits.cpu=0")
    assert r.exit_code == ExitCode.INVALID_CONFIG
    assert "refused" in r.output and "  - Instance 'web1': limits.cpu" in r.output and "'lots'" in r.output
    r = jaula(api, "create", "bb", "web1", "-c", "limits.memory")
    assert r.exit_code == ExitCode.USAGE and "KEY=VALUE" in r.output
    assert jaula(api, "create", "bb", "web1").exit_code == 0
    assert jaula(api, "create", "bb", "web1").exit_code == ExitCode.EXISTS
    assert jaula(api, "stop", "web1").exit_code == ExitCode.BAD_STATE
    jaula(api, "start", "web1")
    r = jaula(api, "delete", "web1")
    assert r.exit_code == ExitCode.BAD_STATE and "force" in r.output
    assert jaula(api, "delete", "--force", "web1").exit_code == 0
    assert "Exit codes:" in jaula(api, "--help").output


def test_unreachable_daemon_and_socket_from_the_environment(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["list"], env={"JAULA_SOCKET": str(tmp_path / "none.sock")})
    assert r.exit_code == ExitCode.FAILURE
    assert f"Cannot reach jaulad at {str(tmp_path / 'none.sock')!r}" in r.output and "JAULA_SOCKET" in r.output


def test_stats_prints_the_beancounter_table(api) -> None:
    jaula(api, "launch", "bb", "web1", "-c", "limits.memory=64MiB")
    lines = jaula(api, "stats", "web1").output.splitlines()
    assert lines[0].split() == ["uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt", "unit"]
    assert lines[1].split() == ["web1:", "memory", str(1 << 20), str(2 << 20), "max", str(64 << 20), "0", "bytes"]
