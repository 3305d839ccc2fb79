"""An app instance with its own command on a real jaulad (the `daemon` fixture of
test_jaulad.py): `jaula launch busybox a1 --mode app -- sleep 1000` runs that very command as
the instance's first process (its /proc cmdline), survives a restart of jaulad (stored), and a
copy runs it too; stopped by SIGTERM; nothing left."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_jaulad import Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def test_an_app_instance_runs_the_command_it_was_given(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    d.jaula("launch", "busybox", "a1", "--mode", "app", "--", "sleep", "1000")
    pid = d.note("a1")["pid"]
    assert _cmdline(pid) == ["sleep", "1000"]
    assert d.instances()["a1"]["command"] == ["sleep", "1000"]
    d.jaula("stop", "a1")
    d.kill(15)
    d.start()  # stored: the next jaulad starts it with the same command
    d.jaula("copy", "a1", "a2")
    for name in ("a1", "a2"):
        d.jaula("start", name)
        assert _cmdline(d.note(name)["pid"]) == ["sleep", "1000"]
        d.jaula("delete", "--force", name)
    assert d.instances() == {}
    deadline = time.monotonic() + 5
    while (left := d.leaks()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
