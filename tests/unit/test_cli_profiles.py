"""`jaula profile ...` (click's CliRunner) against the API on a real UNIX socket, fake backend."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from jaula.cli.main import cli
from jaula.cli.profiles import document, parse
from jaula.errors import ConfigError, ExitCode
from tests.unit.test_cli import jaula


def ok(api, *args: str) -> str:  # type: ignore[no-untyped-def]
    r = jaula(api, *args)
    assert r.exit_code == 0, r.output
    return r.output


def test_set_unset_show_and_what_running_instances_took(api) -> None:
    ok(api, "profile", "create", "small", "-c", "limits.memory=512MiB", "--description", "small one")
    ok(api, "launch", "bb", "web1", "-p", "small")
    ok(api, "create", "bb", "web2", "-p", "small")
    out = ok(api, "profile", "set", "small", "limits.memory=1GiB", "security.nesting=true")
    assert out == ("Profile small: set limits.memory, security.nesting\n"
                   "  web1: applied now: limits.memory\n"
                   "  web1: at its next start (running): security.nesting\n")
    assert api.backend.configs["web1"]["limits.memory"] == 1 << 30
    shown = yaml.safe_load(ok(api, "profile", "show", "small"))
    assert shown == {"name": "small", "description": "small one", "used_by": ["web1", "web2"],
                     "config": {"limits.memory": "1GiB", "security.nesting": "true"}}
    assert ok(api, "profile", "unset", "small", "security.nesting").startswith("Profile small: unset security.nesting\n")
    table = ok(api, "profile", "list").splitlines()
    assert table[0].split() == ["NAME", "CONFIG", "USED", "BY", "DESCRIPTION"]
    assert table[1].split() == ["small", "limits.memory=1GiB", "web1,web2", "small", "one"]
    r = jaula(api, "profile", "set", "small", "limits.memory=lots")
    assert r.exit_code == ExitCode.INVALID_CONFIG and "lots" in r.output


def test_edit_from_stdin_copy_rename_delete_add_remove(api) -> None:
    ok(api, "profile", "create", "small", "-c", "limits.memory=512MiB")
    ok(api, "create", "bb", "web1")
    r = CliRunner().invoke(cli, ["--socket", api.socket, "profile", "edit", "small"],
                           input="description: edited\nconfig:\n  limits.cpu: 2\n")
    assert r.exit_code == 0 and r.output == "Profile small: changed\n", r.output
    assert api.client.profile("small")["config"] == {"limits.cpu": "2.0"}
    r = CliRunner().invoke(cli, ["--socket", api.socket, "profile", "edit", "small"], input="config: [1]\n")
    assert r.exit_code == ExitCode.INVALID_CONFIG and "mapping" in r.output
    assert ok(api, "profile", "copy", "small", "small2") == "Profile small copied to small2\n"
    assert api.client.profile("small2")["description"] == "edited"
    assert ok(api, "profile", "add", "web1", "small") == "Profile small added to web1\n"
    ok(api, "profile", "add", "web1", "small2")
    assert api.client.get("web1")["profiles"] == ["small", "small2"]
    r = jaula(api, "profile", "add", "web1", "small")
    assert r.exit_code != 0 and "already has profile small" in r.output
    r = jaula(api, "profile", "delete", "small")
    assert r.exit_code == ExitCode.BAD_STATE and "used by web1" in r.output
    r = jaula(api, "profile", "rename", "small", "tiny")
    assert r.exit_code == ExitCode.BAD_STATE and "used by web1" in r.output
    assert ok(api, "profile", "remove", "web1", "small") == "Profile small removed from web1\n"
    r = jaula(api, "profile", "remove", "web1", "small")
    assert r.exit_code != 0 and "has no profile small (its profiles: small2)" in r.output
    assert ok(api, "profile", "assign", "web1", "small2,small") == "Instance web1: profiles small2, small\n"
    assert api.client.get("web1")["profiles"] == ["small2", "small"]
    r = jaula(api, "profile", "assign", "web1", "small,nope")
    assert r.exit_code == ExitCode.INVALID_CONFIG and "nope" in r.output
    assert ok(api, "profile", "assign", "web1", "small2") == "Instance web1: profiles small2\n"
    assert ok(api, "profile", "rename", "small", "tiny") == "Profile small renamed to tiny\n"
    assert ok(api, "profile", "delete", "tiny") == "Profile tiny deleted\n"
    r = jaula(api, "profile", "delete", "tiny")
    assert r.exit_code == ExitCode.NOT_FOUND
    assert [p["name"] for p in api.client.profiles()] == ["small2"]


def test_the_edit_document_round_trips_and_refuses_unknown_fields() -> None:
    p = {"name": "small", "description": "d", "config": {"limits.memory": "1GiB", "boot.autostart": "true"},
         "used_by": ["web1"]}
    text = document(p)
    assert "(web1)" in text
    assert parse(text) == ({"boot.autostart": "true", "limits.memory": "1GiB"}, "d")
    try:
        parse("colour: red\nconfig:\n  a: [1]\n")
    except ConfigError as exc:
        assert len(exc.problems) == 2
    else:
        raise AssertionError("parse accepted unknown fields")
