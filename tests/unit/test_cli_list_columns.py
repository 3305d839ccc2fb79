"""`jaula list -c COLUMNS` picks the columns of every format: the table's and csv's columns, and,
given explicitly, the keys of json and yaml (in its order); without -c, json and yaml are the
whole objects."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from jaula.cli.main import cli
from jaula.errors import ExitCode


def jaula(api, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--socket", api.socket, *args], catch_exceptions=False)


def test_columns_pick_the_keys_of_json_and_yaml(api) -> None:
    assert jaula(api, "launch", "bb", "web1", "--description", "front").exit_code == 0
    assert jaula(api, "create", "bb", "db1").exit_code == 0
    whole = json.loads(jaula(api, "list", "--format", "json").output)
    assert {"name", "status", "config", "expanded_config", "created"} <= set(whole[0])
    picked = json.loads(jaula(api, "list", "--format", "json", "-c", "status,name,description").output)
    assert picked == [{"status": "stopped", "name": "db1", "description": ""},
                      {"status": "running", "name": "web1", "description": "front"}]
    assert [list(i) for i in picked] == [["status", "name", "description"]] * 2  # -c's order
    assert yaml.safe_load(jaula(api, "list", "--format", "yaml", "-c", "status,name,description").output) == picked
    out = jaula(api, "list", "--format", "csv", "-c", "name,status").output
    assert out == "name,status\ndb1,stopped\nweb1,running\n"
    r = jaula(api, "list", "--format", "json", "-c", "name,nosuch")
    assert r.exit_code == ExitCode.USAGE and "unknown column nosuch" in r.output
