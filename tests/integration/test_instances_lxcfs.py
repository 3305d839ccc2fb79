"""Honest /proc for real: jaulad's lxcfs service (jaula.daemon.lxcfs) mounted under the driver's
root, a busybox system instance limited to 256 MiB and 1 cpu reading its own figures through
it; lxcfs killed and started again by the watcher; an instance without lxcfs (security.lxcfs
false, or none running) still starts, with the kernel's files.

Nothing is left: no FUSE mount, no lxcfs process, and the driver tests' own leak check.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.daemon.lxcfs import Lxcfs
from jaula.instances import lxcfs_view
from tests.integration.test_instances_container import Host, host, store  # noqa: F401 (fixtures)
from tests.support.containers import pid_alive, wait_until

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("lxcfs") is None, reason="no lxcfs binary (Debian's lxcfs package)"),
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse: the kernel has no FUSE")]
MiB = 1 << 20


@pytest.fixture
def lxcfs(host: Host) -> Iterator[Lxcfs]:  # noqa: F811
    svc = Lxcfs(host.driver.root)
    pids: list[int] = []
    try:
        assert svc.start(), f"lxcfs did not start: {Path(svc.logfile).read_text()[-2000:]}"
        pids.append(svc.pid)
        yield svc
        pids.append(svc.pid)
    finally:
        svc.close(stop=True)
    assert not lxcfs_view.mounted(svc.mnt), "lxcfs's mount left behind"
    assert not [p for p in pids if p and pid_alive(p)], "an lxcfs process left behind"


def meminfo_total_mib(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no MemTotal in {text!r}")


def test_meminfo_top_cpus_uptime_show_the_instances_own(host: Host, lxcfs: Lxcfs) -> None:  # noqa: F811
    inst = host.new(config={"limits.memory": "256MiB", "limits.cpu": "1"})
    host.start(inst)
    try:
        code, out = host.sh(inst, "cat /proc/meminfo")
        assert meminfo_total_mib(out) == 256, out
        # `free` (procps) and `top` read /proc/meminfo; busybox's free takes its total from
        # sysinfo(2), which no file can change (docs/honest-proc.md): its "available" is honest
        code, out = host.sh(inst, "top -b -n 1 | head -1; free -m | awk '/^Mem:/ {print $7}'")
        used, free_ = (int(w.rstrip("K")) for w in out.split()[1:5:2])
        assert code == 0 and used + free_ == 256 * 1024, out
        assert 200 <= int(out.split()[-1]) <= 256, f"free -m's available inside: {out!r}"
        # the quota of 1 cpu is 1 cpu in cpuinfo and in /sys's online list (lxcfs --enable-cfs)
        code, out = host.sh(inst, "grep -c ^processor /proc/cpuinfo; cat /sys/devices/system/cpu/online")
        assert code == 0 and out.split() == ["1", "0"], out
        # the instance's uptime (its init's age), not the host's
        host_up = float(Path("/proc/uptime").read_text().split()[0])
        code, out = host.sh(inst, "cat /proc/uptime")
        inside = float(out.split()[0])
        assert inside < 120 and inside < host_up - 1, f"inside {inside}, host {host_up}"
        # read-only for root inside, and a neighbour sees its own figures at the same time
        code, out = host.sh(inst, "echo x > /proc/meminfo")
        assert code != 0, out
        other = host.new(config={"limits.memory": "512MiB"})
        host.start(other)
        try:
            assert meminfo_total_mib(host.sh(other, "cat /proc/meminfo")[1]) == 512
            assert meminfo_total_mib(host.sh(inst, "cat /proc/meminfo")[1]) == 256
        finally:
            host.driver.stop(other, timeout=10)
    finally:
        host.driver.stop(inst, timeout=10)


def test_nproc_follows_a_cpuset(host: Host, lxcfs: Lxcfs) -> None:  # noqa: F811
    """nproc (busybox's and coreutils') counts sched_getaffinity's cpus: only a cpuset changes it."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one cpu on this host: a cpuset cannot make nproc smaller")
    inst = host.new(config={"limits.cpuset": "0"})
    host.start(inst)
    try:
        code, out = host.sh(inst, "nproc; grep -c ^processor /proc/cpuinfo")
        assert code == 0 and out.split() == ["1", "1"], out
    finally:
        host.driver.stop(inst, timeout=10)


def test_lxcfs_death_and_restart(host: Host, lxcfs: Lxcfs) -> None:  # noqa: F811
    """The watcher starts a new lxcfs: the next instance gets it; one started before reads
    ENOTCONN from the dead connection's files (docs/honest-proc.md) until restarted."""
    before = host.new(config={"limits.memory": "128MiB"})
    host.start(before)
    try:
        old = lxcfs.pid
        os.kill(old, 9)
        wait_until("a new lxcfs", lambda: lxcfs.restarted == 1 and lxcfs.pid not in (None, old), 10)
        assert lxcfs_view.usable(lxcfs.mnt) == lxcfs.mnt
        after = host.new(config={"limits.memory": "192MiB"})
        host.start(after)
        try:
            code, out = host.sh(after, "cat /proc/meminfo")
            assert code == 0 and meminfo_total_mib(out) == 192, out
        finally:
            host.driver.stop(after, timeout=10)
        code, out = host.sh(before, "cat /proc/meminfo")
        assert code != 0 and "not connected" in out.lower(), out
        host.driver.stop(before, timeout=10)
        host.start(before)  # a restart binds the new lxcfs
        code, out = host.sh(before, "cat /proc/meminfo")
        assert code == 0 and meminfo_total_mib(out) == 128, out
    finally:
        host.driver.stop(before, timeout=10)


def test_without_lxcfs_the_instance_starts_with_the_kernels_files(host: Host, lxcfs: Lxcfs) -> None:  # noqa: F811
    host_total = meminfo_total_mib(Path("/proc/meminfo").read_text())
    off = host.new(config={"limits.memory": "256MiB", "security.lxcfs": "false"})
    host.start(off)
    try:
        code, out = host.sh(off, "cat /proc/meminfo; grep -c fuse.lxcfs /proc/self/mountinfo")
        assert meminfo_total_mib(out) == host_total and out.split()[-1] == "0", out
    finally:
        host.driver.stop(off, timeout=10)
    lxcfs.close(stop=True)  # no lxcfs at all: a warning, and the start goes on
    gone = host.new(config={"limits.memory": "256MiB"})
    host.start(gone)
    try:
        code, out = host.sh(gone, "cat /proc/meminfo")
        assert code == 0 and meminfo_total_mib(out) == host_total, out
    finally:
        host.driver.stop(gone, timeout=10)


def test_a_second_service_adopts_the_running_lxcfs(host: Host, lxcfs: Lxcfs) -> None:  # noqa: F811
    """jaulad's restart: the lxcfs left running (close(stop=False)) is adopted by pid and start
    time, not started twice."""
    pid = lxcfs.pid
    lxcfs.close(stop=False)
    assert pid_alive(pid) and lxcfs_view.usable(lxcfs.mnt)
    again = Lxcfs(host.driver.root)
    try:
        assert again.start() and again.pid == pid
    finally:
        again.close(stop=True)
    assert not pid_alive(pid) and not lxcfs_view.mounted(lxcfs.mnt)
