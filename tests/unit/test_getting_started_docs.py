"""Every `jaula` command line shown in docs/getting-started.md and docs/concepts.md parses with
the CLI as it is now (its command path exists, its options and arguments are accepted), so a
renamed command or option cannot leave the walk-through stale. What the commands do was checked
by running them against a real jaulad when the page was written; the README's client example is
run end to end by tests/e2e/test_readme_client_example.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
STOP = {";", "|", "&&", "||", ">", "<"}


def _command_lines(page: str) -> list[tuple[str, bool]]:
    """The `jaula ...` commands of the page: prompt lines of console blocks and lines of sh blocks
    (whole command lines: True), and inline code spans starting with `jaula ` (False: a span may
    name a command without its arguments, `jaula exec`)."""
    text = (DOCS / page).read_text()
    lines = []
    for lang, block in re.findall(r"```(console|sh)\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            line = line[2:] if lang == "console" and line.startswith("# ") else line
            if line.startswith("jaula "):
                lines.append((line, True))
    lines += [(span, False) for span in re.findall(r"`(jaula [^`]+)`", text) if "..." not in span and "|" not in span]
    return lines


def _argv(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";|&<>")
    lex.whitespace_split = True
    argv = []
    for token in lex:
        if token in STOP:
            break
        argv.append(token)
    return argv[1:]  # without `jaula`


def _parse(argv: list[str]) -> None:
    """Parse like an invocation, down to the last subcommand, without running anything."""
    from jaula.cli.main import cli

    cmd: click.Command = cli
    name, args, parent = "jaula", argv, None
    while True:
        ctx = cmd.make_context(name, list(args), parent=parent)
        if not isinstance(cmd, click.Group):
            return
        rest = [*ctx._protected_args, *ctx.args]  # click >= 8.2 keeps the subcommand's words there
        if not rest and cmd.invoke_without_command:  # `jaula host`
            return
        assert rest, f"`jaula {' '.join(argv)}` names no subcommand of `{ctx.command_path}`"
        sub_name, sub, args = cmd.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None, argv
        cmd, name, parent = sub, sub_name, ctx


@pytest.mark.parametrize("page", ["getting-started.md", "concepts.md"])
def test_every_jaula_command_of_the_page_parses(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the files the walk-through makes before pushing them
    (tmp_path / "www").mkdir()
    (tmp_path / "www/index.html").write_text("<h1>hello from web1</h1>\n")
    lines = _command_lines(page)
    assert len(lines) >= (30 if page == "getting-started.md" else 3)
    for line, whole in lines:
        try:
            _parse(_argv(line))
        except click.UsageError as exc:
            if not whole and isinstance(exc, click.MissingParameter):
                continue  # a span naming a command, e.g. `jaula exec`
            pytest.fail(f"docs/{page}: `{line}` does not parse: {exc.format_message()}")


def test_a_stale_command_is_caught() -> None:
    with pytest.raises(click.UsageError):
        _parse(_argv("jaula launch busybox web1 --memory 1GiB"))
    with pytest.raises(click.UsageError):
        _parse(_argv("jaula profile remove small"))
