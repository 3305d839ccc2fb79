"""docs/cli.md is what scripts/gen_cli_docs.py prints from the CLI's own help (as docs/openapi.json
is checked against the API): a changed command or option must come with the regenerated page."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_reference_in_tree_is_current() -> None:
    generate = runpy.run_path(str(REPO / "scripts" / "gen_cli_docs.py"))["generate"]
    assert (REPO / "docs" / "cli.md").read_text() == generate(), \
        "docs/cli.md is stale: run `.venv/bin/python scripts/gen_cli_docs.py > docs/cli.md` and commit it"


def test_the_reference_covers_every_command_and_the_exit_codes() -> None:
    import click

    from jaula.cli.main import cli

    text = (REPO / "docs" / "cli.md").read_text()
    ctx = click.Context(cli, info_name="jaula")
    for name in cli.list_commands(ctx):
        assert f"### jaula {name}\n" in text, name
    assert "| 3 | a name or setting was refused by validation |" in text
    assert "jaula completion bash" in text and "started jaulad" in text


def test_the_reference_does_not_depend_on_what_ran_before() -> None:
    """click builds a command's help option once, from the first context that asks: the page
    must be the same whether or not the CLI was run before in the process (as other tests do)."""
    import subprocess
    import sys

    gen = f"import runpy; g = runpy.run_path({str(REPO / 'scripts' / 'gen_cli_docs.py')!r})['generate']; "
    ran_first = ("from click.testing import CliRunner; from jaula.cli.main import cli; "
                 "CliRunner().invoke(cli, ['--help']); CliRunner().invoke(cli, ['list', '--help']); ")
    pages = [subprocess.run([sys.executable, "-c", pre + gen + "print(g(), end='')"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout for pre in ("", ran_first)]
    assert pages[0] == pages[1]
    assert "  -h, --help" in pages[0]  # `jaula -h` works: the reference says so
