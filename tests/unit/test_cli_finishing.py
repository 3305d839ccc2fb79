"""`jaula config edit`, `stats` (all running, --watch), `completion`, `events`' lines and the
connection options, against the API on a real UNIX socket (fake backend). The editor loop runs
for real: `jaula` in a pty, $EDITOR a script, the re-edit prompt answered through the pty."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from jaula.cli.config_edit import changes, document
from jaula.cli.events import describe
from jaula.cli.main import cli
from jaula.errors import ConfigError, ExitCode
from tests.support.fdwait import readable


def jaula(api: SimpleNamespace, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--socket", api.socket, *args], input=input, catch_exceptions=False)


def test_changes_are_the_diff_of_the_document() -> None:
    inst = {"name": "web1", "description": "", "profiles": ["small"],
            "config": {"limits.memory": "512MiB", "user.note": "x"}}
    text = document(inst)
    assert text.startswith("# Instance web1") and changes(inst, text) == {}
    edited = text.replace("512MiB", "1GiB").replace("  user.note: x\n", "  boot.autostart: true\n")
    assert changes(inst, edited) == {"config": {"limits.memory": "1GiB", "boot.autostart": "true", "user.note": None}}
    assert changes(inst, "description: the web\nprofiles: []\nconfig: {}\n") == {
        "config": {"limits.memory": None, "user.note": None}, "profiles": [], "description": "the web"}
    with pytest.raises(ConfigError) as err:
        changes(inst, "colour: red\nconfig: [1]\nprofiles: x\n")
    assert len(err.value.problems) == 3 and "unknown field 'colour'" in err.value.problems[0]
    with pytest.raises(ConfigError, match="does not parse"):
        changes(inst, "config: {")


def test_config_edit_from_stdin_applies_through_the_api(api) -> None:
    assert jaula(api, "create", "bb", "web1", "-c", "limits.memory=512MiB").exit_code == 0
    r = jaula(api, "config", "edit", "web1", input="config:\n  limits.memory: 1GiB\n  limits.cpu: 1.5\n")
    assert r.exit_code == 0 and "changed limits.memory, limits.cpu" in r.output
    assert api.client.get("web1")["config"] == {"limits.cpu": "1.5", "limits.memory": "1GiB"}
    r = jaula(api, "config", "edit", "web1", input="config:\n  limits.memory: 12XB\n")
    assert r.exit_code == ExitCode.INVALID_CONFIG and "12XB" in r.output
    assert api.client.get("web1")["config"]["limits.memory"] == "1GiB"  # nothing changed


def _run_in_pty(argv: list[str], env: dict[str, str], answers: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run argv on a pty; when the output ends with a key of `answers`, type its value."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None or readable(master, 0):
            assert time.monotonic() < deadline, out.decode(errors="replace")
            if readable(master, 0.1):
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
                for prompt, reply in list(answers.items()):
                    if out.rstrip().endswith(prompt.encode()):
                        os.write(master, reply.encode())
                        answers.pop(prompt)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout), out.decode(errors="replace")


def test_config_edit_in_the_editor_offers_to_edit_again_after_a_refusal(api, tmp_path: Path) -> None:
    assert jaula(api, "create", "bb", "web1").exit_code == 0
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        f"count = pathlib.Path({str(tmp_path / 'count')!r})\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "text = p.read_text()\n"
        "if n == 0:\n"  # first a refused size, then (seeing why) a good one
        "    p.write_text(text.replace('config: {}', 'config:\\n  limits.memory: 12XB'))\n"
        "else:\n"
        "    assert '# Error' in text and '12XB' in text\n"
        "    p.write_text(text.replace('12XB', '2GiB'))\n")
    env = {**os.environ, "EDITOR": f"{sys.executable} {editor}", "VISUAL": f"{sys.executable} {editor}",
           "TERM": "dumb", "JAULA_NO_AUTOSTART": "1"}
    rc, out = _run_in_pty([sys.executable, "-m", "jaula.cli.main", "--socket", api.socket, "config", "edit", "web1"],
                          env, {"[Y/n]:": "y\n"})
    assert rc == 0, out
    assert "12XB" in out and "Edit again?" in out and "changed limits.memory" in out
    assert (tmp_path / "count").read_text() == "2"
    assert api.client.get("web1")["config"] == {"limits.memory": "2GiB"}


def test_stats_without_names_shows_every_running_instance(api) -> None:
    assert jaula(api, "launch", "bb", "web1", "-c", "limits.memory=64MiB").exit_code == 0
    assert jaula(api, "create", "bb", "db1").exit_code == 0
    lines = jaula(api, "stats").output.splitlines()
    assert lines[0].split()[:2] == ["uid", "resource"]
    assert [line.split()[0] for line in lines[1:] if line.split()[0].endswith(":")] == ["web1:"]
    assert jaula(api, "stop", "web1").exit_code == 0
    assert jaula(api, "stats").output == "No instance is running\n"


def test_stats_watch_refreshes_until_interrupted(api, monkeypatch: pytest.MonkeyPatch) -> None:
    from jaula.cli import stats

    assert jaula(api, "launch", "bb", "web1").exit_code == 0
    sleeps: list[float] = []

    def fake_sleep(s: float) -> None:  # the third wait is "Ctrl-C"
        sleeps.append(s)
        if len(sleeps) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(stats.time, "sleep", fake_sleep)
    r = jaula(api, "stats", "web1", "--watch", "--interval", "0.5")
    assert r.exit_code == 0 and sleeps == [0.5, 0.5, 0.5] and "web1:" in r.output and "every 0.5 s" in r.output
    r = jaula(api, "stats", "--watch", "--interval", "0")
    assert r.exit_code == ExitCode.USAGE and "0.1" in r.output


def test_completion_prints_clicks_script_for_each_shell() -> None:
    for shell, marker in (("bash", "complete -o nosort -F _jaula_completion jaula"),
                          ("zsh", "#compdef jaula"), ("fish", "complete --no-files --command jaula")):
        r = CliRunner().invoke(cli, ["completion", shell])
        assert r.exit_code == 0 and marker in r.output, r.output
    r = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert r.exit_code == ExitCode.USAGE


def test_completion_completes_commands() -> None:
    env = {**os.environ, "_JAULA_COMPLETE": "bash_complete", "COMP_WORDS": "jaula eve", "COMP_CWORD": "1"}
    r = subprocess.run([sys.executable, "-m", "jaula.cli.main"], env=env, capture_output=True, text=True, timeout=60,
                       check=False)
    assert "plain,events" in r.stdout.splitlines()  # bash_complete: TYPE,VALUE a line


def test_event_lines_are_readable() -> None:
    line = describe({"type": "lifecycle", "timestamp": "2026-11-26T07:01:02.123Z",
                     "metadata": {"action": "instance-exited", "context": {"name": "t1", "status": 0}}})
    assert line == "07:01:02 lifecycle instance-exited t1 status=0"
    line = describe({"type": "operation", "timestamp": "2026-11-26T07:01:02Z",
                     "metadata": {"description": "Starting instance t1", "status": "failure", "err": "no room"}})
    assert line == "07:01:02 operation Starting instance t1: failure (no room)"


def test_events_prints_json_lines_until_the_stream_ends(api) -> None:
    import threading

    assert jaula(api, "create", "bb", "web1").exit_code == 0
    bus = api.app.state.events

    def later() -> None:  # once subscribed: one event, then the end of the stream
        deadline = time.monotonic() + 10
        while bus.listeners() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        bus.lifecycle("instance-updated", {"name": "web1"})
        bus.close()
    threading.Thread(target=later, daemon=True).start()
    r = jaula(api, "events", "--format", "json", "-t", "lifecycle,logging", "-t", "lifecycle")
    assert r.exit_code == 0 and "Listening for lifecycle, logging events" in r.output
    assert '"action": "instance-updated"' in r.output and "jaulad ended the event stream" in r.output


def test_events_refuses_an_unknown_type() -> None:
    r = CliRunner().invoke(cli, ["--socket", "/nonexistent", "events", "-t", "lifecycle,exec"])
    assert r.exit_code == ExitCode.USAGE and "'exec': use lifecycle, operation, logging" in r.output


def test_a_remote_without_a_token_is_refused_before_any_request() -> None:
    r = CliRunner().invoke(cli, ["--remote", "http://127.0.0.1:9", "list"], env={"JAULA_TOKEN": ""})
    assert r.exit_code == ExitCode.FAILURE and "--token-file" in r.output
    r = CliRunner().invoke(cli, ["--remote", "ftp://x", "--token-file", "/nonexistent", "list"])
    assert r.exit_code == ExitCode.FAILURE and "Cannot read the token file" in r.output


def test_every_documented_exit_code_comes_back_from_an_api_error() -> None:
    """The codes `jaula --help` lists are the ones an error envelope's exit_code gives back."""
    import re

    from jaula.cli.main import EXIT_CODES
    from jaula.client import error_from

    for code in map(int, re.findall(r"^\s+(\d+)\s", EXIT_CODES, re.MULTILINE)):
        if code in (ExitCode.OK, ExitCode.USAGE):
            continue  # not errors of the API
        assert error_from({"error": "x", "exit_code": code}).exit_code == code, code


def test_stats_watch_into_a_pipe_prints_each_refresh_as_it_comes(api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (`jaula stats --watch | tee log`): every refresh printed, stamped, and
    flushed before the next wait; rich's Live would print nothing until Ctrl-C."""
    from jaula.cli import stats

    assert jaula(api, "launch", "bb", "web1").exit_code == 0
    sleeps: list[float] = []

    def fake_sleep(s: float) -> None:  # the third wait is "Ctrl-C"
        sleeps.append(s)
        if len(sleeps) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(stats.time, "sleep", fake_sleep)
    r = jaula(api, "stats", "web1", "--watch", "--interval", "0.5")
    assert r.exit_code == 0, r.output
    assert r.output.count("every 0.5 s, Ctrl-C to stop") == 3 and r.output.count("web1:") == 3, r.output
