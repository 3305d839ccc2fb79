"""`jaula config edit NAME`: an instance's own settings, profiles and description as YAML in
$VISUAL or $EDITOR; what changed is applied through the API (with its usual validation). When
the API refuses it, the error is shown and the user edits again or aborts, as `incus config
edit` does. With stdin not a terminal, the YAML is read from stdin instead (for scripts).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from jaula.errors import ConfigError, JaulaError

HEADER = """\
# Instance {name}: its own settings, profiles and description. Save to apply, or quit without
# saving to change nothing. Delete a key to unset it; the profiles' settings are not here
# (`jaula config show -e {name}` shows them merged). Lines starting with '#' are ignored.
"""
FIELDS = ("description", "profiles", "config")


def document(inst: dict[str, Any]) -> str:
    import yaml

    body = {"description": inst.get("description", ""), "profiles": list(inst.get("profiles") or []),
            "config": dict(sorted((inst.get("config") or {}).items()))}
    return HEADER.format(name=inst["name"]) + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def changes(inst: dict[str, Any], text: str) -> dict[str, Any]:
    """The PATCH body that turns `inst` into what `text` says; ConfigError listing what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The YAML does not parse: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"The document must be a mapping with {', '.join(FIELDS)}")
    problems = [f"unknown field {k!r}: only {', '.join(FIELDS)} can be edited" for k in data if k not in FIELDS]
    config = data.get("config") or {}
    profiles = data.get("profiles") or []
    description = data.get("description")
    if not isinstance(config, dict):
        problems.append("config must be a mapping of KEY: VALUE")
        config = {}
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        problems.append("profiles must be a list of profile names")
        profiles = []
    for key, value in config.items():
        if isinstance(value, (dict, list)) or value is None:
            problems.append(f"config {key!r}: give one value (a string, number or true/false)")
    if problems:
        raise ConfigError(problems)
    new = {str(k): _text(v) for k, v in config.items()}
    old = inst.get("config") or {}
    body: dict[str, Any] = {}
    diff: dict[str, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    diff.update({k: None for k in old if k not in new})
    if diff:
        body["config"] = diff
    if list(profiles) != list(inst.get("profiles") or []):
        body["profiles"] = list(profiles)
    text_description = "" if description is None else _text(description)
    if text_description != (inst.get("description") or ""):
        body["description"] = text_description
    return body


def _failure(exc: JaulaError) -> str:
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        return "the change was refused:\n" + "\n".join(f"  - {p}" for p in exc.problems)
    return str(exc)


def register(config: click.Group, client: Callable[[click.Context], Any]) -> None:
    @config.command("edit")
    @click.argument("name")
    @click.pass_context
    def config_edit(ctx: click.Context, name: str) -> None:
        """Edit NAME's settings, profiles and description as YAML in $VISUAL or $EDITOR; the change
        is validated and applied when saved (a refused one can be edited again). With stdin not a
        terminal, the YAML is read from stdin."""
        c = client(ctx)
        inst = c.get(name)
        if not sys.stdin.isatty():
            _apply(c, inst, sys.stdin.read())
            return
        text = document(inst)
        while True:
            edited = click.edit(text, extension=".yaml")
            if edited is None:
                click.echo(f"Instance {name}: no change")
                return
            try:
                _apply(c, inst, edited)
                return
            except JaulaError as exc:
                click.echo(f"Error: {_failure(exc)}", err=True)
                if not click.confirm("Edit again? (no: abort, nothing changed)", default=True, err=True):
                    ctx.exit(exc.exit_code)
                kept = "".join(line for line in edited.splitlines(keepends=True) if not line.startswith("# Error"))
                text = "".join(f"# Error: {line}\n" for line in _failure(exc).splitlines()) + kept


def _apply(c: Any, inst: dict[str, Any], text: str) -> None:
    body = changes(inst, text)
    if not body:
        click.echo(f"Instance {inst['name']}: no change")
        return
    c.update(inst["name"], **body)
    what = [*(body.get("config") or {})] + [k for k in ("profiles", "description") if k in body]
    click.echo(f"Instance {inst['name']}: changed {', '.join(what)}")
