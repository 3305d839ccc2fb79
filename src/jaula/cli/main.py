"""`jaula`, the human CLI: a client of jaulad's API (jaula.client); every verb is one request
or one operation waited on, and every error is the API's message with a stable exit code."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import TYPE_CHECKING, Any

import click

from jaula.errors import ConfigError, ExitCode, JaulaError

if TYPE_CHECKING:  # imported when a command first needs jaulad (connect.py): not for --help
    from jaula.client import Client

EXIT_CODES = f"""\b
Exit codes:
  {ExitCode.OK}  success
  {ExitCode.FAILURE}  any other failure (jaulad unreachable, an action failed)
  {ExitCode.USAGE}  bad command line
  {ExitCode.INVALID_CONFIG}  a name or setting was refused by validation
  {ExitCode.NOT_FOUND}  no such instance, profile or operation
  {ExitCode.EXISTS}  the name is taken
  {ExitCode.BAD_STATE}  the action does not fit the instance's state
  {ExitCode.KERNEL}  a kernel feature the request needs is missing
  {ExitCode.LOCKED}  jaulad's database is locked by another process
"""
COLUMNS = ("name", "status", "template", "mode", "profiles", "created", "pid", "description", "ipv4")
DEFAULT_COLUMNS = "name,status,template,mode,profiles,ipv4"


class _Failed(click.ClickException):
    """A JaulaError shown as "Error: ..." (one line per problem) with its own exit code."""

    def __init__(self, exc: JaulaError) -> None:
        super().__init__(str(exc))
        self.exit_code = exc.exit_code
        self.problems = exc.problems if isinstance(exc, ConfigError) and len(exc.problems) > 1 else []

    def show(self, file: Any = None) -> None:
        if self.problems:
            click.echo("Error: the request was refused:", err=True)
            for p in self.problems:
                click.echo(f"  - {p}", err=True)
        else:
            click.echo(f"Error: {self.message}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JaulaError as exc:
            raise _Failed(exc) from None

    # The cli/ modules' commands are registered when first looked for (`_register_modules`):
    # a command of this file (`jaula list`) imports none of them.
    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is None and _register_modules():
            found = super().get_command(ctx, name)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register_modules()
        return super().list_commands(ctx)


def _client(ctx: click.Context) -> Client:
    root = ctx.find_root()
    if "client" not in root.meta:
        # jaulad started on first use when none answers (connect.py)
        from jaula.cli.connect import connect
        explicit = root.get_parameter_source("socket") == click.core.ParameterSource.COMMANDLINE
        root.meta["client"] = connect(root.params["socket"], root.params["remote"], root.params["token_file"],
                                      may_start=not explicit)
        root.call_on_close(root.meta["client"].close)
    return root.meta["client"]


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write KEY=VALUE, e.g. limits.memory=1GiB", param_hint="-c")
        out[key.strip()] = value
    return out


@click.group(cls=_Group, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", envvar="JAULA_SOCKET", metavar="PATH",
              help="jaulad's API socket [env JAULA_SOCKET; default /run/jaula/jaula.sock]")
@click.option("--remote", envvar="JAULA_REMOTE", metavar="URL",
              help="jaulad over TCP instead, e.g. http://127.0.0.1:8443 (jaulad --listen) [env JAULA_REMOTE]")
@click.option("--token-file", envvar="JAULA_TOKEN_FILE", metavar="FILE", type=click.Path(dir_okay=False),
              help="the remote's token (jaulad --show-token) [env JAULA_TOKEN_FILE, or the token in JAULA_TOKEN]")
@click.version_option(package_name="jaula")
def cli(socket: str | None, remote: str | None, token_file: str | None) -> None:
    """Manage jaula instances: isolated virtual servers on this host."""


# -- listing -------------------------------------------------------------------------------------
def _cell(inst: dict[str, Any], col: str) -> str:
    value = inst.get(col)
    if isinstance(value, list):
        return ",".join(value)
    return "" if value is None else str(value)


@cli.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml", "csv"]), default="table",
              show_default=True)
@click.option("-c", "--columns", default=DEFAULT_COLUMNS, show_default=True,
              help=f"comma-separated, of: {', '.join(COLUMNS)}; given with json or yaml, only these keys")
@click.pass_context
def list_(ctx: click.Context, fmt: str, columns: str) -> None:
    """List the instances."""
    cols = [c.strip() for c in columns.split(",") if c.strip()]
    if bad := [c for c in cols if c not in COLUMNS]:
        raise click.BadParameter(f"unknown column {', '.join(bad)}; use {', '.join(COLUMNS)}", param_hint="-c")
    instances = _client(ctx).list()
    if "ipv4" in cols:  # its NICs' addresses (jaulad's networks)
        from jaula.cli import network as _network
        _network.add_addresses(_client(ctx), instances)
    if fmt in ("json", "yaml") and ctx.get_parameter_source("columns") != click.core.ParameterSource.DEFAULT:
        instances = [{c: i.get(c) for c in cols} for i in instances]  # -c given: those keys, in its order
    if fmt == "json":
        click.echo(json.dumps(instances, indent=2))
    elif fmt == "yaml":
        import yaml
        click.echo(yaml.safe_dump(instances, sort_keys=False), nl=False)
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows([_cell(i, c) for c in cols] for i in instances)
        click.echo(buf.getvalue(), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table
        table = Table(*[c.upper() for c in cols], box=None, pad_edge=False)
        for inst in instances:
            table.add_row(*[_cell(inst, c) for c in cols])
        Console(file=sys.stdout, width=200 if not sys.stdout.isatty() else None).print(table)


@cli.command()
@click.argument("name")
@click.pass_context
def info(ctx: click.Context, name: str) -> None:
    """Show an instance: its fields, settings and profiles."""
    import yaml
    inst = _client(ctx).get(name)
    click.echo(yaml.safe_dump(inst, sort_keys=False), nl=False)


# -- lifecycle -----------------------------------------------------------------------------------
def _create_options(f: Any) -> Any:
    for deco in reversed((
        click.argument("template"), click.argument("name"), click.argument("command", nargs=-1),
        click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
                     help="a setting, e.g. -c limits.memory=1GiB (repeatable)"),
        click.option("-p", "--profile", "profiles", multiple=True, help="a profile to apply (repeatable, in order)"),
        click.option("--mode", type=click.Choice(["system", "app"]), default="system", show_default=True,
                     help="system: runs the template's init; app: runs one command: COMMAND after --, "
                          "else the template's"),
        click.option("--description", default="", help="a line about the instance"),
    )):
        f = deco(f)
    return f


def _create(ctx: click.Context, template: str, name: str, command: tuple[str, ...], config: tuple[str, ...],
            profiles: tuple[str, ...], mode: str, description: str, start: bool = False) -> None:
    if command and mode != "app":
        raise click.UsageError("COMMAND is for an app instance (--mode app); a system instance runs its "
                               "template's init")
    _client(ctx).create(template, name, config=_pairs(config), profiles=list(profiles), mode=mode,
                        description=description, command=list(command), start=start)
    click.echo(f"Instance {name} created from {template}")
    if _client(ctx).get(name).get("privileged"):   # asked by -c or by a profile
        click.echo(f"Warning: {name} is privileged (security.privileged=true): no user namespace of its own, its "
                   "root is root on the host; only for trusted workloads", err=True)
    if _pairs(config).get("network.mode") == "host":
        click.echo(f"Warning: {name} shares the host's network stack (network.mode=host): its root is root of "
                   "the host's interfaces, addresses, routes and firewall", err=True)


@cli.command()
@_create_options
@click.pass_context
def create(ctx: click.Context, **kw: Any) -> None:
    """Create instance NAME from TEMPLATE (not started). An app instance runs COMMAND, given after
    `--` (`jaula create busybox a1 --mode app -- sleep 1000`), or else its template's command."""
    _create(ctx, **kw)


@cli.command()
@_create_options
@click.pass_context
def launch(ctx: click.Context, **kw: Any) -> None:
    """Create instance NAME from TEMPLATE and start it. An app instance runs COMMAND, given after
    `--` (`jaula launch busybox a1 --mode app -- sleep 1000`), or else its template's command.
    One operation: a start the host's capacity refuses (overcommit ratios) makes nothing."""
    _create(ctx, start=True, **kw)
    click.echo(f"Instance {kw['name']} started")


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def start(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Start instances."""
    for name in names:
        _client(ctx).start(name)
        click.echo(f"Instance {name} started")


def _stop_options(f: Any) -> Any:
    f = click.option("--timeout", type=click.FloatRange(0, 3600), default=30.0, show_default=True,
                     help="seconds for a clean shutdown before the instance is killed")(f)
    return click.option("-f", "--force", is_flag=True, help="kill at once, without asking its init")(f)


@cli.command()
@click.argument("names", nargs=-1, required=True)
@_stop_options
@click.pass_context
def stop(ctx: click.Context, names: tuple[str, ...], force: bool, timeout: float) -> None:
    """Stop instances: their init's own shutdown, then a kill after --timeout."""
    for name in names:
        op = _client(ctx).stop(name, force=force, timeout=timeout)
        clean = op.get("metadata", {}).get("clean", True)
        click.echo(f"Instance {name} stopped" + ("" if clean else " (killed)" if force else " (killed after the timeout)"))


@cli.command()
@click.argument("names", nargs=-1, required=True)
@_stop_options
@click.pass_context
def restart(ctx: click.Context, names: tuple[str, ...], force: bool, timeout: float) -> None:
    """Stop then start instances."""
    for name in names:
        _client(ctx).restart(name, force=force, timeout=timeout)
        click.echo(f"Instance {name} restarted")


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def freeze(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Freeze instances (every process paused)."""
    for name in names:
        _client(ctx).freeze(name)
        click.echo(f"Instance {name} frozen")


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def unfreeze(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Thaw frozen instances."""
    for name in names:
        _client(ctx).unfreeze(name)
        click.echo(f"Instance {name} unfrozen")


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="stop (kill) a running instance first")
@click.pass_context
def delete(ctx: click.Context, names: tuple[str, ...], force: bool) -> None:
    """Delete instances and their root file trees."""
    for name in names:
        _client(ctx).delete(name, force=force)
        click.echo(f"Instance {name} deleted")


# -- config --------------------------------------------------------------------------------------
@cli.group(cls=_Group)
def config() -> None:
    """Show and change an instance's settings (running instances take live ones at once)."""


@config.command("show")
@click.argument("name")
@click.option("-e", "--expanded", is_flag=True, help="with its profiles' settings merged in")
@click.pass_context
def config_show(ctx: click.Context, name: str, expanded: bool) -> None:
    """Print NAME's settings, one KEY=VALUE a line."""
    inst = _client(ctx).get(name)
    for key, value in sorted(inst["expanded_config" if expanded else "config"].items()):
        click.echo(f"{key}={value}")


@config.command("set")
@click.argument("name")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_context
def config_set(ctx: click.Context, name: str, pairs: tuple[str, ...]) -> None:
    """Set settings, e.g. `jaula config set web1 limits.memory=2GiB`."""
    _client(ctx).update(name, config=dict(_pairs(pairs)))  # type: ignore[arg-type]
    click.echo(f"Instance {name}: set {', '.join(p.partition('=')[0] for p in pairs)}")


@config.command("unset")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@click.pass_context
def config_unset(ctx: click.Context, name: str, keys: tuple[str, ...]) -> None:
    """Remove settings (back to the profile's or the default)."""
    _client(ctx).update(name, config={k: None for k in keys})
    click.echo(f"Instance {name}: unset {', '.join(keys)}")


_registered: list[bool] = []


def _register_modules() -> bool:
    """Register the commands of the cli/ modules, once; True when this call did it. A new
    module's `register` goes here too."""
    if _registered:
        return False
    _registered.append(True)

    # the template and host commands
    from jaula.cli import templates_host as _templates_host

    _templates_host.register(cli, _client, _Group)

    # networks, port forwards, NICs
    from jaula.cli import network as _network

    _network.register(cli, _client, _Group)

    # exec, shell, console, logs, file push|pull
    from jaula.cli import inside as _inside

    _inside.register(cli, _client, _Group)

    from jaula.cli import completion as _completion
    from jaula.cli import config_edit as _config_edit
    from jaula.cli import events as _events
    from jaula.cli import stats as _stats

    _events.register(cli, _client)
    _stats.register(cli, _client)
    _config_edit.register(config, _client)
    _completion.register(cli)

    # snapshot, copy, export and import
    from jaula.cli import snapshots as _snapshots

    _snapshots.register(cli, _client, _Group)

    # profile list|show|create|set|unset|edit|copy|rename|delete|add|remove|assign
    from jaula.cli import profiles as _profiles

    _profiles.register(cli, _client, _Group, _pairs)
    return True


def main() -> None:
    cli(prog_name="jaula")


if __name__ == "__main__":
    main()
