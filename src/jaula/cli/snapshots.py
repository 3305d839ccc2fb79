"""`jaula snapshot create|list|restore|delete`, `jaula copy`, `jaula export` and `jaula import`,
registered on the CLI's group by `register` (main.py). Each is one operation waited on.

Backups travel through the API: `export` downloads the file jaulad made, `import` uploads the
local file, so both work wherever the CLI runs. Ctrl-C during a copy, an export or an import
cancels its operation (`templates_host.follow`): jaulad kills its cp or tar and removes what it
made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from jaula.cli.output import emit, format_option
from jaula.cli.templates_host import _size, follow


def register(cli: click.Group, client: Callable[[click.Context], Any], group_cls: type[click.Group]) -> None:
    @cli.group(cls=group_cls)
    def snapshot() -> None:
        """Keep and bring back the state of an instance's root file tree."""

    @snapshot.command("create")
    @click.argument("name")
    @click.argument("snap", required=False)
    @click.pass_context
    def snapshot_create(ctx: click.Context, name: str, snap: str | None) -> None:
        """Snapshot instance NAME as SNAP (default: the first free snapN); it may be running:
        it is frozen for the moment of the copy (btrfs pools: taken live, atomic)."""
        c = client(ctx)
        if snap is None:
            taken = {x["name"] for x in c.snapshots(name)}
            snap = next(f"snap{i}" for i in range(len(taken) + 1) if f"snap{i}" not in taken)
        op = c.create_snapshot(name, snap)
        how = " (live: the pool's snapshot is atomic)" if op.get("metadata", {}).get("live") else ""
        click.echo(f"Snapshot {snap} of {name} created{how}")

    @snapshot.command("list")
    @click.argument("name")
    @format_option
    @click.pass_context
    def snapshot_list(ctx: click.Context, name: str, fmt: str) -> None:
        """List instance NAME's snapshots, oldest first."""
        found = client(ctx).snapshots(name)
        emit(fmt, found, ("NAME", "CREATED", "SIZE", "PROFILES"),
             [(x["name"], x["created"], _size(x["size"]), ",".join(x["profiles"])) for x in found])

    @snapshot.command("restore")
    @click.argument("name")
    @click.argument("snap")
    @click.option("--stop", is_flag=True, help="a running instance is stopped, restored and started again "
                                                "(without it, a running instance is refused)")
    @click.option("--timeout", type=click.FloatRange(0, 3600), default=30.0, show_default=True,
                  help="with --stop: seconds for a clean shutdown before the instance is killed")
    @click.pass_context
    def snapshot_restore(ctx: click.Context, name: str, snap: str, stop: bool, timeout: float) -> None:
        """Bring instance NAME's root, settings and profiles back to snapshot SNAP (kept)."""
        op = client(ctx).restore_snapshot(name, snap, stop=stop, timeout=timeout)
        again = " and started again" if "pid" in (op.get("metadata") or {}) else ""
        click.echo(f"Instance {name} restored to snapshot {snap}{again}")

    @snapshot.command("delete")
    @click.argument("name")
    @click.argument("snaps", nargs=-1, required=True, metavar="SNAP...")
    @click.pass_context
    def snapshot_delete(ctx: click.Context, name: str, snaps: tuple[str, ...]) -> None:
        """Delete snapshots of instance NAME."""
        for snap in snaps:
            client(ctx).delete_snapshot(name, snap)
            click.echo(f"Snapshot {snap} of {name} deleted")

    @cli.command("copy")
    @click.argument("source")
    @click.argument("name")
    @click.option("-s", "--snapshot", metavar="SNAP", help="copy this snapshot of SOURCE, not its present root")
    @click.option("--description", default=None, help="the copy's description (default: the source's)")
    @click.option("--snapshots", "with_snapshots", is_flag=True,
                  help="SOURCE's snapshots become the copy's too (not with --snapshot)")
    @click.pass_context
    def copy(ctx: click.Context, source: str, name: str, snapshot: str | None, description: str | None,
             with_snapshots: bool) -> None:
        """Make instance NAME (stopped) a copy of SOURCE, which may be running: its root, settings and
        profiles, without the values that belong to one instance (volatile.*, NIC MACs and addresses).
        Ctrl-C cancels it: nothing of the copy is left."""
        c = client(ctx)
        op = c.copy(source, name, snapshot=snapshot, description=description, snapshots=with_snapshots, wait=False)
        follow(c, op, f"Copying {source} to {name}")
        how = f" (snapshot {snapshot})" if snapshot else (" with its snapshots" if with_snapshots else "")
        click.echo(f"Instance {name} created as a copy of {source}{how}")

    @cli.command("export")
    @click.argument("name")
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--snapshots", is_flag=True, help="include its snapshots (imported with it)")
    @click.pass_context
    def export(ctx: click.Context, name: str, file: str, snapshots: bool) -> None:
        """Write a backup of instance NAME to new local FILE (.tar, .tar.gz, .tar.xz or .tar.bz2: the
        suffix picks the compression): its settings, profiles and root, owners as seen inside, so it
        imports on any host. A running instance is frozen only while its root is cloned. Ctrl-C
        cancels it: no partial file is left."""
        compression = next((c for suffix, c in _COMPRESSION if file.endswith(suffix)), None)
        if compression is None:
            raise click.BadParameter(f"{file!r}: end the name with {', '.join(s for s, _ in _COMPRESSION)}",
                                     param_hint="FILE")
        c = client(ctx)
        op = c.export_to(name, file, compression=compression, snapshots=snapshots,
                         follow=lambda op: follow(c, op, f"Exporting {name}"))
        click.echo(f"Instance {name} exported to {file} ({_size((op.get('metadata') or {}).get('size'))})")

    @cli.command("import")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @click.argument("name", required=False)
    @click.pass_context
    def import_(ctx: click.Context, file: str, name: str | None) -> None:
        """Make a new (stopped) instance from backup FILE made by `jaula export` (uploaded to jaulad),
        named NAME or as in the file, with the snapshots the file holds. Its template and profiles
        must be on jaulad's host. Ctrl-C cancels it: nothing of the instance is left."""
        c = client(ctx)
        op = c.import_from(file, name, follow=lambda op: follow(c, op, f"Importing {file}"))
        click.echo(f"Instance {(op.get('metadata') or {}).get('instance', name)} imported from {file}")


_COMPRESSION = ((".tar.gz", "gzip"), (".tgz", "gzip"), (".tar.xz", "xz"), (".tar.bz2", "bzip2"), (".tar", "none"))
