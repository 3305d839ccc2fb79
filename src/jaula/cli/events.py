"""`jaula events`: jaulad's event stream (`GET /1.0/events`) printed live, one event a line:
readable text, or the JSON of each event (`--format json`) for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

TYPES = ("lifecycle", "operation", "logging")


def describe(event: dict[str, Any]) -> str:
    """One readable line: "07:01:02 lifecycle instance-exited web1 status=0"."""
    meta = event.get("metadata") or {}
    stamp = str(event.get("timestamp", ""))
    clock = stamp[11:19] if len(stamp) >= 19 else stamp
    kind = event.get("type", "?")
    if kind == "lifecycle":
        ctx = dict(meta.get("context") or {})
        name = ctx.pop("name", "")
        extra = " ".join(f"{k}={v}" for k, v in ctx.items())
        body = " ".join(p for p in (meta.get("action", "?"), name, extra) if p)
    elif kind == "operation":
        body = f"{meta.get('description', '?')}: {meta.get('status', '?')}"
        if meta.get("err"):
            body += f" ({meta['err']})"
    elif kind == "logging":
        logger = (meta.get("context") or {}).get("logger", "")
        body = f"{meta.get('level', '?')} {logger}: {meta.get('message', '')}"
    else:
        body = json.dumps(meta)
    return f"{clock} {kind:<9} {body}"


def _types(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    found = [t.strip() for v in values for t in v.split(",") if t.strip()]
    if bad := [t for t in found if t not in TYPES]:
        raise click.BadParameter(f"{', '.join(map(repr, bad))}: use {', '.join(TYPES)}")
    return tuple(dict.fromkeys(found))


def register(cli: click.Group, client: Callable[[click.Context], Any]) -> None:
    @cli.command()
    @click.option("-t", "--type", "types", multiple=True, metavar="TYPE", callback=_types,
                  shell_complete=lambda _c, _p, incomplete: [t for t in TYPES if t.startswith(incomplete)],
                  help="only events of these types: lifecycle, operation, logging (repeatable or "
                       "comma-separated); default: all")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
                  help="text: a readable line each; json: each event's JSON on one line")
    @click.pass_context
    def events(ctx: click.Context, types: tuple[str, ...], fmt: str) -> None:
        """Print jaulad's events as they happen, until interrupted (Ctrl-C): instances created,
        started, stopped, exited by themselves (with their exit status), deleted; operations as
        they move; jaulad's log."""
        wanted = ",".join(types) if types else None
        try:
            with client(ctx).open_events(wanted) as stream:
                click.echo(f"Listening for {', '.join(types or TYPES)} events (Ctrl-C to stop)", err=True)
                for event in stream:
                    click.echo(json.dumps(event) if fmt == "json" else describe(event))
                    sys.stdout.flush()
        except KeyboardInterrupt:
            return
        click.echo("jaulad ended the event stream", err=True)
