"""jaulad's root lock ($ROOT/.jaulad.lock) and a spawner restarted after a crash: jaulad keeps
its own copy of the lock and gives it to the new spawner (re-exec'd: jaulad has threads by then),
so the lock stays held while a spawner of this jaulad lives, as the first spawner held it; a
`kill -9` of jaulad then leaves the next jaulad waiting for that spawner, not racing it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root


def _spawners(jaulad_pid: int) -> list[int]:
    """The live children of jaulad named as its spawner."""
    out = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        if ppid == jaulad_pid and pid_alive(pid) and "(jaula-spawner)" in stat:
            out.append(pid)
    return out


def _holds(pid: int, path: Path) -> bool:
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{n}") == str(path):
                return True
        except OSError:
            pass
    return False


def test_a_spawner_restarted_after_a_crash_holds_the_root_lock(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    assert d.proc is not None
    lock = d.root / ".jaulad.lock"
    first = int(re.search(r"spawner pid (\d+)", d.logs()).group(1))  # type: ignore[union-attr]
    assert _holds(first, lock) and _holds(d.proc.pid, lock)

    os.kill(first, signal.SIGKILL)  # the spawner crashes; the next driver call restarts it
    r = subprocess.run([*JAULA, "--socket", str(d.socket), "create", "busybox", "x1"],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "spawner" in r.stdout + r.stderr, r.stdout + r.stderr
    deadline = time.monotonic() + 10
    while not (new := _spawners(d.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert new and first not in new, d.logs()
    assert all(_holds(pid, lock) for pid in new), "the restarted spawner does not hold the root lock"

    # kill -9 of jaulad: the next one starts once that spawner has ended, and sweeps
    d.kill(signal.SIGKILL)
    d.start()
    assert "x1" not in d.instances() or d.instances()["x1"]["status"] == "stopped"
    if "x1" in d.instances():
        d.jaula("delete", "x1")
    d.kill(signal.SIGTERM)
    assert not [p for p in new if pid_alive(p)]
    assert d.leaks() == []
