"""`jaula stop` on a real jaulad (the `daemon` fixture of test_jaulad.py): a busybox system
instance is stopped by its init's own shutdown signal (SIGUSR2 for busybox init: it runs its
inittab's shutdown actions, then ends), cleanly and well within the timeout; an init whose
shutdown hangs (a `::shutdown:` action that sleeps) is killed once --timeout has passed, and the
CLI says so; `--force` kills at once. Nothing is left afterwards."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root

HANGING_INITTAB = "::sysinit:/bin/true\n::shutdown:/bin/sleep 1000\n"


def _timed(d: Daemon, *args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    out = d.jaula(*args)
    return time.monotonic() - t0, out


def test_stop_asks_the_init_then_kills_after_the_timeout(daemon: Daemon, tmp_path) -> None:  # noqa: F811
    d = daemon
    d.start()
    d.jaula("launch", "busybox", "st1")
    d.note("st1")
    state = json.loads(subprocess.run(["curl", "-s", "--unix-socket", str(d.socket),
                                       "http://jaulad/1.0/instances/st1/state"],
                                      capture_output=True, text=True, check=True, timeout=60).stdout)["metadata"]
    assert (state["init"], state["stop_signal"]) == ("busybox", signal.SIGUSR2), state

    took, out = _timed(d, "stop", "--timeout", "30", "st1")  # busybox init's own shutdown
    assert out.strip() == "Instance st1 stopped" and took < 20, (took, out)
    assert d.instances()["st1"]["status"] == "stopped"

    # an init whose shutdown hangs: killed once the timeout has passed, and said so
    (tmp_path / "inittab").write_text(HANGING_INITTAB)
    d.jaula("file", "push", str(tmp_path / "inittab"), "st1/etc/inittab")
    d.jaula("start", "st1")
    d.note("st1")
    took, out = _timed(d, "stop", "--timeout", "3", "st1")
    assert out.strip() == "Instance st1 stopped (killed after the timeout)", out
    assert 3 <= took < 20, took
    assert d.instances()["st1"]["status"] == "stopped"

    # --force: at once, without asking the init
    d.jaula("start", "st1")
    d.note("st1")
    took, out = _timed(d, "stop", "--force", "st1")
    assert took < 5 and d.instances()["st1"]["status"] == "stopped", (took, out)
    assert out.strip() in ("Instance st1 stopped (killed)", "Instance st1 stopped"), out  # not "after the timeout"
    d.jaula("delete", "st1")
    assert d.instances() == {}
    deadline = time.monotonic() + 5
    while (left := d.leaks()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
    r = subprocess.run([*JAULA, "--socket", str(d.socket), "stop", "st1"], capture_output=True, text=True,
                       check=False, timeout=60)
    assert r.returncode == 4, r  # no such instance: the documented code
