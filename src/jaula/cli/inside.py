"""`jaula exec`, `shell`, `console`, `logs` and `file push|pull`: inside an instance, registered
on the CLI's group by `register` (main.py). Streams go over jaulad's socket (jaula.client.stream)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from jaula.client.stream import DETACH, main_fds, relay, terminal_size

#: `jaula shell`: a login shell as root, with su -l when the template has su
SHELL = ["/bin/sh", "-c", ("if command -v su >/dev/null 2>&1 && su -l root -c true </dev/null >/dev/null 2>&1; "
                           "then exec su -l root; else cd ~ 2>/dev/null || cd /; exec /bin/sh -l; fi")]


def _env(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE, e.g. LANG=C.UTF-8", param_hint="--env")
        out[key] = value
    return out


def _run(client: Any, name: str, command: list[str], *, tty: bool, env: dict[str, str], user: int | None,
         group: int | None, cwd: str | None) -> int:
    stdin, stdout, stderr = main_fds()
    width, height = terminal_size(stdin) if tty else (0, 0)
    if tty and os.isatty(stdin) and "TERM" not in env:
        env = {**env, "TERM": os.environ.get("TERM", "xterm")}
    op = client.exec(name, command, environment=env, user=user, group=group, cwd=cwd, interactive=tty,
                     width=width, height=height)
    return relay(client.attach(op), tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)


def _split_target(target: str) -> tuple[str, str]:
    name, sep, path = target.partition("/")
    if not sep or not name:
        raise click.BadParameter(f"{target!r}: write NAME/PATH, e.g. web1/etc/hostname", param_hint="NAME/PATH")
    return name, "/" + path


def register(cli: click.Group, client_of: Callable[[click.Context], Any], group_cls: type[click.Group]) -> None:
    @cli.command("exec", context_settings={"ignore_unknown_options": True})
    @click.argument("name")
    @click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
    @click.option("-t", "--tty", "force_tty", is_flag=True, help="a pty inside, even when stdin is not a terminal")
    @click.option("-T", "--no-tty", "no_tty", is_flag=True, help="no pty, even when stdin is a terminal")
    @click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="an environment variable (repeatable)")
    @click.option("--user", type=click.IntRange(0, 65535), help="uid inside the instance [default: its init's, root]")
    @click.option("--group", type=click.IntRange(0, 65535), help="gid inside the instance [default: 0]")
    @click.option("--cwd", help="working folder inside the instance (absolute)")
    @click.pass_context
    def exec_(ctx: click.Context, name: str, command: tuple[str, ...], force_tty: bool, no_tty: bool,
              env: tuple[str, ...], user: int | None, group: int | None, cwd: str | None) -> None:
        """Run COMMAND inside instance NAME: `jaula exec web1 -- ls -l /`.

        With a pty when stdin is a terminal (-t, -T force it on or off); stdout and stderr stay
        apart without one. Exits with the command's exit code."""
        if force_tty and no_tty:
            raise click.UsageError("-t and -T contradict each other: give one")
        tty = force_tty or (not no_tty and os.isatty(0))
        ctx.exit(_run(client_of(ctx), name, list(command), tty=tty, env=_env(env), user=user, group=group, cwd=cwd))

    @cli.command()
    @click.argument("name")
    @click.pass_context
    def shell(ctx: click.Context, name: str) -> None:
        """A login shell as root inside instance NAME (su -l when the template has su, else sh -l)."""
        ctx.exit(_run(client_of(ctx), name, SHELL, tty=os.isatty(0), env={}, user=None, group=None, cwd=None))

    @cli.command()
    @click.argument("name")
    @click.option("--show-log", is_flag=True, help="print the kept console output (the last 128 KiB) and exit")
    @click.pass_context
    def console(ctx: click.Context, name: str, show_log: bool) -> None:
        """Attach to instance NAME's console, read and write (ctrl-a q detaches).

        The console is /dev/console of a running system instance (a pty): the terminal is raw
        meanwhile and its size is followed; after ctrl-a q the instance keeps running. Press Enter for a prompt (the shell or getty on the console waits for a line). An app
        instance has no console terminal: its output is in `jaula logs NAME`."""
        client = client_of(ctx)
        if show_log:
            sys.stdout.buffer.write(client.console_log(name))
            return
        stdin, stdout, stderr = main_fds()
        stream = client.console(name, attach=True)
        if os.isatty(stdin):
            click.echo(f"Attached to {name}'s console (Enter for a prompt); ctrl-a q detaches", err=True)
            width, height = terminal_size(stdin)
            if width and height:
                stream.resize(width, height)
        try:
            relay(stream, tty=True, stdin=stdin, stdout=stdout, stderr=stderr, detach=DETACH)
        except KeyboardInterrupt:
            pass
        if os.isatty(stdin):
            click.echo("", err=True)

    @cli.command()
    @click.argument("name")
    @click.option("-f", "--follow", is_flag=True, help="then print new output as it comes (ctrl-c stops)")
    @click.pass_context
    def logs(ctx: click.Context, name: str, follow: bool) -> None:
        """Print instance NAME's output log: its console's output (the last 128 KiB)."""
        client = client_of(ctx)
        if not follow:
            sys.stdout.buffer.write(client.logs(name))
            return
        try:
            relay(client.console(name, replay=True), tty=True, stdin=os.open(os.devnull, os.O_RDONLY))
        except KeyboardInterrupt:
            pass

    @cli.group(cls=group_cls)
    def file() -> None:
        """Push files into an instance and pull them out (running or stopped)."""

    @file.command("push")
    @click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True))
    @click.argument("target")
    @click.option("-r", "--recursive", is_flag=True, help="push folders with what they hold")
    @click.option("--uid", type=click.IntRange(0, 65535), default=0, show_default=True, help="owner inside")
    @click.option("--gid", type=click.IntRange(0, 65535), default=0, show_default=True, help="group inside")
    @click.option("--mode", help="octal permissions, e.g. 0640 [default: the local file's]")
    @click.pass_context
    def push(ctx: click.Context, sources: tuple[str, ...], target: str, recursive: bool, uid: int, gid: int,
             mode: str | None) -> None:
        """Copy SOURCES to TARGET (NAME/PATH) inside an instance: `jaula file push app.conf web1/etc/`.

        A TARGET ending in / (or several SOURCES) is a folder the sources go into."""
        name, path = _split_target(target)
        client = client_of(ctx)
        forced = int(mode, 8) if mode else None
        into = path.endswith("/") or len(sources) > 1
        for src in sources:
            local = Path(src)
            dest = path.rstrip("/") + "/" + local.name if into else path
            if local.is_dir():
                if not recursive:
                    raise click.UsageError(f"{src!r} is a folder: push it with -r")
                _push_tree(client, name, local, dest, uid, gid, forced)
            else:
                _push_one(client, name, local, dest, uid, gid, forced)

    @file.command("pull")
    @click.argument("source")
    @click.argument("target", type=click.Path())
    @click.option("-r", "--recursive", is_flag=True, help="pull folders with what they hold")
    @click.pass_context
    def pull(ctx: click.Context, source: str, target: str, recursive: bool) -> None:
        """Copy SOURCE (NAME/PATH) out of an instance to TARGET: `jaula file pull web1/etc/hostname .`."""
        name, path = _split_target(source)
        client = client_of(ctx)
        local = Path(target)
        if local.is_dir():
            local = local / (Path(path.rstrip("/")).name or "root")
        _pull(client, name, path, local, recursive)


def _local_mode(p: Path, forced: int | None) -> int:
    return forced if forced is not None else stat.S_IMODE(p.stat().st_mode)


def _push_one(client: Any, name: str, local: Path, dest: str, uid: int, gid: int, forced: int | None) -> None:
    client.push_file(name, dest, local.read_bytes(), uid=uid, gid=gid, mode=_local_mode(local, forced))


def _push_tree(client: Any, name: str, local: Path, dest: str, uid: int, gid: int, forced: int | None) -> None:
    client.push_file(name, dest, type_="directory", uid=uid, gid=gid, mode=stat.S_IMODE(local.stat().st_mode))
    for child in sorted(local.iterdir()):
        if child.is_symlink():
            click.echo(f"Skipped {child}: a symlink (not pushed)", err=True)
        elif child.is_dir():
            _push_tree(client, name, child, f"{dest}/{child.name}", uid, gid, forced)
        elif child.is_file():
            _push_one(client, name, child, f"{dest}/{child.name}", uid, gid, forced)


def _pull(client: Any, name: str, path: str, local: Path, recursive: bool, top: bool = True) -> None:
    meta, content = client.pull_file(name, path, follow=top)   # inside a folder, links are not followed
    if meta["type"] == "symlink":
        click.echo(f"Skipped {name}{path}: a symlink to {meta['target']} (not pulled)", err=True)
        return
    if meta["type"] == "directory":
        if not recursive:
            raise click.UsageError(f"{name}{path} is a folder: pull it with -r")
        local.mkdir(exist_ok=True)
        os.chmod(local, meta["mode"])
        for entry in meta["entries"]:
            _pull(client, name, path.rstrip("/") + "/" + entry, local / entry, recursive, top=False)
        return
    tmp = local.with_name(f".{local.name}.jaula-pull")
    tmp.write_bytes(content)
    os.chmod(tmp, meta["mode"])
    os.replace(tmp, local)
