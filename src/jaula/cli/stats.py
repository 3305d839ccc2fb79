"""`jaula stats [NAME...] [--watch] [--interval S]`: instances' counters as /proc/user_beancounters
showed them, once, or refreshed in place (rich Live) until Ctrl-C; into a pipe or file each
refresh is printed after the last, stamped, as it comes (a Live there shows nothing until the end)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click


def table(client: Any, names: tuple[str, ...]) -> str:
    """The beancounter table of `names` (none: every running or frozen instance)."""
    from jaula.cgroups.stats import Counter, Stats, beancounters

    if not names:
        names = tuple(i["name"] for i in client.list() if i["status"] in ("running", "frozen"))
        if not names:
            return "No instance is running\n"
    found = []
    for name in names:
        st = client.stats(name)
        found.append(Stats(name=name, cpu_usage_ns=st["cpu_usage_ns"], rows=[Counter(**r) for r in st["rows"]]))
    return beancounters(found)


def register(cli: click.Group, client: Callable[[click.Context], Any]) -> None:
    @cli.command()
    @click.argument("names", nargs=-1)
    @click.option("-w", "--watch", is_flag=True, help="refresh the table in place until Ctrl-C")
    @click.option("--interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
                  metavar="S", help="seconds between refreshes with --watch")
    @click.pass_context
    def stats(ctx: click.Context, names: tuple[str, ...], watch: bool, interval: float) -> None:
        """Show instances' counters as /proc/user_beancounters did: held, maxheld, barrier, limit,
        failcnt. No NAME: every running instance."""
        c = client(ctx)
        if not watch:
            click.echo(table(c, names), nl=False)
            return
        if not sys.stdout.isatty():  # piped or logged: each refresh printed after the last, at once
            try:
                while True:
                    click.echo(f"{time.strftime('%H:%M:%S')}  every {interval:g} s, Ctrl-C to stop\n"
                               + table(c, names), nl=False)
                    sys.stdout.flush()
                    time.sleep(interval)
            except KeyboardInterrupt:
                return
        from rich.live import Live
        from rich.text import Text

        try:
            with Live(Text(table(c, names)), auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    stamp = time.strftime("%H:%M:%S")
                    live.update(Text(f"{stamp}  every {interval:g} s, Ctrl-C to stop\n" + table(c, names)),
                                refresh=True)
        except KeyboardInterrupt:
            return
