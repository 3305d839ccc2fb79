"""`jaula profile list|show|create|set|unset|edit|copy|rename|delete|add|remove|assign`, registered on
the CLI's group by `register` (main.py).

Instances keep a link to their profiles: a change to a profile reaches every instance using it
(checked for all of them first; running ones take the live settings at once, the others at
their next start, and the command says which). `add`, `remove` and `assign` change one
instance's list, as `jaula config edit` would.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from jaula.cli.output import emit, format_option
from jaula.errors import ConfigError, JaulaError

HEADER = """\
# Profile {name}: its description and settings. Save to apply, or quit without saving to change
# nothing. Delete a key to remove it. The change is checked for every instance using it
# ({users}) before anything changes. Lines starting with '#' are ignored.
"""
FIELDS = ("description", "config")


def document(p: dict[str, Any]) -> str:
    import yaml

    body = {"description": p.get("description", ""), "config": dict(sorted((p.get("config") or {}).items()))}
    users = ", ".join(p.get("used_by") or []) or "none"
    return HEADER.format(name=p["name"], users=users) + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def parse(text: str) -> tuple[dict[str, str], str]:
    """(config, description) from an edited document; ConfigError listing what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The YAML does not parse: {exc}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"The document must be a mapping with {', '.join(FIELDS)}")
    problems = [f"unknown field {k!r}: only {', '.join(FIELDS)} can be edited" for k in data if k not in FIELDS]
    config = data.get("config") or {}
    if not isinstance(config, dict):
        problems.append("config must be a mapping of KEY: VALUE")
        config = {}
    for key, value in config.items():
        if isinstance(value, (dict, list)) or value is None:
            problems.append(f"config {key!r}: give one value (a string, number or true/false)")
    description = data.get("description")
    if problems:
        raise ConfigError(problems)
    return ({str(k): _text(v) for k, v in config.items()}, "" if description is None else _text(description))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def report(name: str, what: str, change: dict[str, Any]) -> None:
    """The profile's change and what each running instance using it did with it."""
    click.echo(f"Profile {name}: {what}")
    for inst, keys in sorted(change.get("live", {}).items()):
        click.echo(f"  {inst}: applied now: {', '.join(keys)}")
    for inst, keys in sorted(change.get("next_start", {}).items()):
        click.echo(f"  {inst}: at its next start (running): {', '.join(keys)}")


def register(cli: click.Group, client: Callable[[click.Context], Any], group_cls: type[click.Group],
             pairs: Callable[[tuple[str, ...]], dict[str, str]]) -> None:
    @cli.group(cls=group_cls)
    def profile() -> None:
        """Named sets of settings. Instances keep a link to theirs (-p at create, or `profile add`):
        a change to a profile reaches every instance using it."""

    @profile.command("list")
    @format_option
    @click.pass_context
    def profile_list(ctx: click.Context, fmt: str) -> None:
        """List the profiles."""
        found = client(ctx).profiles()
        emit(fmt, found, ("NAME", "CONFIG", "USED BY", "DESCRIPTION"),
             [(p["name"], " ".join(f"{k}={v}" for k, v in sorted(p["config"].items())),
               ",".join(p.get("used_by") or []), p["description"]) for p in found])

    @profile.command("show")
    @click.argument("name")
    @click.pass_context
    def profile_show(ctx: click.Context, name: str) -> None:
        """Show a profile: description, settings and the instances using it (YAML)."""
        import yaml

        click.echo(yaml.safe_dump(client(ctx).profile(name), sort_keys=False), nl=False)

    @profile.command("create")
    @click.argument("name")
    @click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
                  help="a setting, e.g. -c limits.memory=512MiB (repeatable)")
    @click.option("--description", default="", help="a line about the profile")
    @click.pass_context
    def profile_create(ctx: click.Context, name: str, config: tuple[str, ...], description: str) -> None:
        """Create profile NAME."""
        client(ctx).create_profile(name, pairs(config), description)
        click.echo(f"Profile {name} created")

    @profile.command("set")
    @click.argument("name")
    @click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...")
    @click.pass_context
    def profile_set(ctx: click.Context, name: str, settings: tuple[str, ...]) -> None:
        """Set settings of profile NAME, e.g. `jaula profile set small limits.memory=1GiB`:
        checked for every instance using it; running ones take live settings at once."""
        given = pairs(settings)
        report(name, f"set {', '.join(given)}", client(ctx).update_profile(name, dict(given)))

    @profile.command("unset")
    @click.argument("name")
    @click.argument("keys", nargs=-1, required=True)
    @click.pass_context
    def profile_unset(ctx: click.Context, name: str, keys: tuple[str, ...]) -> None:
        """Remove settings from profile NAME."""
        report(name, f"unset {', '.join(keys)}", client(ctx).update_profile(name, {k: None for k in keys}))

    @profile.command("edit")
    @click.argument("name")
    @click.pass_context
    def profile_edit(ctx: click.Context, name: str) -> None:
        """Edit profile NAME's description and settings as YAML in $VISUAL or $EDITOR (a refused
        change can be edited again). With stdin not a terminal, the YAML is read from stdin."""
        c = client(ctx)
        p = c.profile(name)
        if not sys.stdin.isatty():
            _apply(c, p, sys.stdin.read())
            return
        text = document(p)
        while True:
            edited = click.edit(text, extension=".yaml")
            if edited is None:
                click.echo(f"Profile {name}: no change")
                return
            try:
                _apply(c, p, edited)
                return
            except JaulaError as exc:
                why = _failure(exc)
                click.echo(f"Error: {why}", err=True)
                if not click.confirm("Edit again? (no: abort, nothing changed)", default=True, err=True):
                    ctx.exit(exc.exit_code)
                kept = "".join(line for line in edited.splitlines(keepends=True) if not line.startswith("# Error"))
                text = "".join(f"# Error: {line}\n" for line in why.splitlines()) + kept

    @profile.command("copy")
    @click.argument("source")
    @click.argument("target")
    @click.option("--description", default=None, help="the copy's description (default: the source's)")
    @click.pass_context
    def profile_copy(ctx: click.Context, source: str, target: str, description: str | None) -> None:
        """Create profile TARGET with SOURCE's settings (no instance uses the copy)."""
        c = client(ctx)
        p = c.profile(source)
        c.create_profile(target, p["config"], p["description"] if description is None else description)
        click.echo(f"Profile {source} copied to {target}")

    @profile.command("rename")
    @click.argument("name")
    @click.argument("new_name")
    @click.pass_context
    def profile_rename(ctx: click.Context, name: str, new_name: str) -> None:
        """Rename profile NAME (refused while instances use it)."""
        client(ctx).rename_profile(name, new_name)
        click.echo(f"Profile {name} renamed to {new_name}")

    @profile.command("delete")
    @click.argument("names", nargs=-1, required=True)
    @click.pass_context
    def profile_delete(ctx: click.Context, names: tuple[str, ...]) -> None:
        """Delete profiles (refused while instances use them: the message names them)."""
        for name in names:
            client(ctx).delete_profile(name)
            click.echo(f"Profile {name} deleted")

    @profile.command("add")
    @click.argument("instance")
    @click.argument("name")
    @click.pass_context
    def profile_add(ctx: click.Context, instance: str, name: str) -> None:
        """Add profile NAME to INSTANCE (last: its settings win over the earlier profiles'). A running
        instance takes it when it changes only live settings; otherwise stop it first."""
        c = client(ctx)
        current = list(c.get(instance)["profiles"])
        if name in current:
            raise click.ClickException(f"Instance {instance} already has profile {name}")
        c.update(instance, profiles=[*current, name])
        click.echo(f"Profile {name} added to {instance}")

    @profile.command("remove")
    @click.argument("instance")
    @click.argument("name")
    @click.pass_context
    def profile_remove(ctx: click.Context, instance: str, name: str) -> None:
        """Remove profile NAME from INSTANCE (the same rules as add)."""
        c = client(ctx)
        current = list(c.get(instance)["profiles"])
        if name not in current:
            raise click.ClickException(f"Instance {instance} has no profile {name} "
                                       f"(its profiles: {', '.join(current) or 'none'})")
        c.update(instance, profiles=[p for p in current if p != name])
        click.echo(f"Profile {name} removed from {instance}")


    @profile.command("assign")
    @click.argument("instance")
    @click.argument("names", metavar="PROFILES")
    @click.pass_context
    def profile_assign(ctx: click.Context, instance: str, names: str) -> None:
        """Give INSTANCE exactly these profiles, in order: PROFILES is a comma-separated list
        ("" for none), as `incus profile assign` (the same rules as add)."""
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        client(ctx).update(instance, profiles=wanted)
        click.echo(f"Instance {instance}: profiles {', '.join(wanted) or 'none'}")


def _failure(exc: JaulaError) -> str:
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        return "the change was refused:\n" + "\n".join(f"  - {p}" for p in exc.problems)
    return str(exc)


def _apply(c: Any, p: dict[str, Any], text: str) -> None:
    config, description = parse(text)
    if config == p["config"] and description == p["description"]:
        click.echo(f"Profile {p['name']}: no change")
        return
    change = c.replace_profile(p["name"], config, description)
    report(p["name"], "changed", change)
