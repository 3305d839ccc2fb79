"""One `--format table|json|yaml|csv` for every listing command: json and yaml print the API's
objects whole (for scripts), csv and table the rows the command shows (csv with a header line).

    @format_option
    def network_list(ctx, fmt):
        nets = client(ctx).networks()
        emit(fmt, nets, ("NAME", "BRIDGE"), [(n["name"], n["config"]["bridge"]) for n in nets])
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

import click

FORMATS = ("table", "json", "yaml", "csv")


def format_option(f: Any) -> Any:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="table for people; json or yaml: the API's objects whole; csv: the table's rows")(f)


def emit(fmt: str, items: Any, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print `items` (json, yaml) or `header` and `rows` (table, csv) as `fmt` says."""
    if fmt == "json":
        click.echo(json.dumps(items, indent=2))
    elif fmt == "yaml":
        import yaml
        click.echo(yaml.safe_dump(items, sort_keys=False), nl=False)
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([h.lower().replace(" ", "_") for h in header])
        writer.writerows([["" if v is None else str(v) for v in r] for r in rows])
        click.echo(buf.getvalue(), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table
        table = Table(*header, box=None, pad_edge=False)
        for r in rows:
            table.add_row(*["" if v is None else str(v) for v in r])
        Console(file=sys.stdout, width=200 if not sys.stdout.isatty() else None).print(table)
