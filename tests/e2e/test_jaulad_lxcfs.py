"""jaulad's own lxcfs for real (docs/honest-proc.md): started with jaulad, an instance launched
through the CLI reads its own limit in /proc/meminfo; a kill -9 of jaulad leaves lxcfs serving
the running instance, and the next jaulad adopts that very lxcfs; a clean stop with no instance
running ends it and removes its mount; JAULA_LXCFS=off runs none.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from jaula.daemon.lxcfs import Lxcfs
from jaula.daemon.spawner_backend import paths
from jaula.instances import lxcfs_view
from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)
from tests.support.containers import pid_alive

pytestmark = [pytest.mark.skipif(shutil.which("lxcfs") is None, reason="no lxcfs binary (Debian's lxcfs package)"),
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse: the kernel has no FUSE")]


def meminfo_total_kib(d: Daemon, name: str) -> int:
    r = subprocess.run([*JAULA, "--socket", str(d.socket), "exec", name, "--", "head", "-1", "/proc/meminfo"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return int(r.stdout.split()[1])


def lxcfs_pid(d: Daemon) -> int:
    return int(open(Lxcfs(str(paths(d.root)["instances"])).record).read().split()[0])


def test_jaulads_lxcfs_outlives_a_kill_and_is_adopted(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    mnt = lxcfs_view.mountpoint(str(paths(d.root)["instances"]))
    assert lxcfs_view.usable(mnt) == mnt, d.logs()
    pid = lxcfs_pid(d)
    d.jaula("launch", "busybox", "x1", "-c", "limits.memory=200MiB")
    d.note("x1")
    assert meminfo_total_kib(d, "x1") == 200 * 1024

    d.kill(signal.SIGKILL)
    assert pid_alive(pid) and meminfo_total_kib_direct(d, "x1") == 200 * 1024
    d.start()
    assert lxcfs_pid(d) == pid and f"lxcfs {pid} (left by a previous jaulad) adopted" in d.logs()
    assert meminfo_total_kib(d, "x1") == 200 * 1024

    d.kill(signal.SIGTERM)  # an instance runs: lxcfs stays for it
    assert pid_alive(pid) and lxcfs_view.usable(mnt)
    d.start()
    d.jaula("stop", "x1")
    d.jaula("delete", "x1")
    d.kill(signal.SIGTERM)  # nothing runs: lxcfs ends with jaulad
    assert d.proc is not None and d.proc.returncode == 0, d.logs()
    assert not pid_alive(pid) and not lxcfs_view.mounted(mnt)
    assert not os.path.exists(mnt + ".pid")


def meminfo_total_kib_direct(d: Daemon, name: str) -> int:
    """/proc/meminfo as the instance reads it (jaulad is down: through jaula-runtime, which joins
    its cgroups too: lxcfs answers by the reader's cgroup)."""
    runtime = JAULA[0].replace("/jaula", "/jaula-runtime") if JAULA[0].endswith("/jaula") else "jaula-runtime"
    r = subprocess.run([runtime, "--root", str(d.root / "instances" / "runtime"), "exec", name,
                        "head", "-1", "/proc/meminfo"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return int(r.stdout.split()[1])


def test_jaula_lxcfs_off_runs_none(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("JAULA_LXCFS", "off")
    daemon.start()
    mnt = lxcfs_view.mountpoint(str(paths(daemon.root)["instances"]))
    assert not lxcfs_view.mounted(mnt) and "JAULA_LXCFS=off" in daemon.logs()
    daemon.kill(signal.SIGTERM)
