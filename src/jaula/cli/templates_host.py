"""`jaula template list|build|import|delete` and `jaula host [set]`, registered on the CLI's
group by `register` (main.py). A build or import is an operation: the CLI polls it and draws its
progress (stage, done, total from the builder) with rich."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from jaula.cli.output import emit, format_option
from jaula.errors import JaulaError

POLL = 0.2
FINISHED = ("success", "failure", "cancelled")


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def follow(client: Any, op: dict[str, Any], what: str) -> dict[str, Any]:
    """Poll operation `op` until it ends, drawing its progress; its error raised on failure.
    Ctrl-C cancels it when jaulad can (`may_cancel`: a build, a copy, an export, an import), and
    waits for it to stop; else it leaves it running, saying so."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(file=sys.stderr)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(what, total=None)
        cancelling = False
        while op["status"] not in FINISHED:
            meta = op.get("metadata") or {}
            if "stage" in meta:
                bar.update(task, description=f"{what}: {meta['stage']}", completed=meta.get("done") or 0,
                           total=meta.get("total"))
            try:
                time.sleep(POLL)
                op = client.operation(op["id"])
            except KeyboardInterrupt:
                if cancelling:
                    raise
                if not op.get("may_cancel"):
                    click.echo(f"Interrupted: operation {op['id']} goes on in jaulad ({what.lower()})", err=True)
                    raise
                click.echo(f"Cancelling {what.lower()} (operation {op['id']})...", err=True)
                cancelling = True
                client.cancel_operation(op["id"])
                op = client.operation(op["id"])
    if op["status"] != "success":
        from jaula.client.rest import error_from
        raise error_from(op)
    return op


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    from jaula.storage.template_cli import _options as parse
    try:
        return parse(list(pairs))
    except JaulaError as exc:  # a malformed option: a usage error
        raise click.BadParameter(str(exc), param_hint="-o") from None


def register(cli: click.Group, client: Callable[[click.Context], Any], group_cls: type[click.Group]) -> None:
    @cli.group(cls=group_cls)
    def template() -> None:
        """Templates: the root file trees instances are made from."""

    @template.command("list")
    @format_option
    @click.pass_context
    def template_list(ctx: click.Context, fmt: str) -> None:
        """List the templates."""
        found = client(ctx).templates()
        emit(fmt, found, ("NAME", "SOURCE", "OS", "ARCH", "SIZE", "USED BY", "CREATED"),
             [(t["name"], t["source"], f"{t['os']} {t['os_version']}".strip(), t["arch"],
               _size(t["size"]), ",".join(t["used_by"]), t["created"]) for t in found])

    @template.command("build")
    @click.argument("name")
    @click.argument("source")
    @click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                  help="a builder option, e.g. -o release=bookworm (repeatable; lists comma-separated)")
    @click.option("--replace", is_flag=True, help="rebuild over an existing template nothing uses")
    @click.pass_context
    def template_build(ctx: click.Context, name: str, source: str, options: tuple[str, ...], replace: bool) -> None:
        """Build template NAME from SOURCE: busybox, debootstrap, tarball or oci."""
        c = client(ctx)
        op = c.build_template(name, source, _options(options), replace=replace, wait=False)
        op = follow(c, op, f"Building {name}")
        click.echo(f"Template {name} built from {source} ({_size(op['metadata'].get('total'))})")

    @template.command("import")
    @click.argument("name")
    @click.argument("path")
    @click.option("--image", "fmt", flag_value="image",
                  help="PATH is an OCI image layout or a docker/podman save archive")
    @click.option("--tarball", "fmt", flag_value="tarball", default=True, help="PATH is a root tree tarball (default)")
    @click.option("--replace", is_flag=True, help="replace an existing template nothing uses")
    @click.pass_context
    def template_import(ctx: click.Context, name: str, path: str, fmt: str, replace: bool) -> None:
        """Import template NAME from the archive PATH (a path on jaulad's host: no upload yet)."""
        c = client(ctx)
        import os
        path = os.path.abspath(path)  # jaulad's working folder is not ours
        op = c.import_template(name, path, format=fmt, replace=replace, wait=False)
        op = follow(c, op, f"Importing {name}")
        click.echo(f"Template {name} imported from {path} ({_size(op['metadata'].get('total'))})")

    @template.command("delete")
    @click.argument("names", nargs=-1, required=True)
    @click.pass_context
    def template_delete(ctx: click.Context, names: tuple[str, ...]) -> None:
        """Delete templates (refused while instances use them)."""
        for name in names:
            client(ctx).delete_template(name)
            click.echo(f"Template {name} deleted")

    @cli.group(cls=group_cls, invoke_without_command=True)
    @click.pass_context
    def host(ctx: click.Context) -> None:
        """Host capacity: cpu, memory and disk; physical, committed to running instances, used."""
        if ctx.invoked_subcommand is None:
            click.echo(host_table(client(ctx).host()), nl=False)

    @host.command("set")
    @click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
    @click.pass_context
    def host_set(ctx: click.Context, pairs: tuple[str, ...]) -> None:
        """Set overcommit ratios, e.g. `jaula host set overcommit.memory=1.5 overcommit.cpu=8`."""
        ratios: dict[str, Any] = {}
        for p in pairs:
            key, sep, value = p.partition("=")
            if not sep:
                raise click.BadParameter(f"{p!r}: write KEY=VALUE, e.g. overcommit.memory=1.5")
            ratios[key] = value
        click.echo(host_table(client(ctx).set_host(ratios)), nl=False)


def host_table(h: dict[str, Any]) -> str:
    ph, co, us, al, r = h["physical"], h["committed"], h["used"], h["allowed"], h["overcommit"]
    rows = [("", "PHYSICAL", "RATIO", "ALLOWED", "COMMITTED", "USED"),
            ("cpu", f"{ph['cpu']:g}", f"{r['overcommit.cpu']:g}", f"{al['cpu']:g}", f"{co['cpu']:g}",
             f"{us['cpu']:g} (load)"),
            ("memory", _size(ph["memory"]), f"{r['overcommit.memory']:g}", _size(al["memory"]),
             _size(co["memory"]), _size(us["memory"])),
            ("disk", _size(ph.get("disk")), "", "", "", _size(us.get("disk")))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    un = co["unlimited"]
    lines.append(f"{co['instances']} running instance(s); without limits (counted as 0): "
                 f"memory {un['memory']}, cpu {un['cpu']}")
    return "\n".join(lines) + "\n"
