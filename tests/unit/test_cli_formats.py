"""Every listing command takes `--format table|json|yaml|csv` (cli/output.py): json and yaml are
the same objects, csv has a header and one row per object. Walked over the whole command tree,
so a new `list` command without the option fails here."""

from __future__ import annotations

import csv
import io
import json

import click
import yaml
from click.testing import CliRunner

from jaula.cli.main import cli
from tests.unit.network_fakes import RecordingPlumbing


def jaula(api, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--socket", api.socket, *args], catch_exceptions=False)


def _list_commands(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            found += _list_commands(sub, (*path, name))
    elif path and path[-1] == "list":
        found.append((path, cmd))
    return found


def test_every_listing_command_has_the_four_formats() -> None:
    listing = _list_commands(cli)
    assert ("list",) in [p for p, _ in listing] and len(listing) >= 7
    for path, cmd in listing:
        opt = next((p for p in cmd.params if p.name == "fmt"), None)
        assert opt is not None, f"jaula {' '.join(path)} has no --format"
        assert list(opt.type.choices) == ["table", "json", "yaml", "csv"], path  # type: ignore[attr-defined]


def test_each_format_prints_the_same_objects(api) -> None:
    svc = api.app.state.networks
    svc.plumbing, svc.tag = RecordingPlumbing(), "t1"
    assert jaula(api, "network", "create", "lab", "-c", "ipv4.address=10.9.9.1/24", "-c", "ipv6.address=none").exit_code == 0
    assert jaula(api, "profile", "create", "small", "-c", "limits.memory=512MiB").exit_code == 0
    assert jaula(api, "launch", "bb", "web1", "-c", "nic.eth0.network=lab").exit_code == 0
    assert jaula(api, "network", "forward", "add", "lab", "web1", "8080", "80").exit_code == 0
    assert jaula(api, "snapshot", "create", "web1", "s1").exit_code == 0
    assert jaula(api, "template", "build", "bb", "busybox").exit_code == 0
    for args in (("list",), ("profile", "list"), ("template", "list"), ("snapshot", "list", "web1"),
                 ("network", "list"), ("network", "forward", "list", "lab"), ("nic", "list", "web1")):
        as_json = json.loads(jaula(api, *args, "--format", "json").output)
        assert isinstance(as_json, list) and as_json, args
        assert yaml.safe_load(jaula(api, *args, "--format", "yaml").output) == as_json, args
        rows = list(csv.reader(io.StringIO(jaula(api, *args, "--format", "csv").output)))
        assert rows[0] and all(h == h.lower() for h in rows[0]) and len(rows) == len(as_json) + 1, (args, rows)
        table = jaula(api, *args).output.splitlines()
        assert table[0] == table[0].upper() and len(table) == len(as_json) + 1, (args, table)
