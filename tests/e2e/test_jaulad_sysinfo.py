"""sysinfo(2) answered by jaulad's console keeper for real (docs/honest-proc.md): an instance
launched through the CLI with limits.memory=200MiB shows 200 MiB in busybox `free`; after a
`kill -9` of jaulad the keeper still answers the listeners it held (a loop inside, started
before the kill, keeps writing the instance's total), and after jaulad's restart new `exec`s
are answered too; with the setting off the host's total shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from jaula.instances import console_pty
from tests.e2e.test_jaulad import Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.skipif(shutil.which("lxcfs") is None, reason="no lxcfs binary (Debian's lxcfs package)"),
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse: the kernel has no FUSE")]


def free_total_kib(out: str) -> int:
    return int(next(ln for ln in out.splitlines() if ln.startswith("Mem:")).split()[1])


def host_total_kib() -> int:
    return int(Path("/proc/meminfo").read_text().split()[1])


def test_sysinfo_is_answered_across_a_kill_of_jaulad(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    d.jaula("launch", "busybox", "s1", "-c", "limits.memory=200MiB")
    d.note("s1")
    assert free_total_kib(d.jaula("exec", "s1", "--", "free")) == 200 * 1024
    # a loop that outlives its exec: its filter's listener is the one handed over for that exec
    d.jaula("exec", "s1", "--", "sh", "-c",
            "setsid sh -c 'while :; do free > /tmp/f.new && mv /tmp/f.new /tmp/f; sleep 0.2; done' "
            "</dev/null >/dev/null 2>&1 &")
    keeper = os.path.join(d.root, console_pty.SOCKET_NAME)
    verb, payload, _ = console_pty.request(keeper, "AGENT")
    assert verb == "AGENT" and int(payload.split()[0]) >= 2, payload  # the init's and the loop's listeners

    d.kill(signal.SIGKILL)
    time.sleep(1.0)
    verb, payload, _ = console_pty.request(keeper, "AGENT")
    answered = int(payload.split()[1])
    time.sleep(1.0)
    after = console_pty.request(keeper, "AGENT")[1].split()
    assert int(after[1]) > answered, (payload, after)  # the loop's calls answered while jaulad is dead
    d.start()
    out = d.jaula("exec", "s1", "--", "sh", "-c", "rm -f /tmp/f; while [ ! -s /tmp/f ]; do sleep 0.1; done; cat /tmp/f")
    assert free_total_kib(out) == 200 * 1024, out  # written after the restart by the loop from before the kill
    assert free_total_kib(d.jaula("exec", "s1", "--", "free")) == 200 * 1024
    d.jaula("stop", "s1")
    d.jaula("delete", "s1")


def test_the_setting_off_shows_the_hosts(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    d.jaula("launch", "busybox", "s2", "-c", "limits.memory=200MiB", "-c", "security.syscalls.intercept.sysinfo=false")
    d.note("s2")
    assert free_total_kib(d.jaula("exec", "s2", "--", "free")) == host_total_kib()
    d.jaula("stop", "s2")
    d.jaula("delete", "s2")
