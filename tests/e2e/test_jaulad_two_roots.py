"""Two real jaulads on one host, each over its own temporary root, with an instance of the same
name in each (as tests running side by side do): each root has its own cgroup parent
(`identity.cgroup_parent`), so one daemon's orphan sweep, after a `kill -9` and a restart, stops
its own instance and never the other's. Nothing is left: no cgroup (the parents included), no
mount, no process."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.daemon.identity import cgroup_parent
from jaula.linux.mount import MNT_DETACH, umount2
from tests.e2e.test_jaulad import Daemon
from tests.integration.pool_checks import mounts_under
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root


@pytest.fixture
def two() -> Iterator[tuple[Daemon, Daemon]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made: list[Daemon] = []
    try:
        for _ in range(2):
            top = Path(tempfile.mkdtemp(prefix="jaulad-two-"))
            top.chmod(0o711)  # an instance's root (an unprivileged host uid) must traverse it
            made.append(Daemon(top))
        yield made[0], made[1]
    finally:
        from tests.support.network import remove_daemon_network

        for d in made:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(10)
            for pid in d.pids:  # a failed test's instances: kill them, so nothing outlives it
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            for pid in d.pids:
                _gone(pid)
            for cg in sorted(d.cgroups | {os.path.dirname(p) for p in d.cgroups}, key=len, reverse=True):
                try:
                    os.rmdir(cg)  # their cgroups, then the root's parent
                except OSError:
                    pass
            d.log.close()
            remove_daemon_network(d.root)
            for point in reversed(mounts_under(str(d.top))):  # a failed test's instance roots
                umount2(point, MNT_DETACH)
            shutil.rmtree(d.top, ignore_errors=True)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_daemons_sweep_leaves_the_other_daemons_instance_of_the_same_name(two) -> None:
    a, b = two
    assert cgroup_parent(a.root) != cgroup_parent(b.root) != "jaula"
    for d in (a, b):
        d.start()
        d.jaula("launch", "busybox", "same")
    a_pid = a.note("same")["pid"]
    b_pid = b.note("same")["pid"]
    assert not a.cgroups & b.cgroups, (a.cgroups, b.cgroups)
    assert {os.path.basename(os.path.dirname(p)) for p in a.cgroups} == {cgroup_parent(a.root)}

    # b's jaulad is killed, its instance's init ends while no jaulad watches: the next jaulad's
    # sweep stops what is left of it (cgroup, runtime state, mount)
    b.kill(signal.SIGKILL)
    os.kill(b_pid, signal.SIGKILL)
    assert _gone(b_pid)
    b.start()
    assert b.instances()["same"]["status"] == "stopped", b.logs()
    assert not [p for p in b.cgroups if os.path.exists(p)], b.logs()

    # a's instance of the same name is untouched: same pid, still running, still adopted
    assert pid_alive(a_pid), b.logs()
    assert a.instances()["same"]["status"] == "running" and a.instances()["same"]["pid"] == a_pid
    a.kill(signal.SIGTERM)
    a.start()  # its own sweep and live restore adopt it again
    assert a.instances()["same"]["pid"] == a_pid and pid_alive(a_pid)

    for d in (a, b):
        if d.instances()["same"]["status"] == "running":
            d.jaula("stop", "same", "--force", "--timeout", "0")
        d.jaula("delete", "same")
        parents = {os.path.dirname(p) for p in d.cgroups}
        d.kill(signal.SIGTERM)
        assert d.leaks() == []
        assert not [p for p in parents if os.path.exists(p)]  # the root's parent goes with its last instance
