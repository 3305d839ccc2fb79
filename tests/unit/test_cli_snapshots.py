"""`jaula snapshot|copy|export|import` (click's CliRunner) against the API on a real UNIX socket
with the fake backend: messages, default snapshot names, the table, exit codes, local files."""

from __future__ import annotations

import json
from pathlib import Path

from jaula.errors import ExitCode
from tests.unit.test_cli import jaula


def test_snapshot_verbs(api) -> None:
    assert jaula(api, "create", "bb", "web1", "-c", "user.a=1").exit_code == 0
    r = jaula(api, "snapshot", "create", "web1")
    assert r.exit_code == 0 and r.output == "Snapshot snap0 of web1 created\n"
    assert jaula(api, "snapshot", "create", "web1").output == "Snapshot snap1 of web1 created\n"
    assert jaula(api, "snapshot", "create", "web1", "before").exit_code == 0
    table = jaula(api, "snapshot", "list", "web1").output.splitlines()
    assert table[0].split() == ["NAME", "CREATED", "SIZE", "PROFILES"]
    assert [line.split()[0] for line in table[1:]] == ["snap0", "snap1", "before"] and "4.0 KiB" in table[1]
    listed = json.loads(jaula(api, "snapshot", "list", "web1", "--format", "json").output)
    assert listed[0]["config"] == {"user.a": "1"}
    r = jaula(api, "snapshot", "create", "web1", "Bad")
    assert r.exit_code == ExitCode.INVALID_CONFIG and "uppercase" in r.output
    assert jaula(api, "start", "web1").exit_code == 0
    r = jaula(api, "snapshot", "restore", "web1", "before")
    assert r.exit_code == ExitCode.BAD_STATE and "--stop" in r.output
    r = jaula(api, "snapshot", "restore", "--stop", "web1", "before")
    assert r.exit_code == 0 and r.output == "Instance web1 restored to snapshot before and started again\n"
    r = jaula(api, "snapshot", "delete", "web1", "snap0", "nope")
    assert r.exit_code == ExitCode.NOT_FOUND and "Snapshot snap0 of web1 deleted" in r.output and "'nope'" in r.output
    assert all(c in jaula(api, "snapshot", "--help").output for c in ("create", "list", "restore", "delete"))


def test_copy_export_import(api, tmp_path: Path) -> None:
    api.backend.backups = str(tmp_path)
    assert jaula(api, "create", "bb", "web1").exit_code == 0
    api.backend.roots["web1"] = {"/f": "one"}
    assert jaula(api, "snapshot", "create", "web1", "s1").exit_code == 0
    r = jaula(api, "copy", "web1", "web2", "--snapshot", "s1")
    assert r.exit_code == 0 and r.output == "Instance web2 created as a copy of web1 (snapshot s1)\n"
    r = jaula(api, "copy", "web1", "web2")
    assert r.exit_code == ExitCode.EXISTS
    r = jaula(api, "copy", "web1", "web4", "--snapshots")
    assert r.exit_code == 0 and r.output == "Instance web4 created as a copy of web1 with its snapshots\n"
    assert [k.name for k in api.db.list_snapshots("web4")] == ["s1"]
    out = tmp_path / "out" / "web1.tar.bz2"
    out.parent.mkdir()
    r = jaula(api, "export", "web1", str(out), "--snapshots")
    assert r.exit_code == 0 and r.output.startswith(f"Instance web1 exported to {out} (")
    assert json.loads(out.read_text())["instance"]["snapshots"][0]["name"] == "s1"
    r = jaula(api, "export", "web1", str(tmp_path / "web1.zip"))
    assert r.exit_code == ExitCode.USAGE and ".tar.gz" in r.output
    r = jaula(api, "import", str(out), "web3")
    assert r.exit_code == 0 and r.output == f"Instance web3 imported from {out}\n"
    assert [s.name for s in api.db.list_snapshots("web3")] == ["s1"]
    r = jaula(api, "import", str(tmp_path / "none.tar"))
    assert r.exit_code == ExitCode.USAGE and "does not exist" in r.output
