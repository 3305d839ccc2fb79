"""Resource exhaustion from inside a default instance, held by its own limits: a fork bomb by the
pids limit, a memory hog by the memory limit (killed inside, not on the host), /dev/shm by its
size, the disk and its inodes by a loop pool's quota. Meanwhile a neighbour instance measures its
fork+wait latency (`escape latency`): the figures are printed with the battery's result line;
no timing is asserted, containment is."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.errors import JaulaError
from jaula.storage import TemplateStore
from tests.security.lab import FIGURES, Lab
from tests.support.containers import wait_until

pytestmark = [pytest.mark.root, pytest.mark.attempt, pytest.mark.timeout(300)]
MiB = 1 << 20
LATENCY_ROUNDS = "1000"


def latency_us(lab: Lab, inst) -> float:
    code, out = lab.run(inst, ["/usr/bin/escape", "latency", LATENCY_ROUNDS])
    assert code == 0, out
    return float(out.split("\t")[1])


def background(lab: Lab, inst, args: str) -> None:
    """Start `escape ARGS` inside, detached, its output in /tmp/bg.out (the instance's)."""
    code, out = lab.sh(inst, f"rm -f /tmp/bg.out /tmp/bg.done; (/usr/bin/escape {args} > /tmp/bg.out 2>&1; "
                             "echo $? > /tmp/bg.done) > /dev/null 2>&1 &")
    assert code == 0, out


def finished(lab: Lab, inst, timeout: float = 90) -> tuple[int, str]:
    """The attempt's exit code and output, once it ended. While a fork bomb holds every pid of the
    instance an exec into it fails too (EAGAIN: the limit holds for jaula exec as well): retried."""

    def done() -> bool:
        try:
            return lab.sh(inst, "cat /tmp/bg.done")[0] == 0
        except JaulaError:
            return False

    wait_until("the attempt to end", done, timeout=timeout)
    code = int(lab.sh(inst, "cat /tmp/bg.done")[1].strip())
    return code, lab.sh(inst, "cat /tmp/bg.out")[1]


def host_can_fork() -> bool:
    return subprocess.run(["true"], check=False).returncode == 0


@pytest.fixture(scope="module")
def pair(lab: Lab) -> Iterator[tuple]:
    """An attacker with small limits and a default neighbour, both running; the neighbour's baseline."""
    attacker = lab.new(config={"limits.memory": "64MiB", "limits.processes": "100"})
    neighbour = lab.new()
    lab.start(attacker)
    lab.start(neighbour)
    baseline = latency_us(lab, neighbour)
    FIGURES.append(f"neighbour fork+wait latency, idle host: {baseline:.0f} us (median of {LATENCY_ROUNDS})")
    yield attacker, neighbour, baseline
    lab.remove(attacker)
    lab.remove(neighbour)


def _during(what: str, baseline: float, during: float) -> None:
    FIGURES.append(f"neighbour latency during {what}: {during:.0f} us ({during / baseline:.1f}x the idle median)")


def test_fork_bomb_is_held_by_the_pids_limit(lab: Lab, pair: tuple) -> None:
    attacker, neighbour, baseline = pair
    events = lambda: lab.cgroup_file(attacker, "pids", "pids.events")
    before = int(events().split()[-1])
    background(lab, attacker, "forkbomb 4")
    time.sleep(0.5)  # let it reach the limit
    during = latency_us(lab, neighbour)
    assert host_can_fork()
    code, out = finished(lab, attacker)
    _during("a fork bomb (limits.processes=100)", baseline, during)
    m = re.search(r"forks (\d+)\tfailed (\d+) (\w+)", out)
    assert code == 0 and m, out
    assert int(m[2]) > 0 and m[3] == "EAGAIN", f"the bomb never hit the limit: {out}"
    assert int(events().split()[-1]) > before, "pids.events counts no refused fork"
    assert int(lab.cgroup_file(attacker, "pids", "pids.current")) < 100
    assert lab.sh(neighbour, "echo alive") == (0, "alive\n")


def test_memory_hog_is_killed_inside_its_limit(lab: Lab, pair: tuple) -> None:
    attacker, neighbour, baseline = pair
    oom_before = _oom_kills(lab, attacker)
    background(lab, attacker, "hog 1024")
    during = latency_us(lab, neighbour)
    code, out = finished(lab, attacker)
    _during("a memory hog (1 GiB in limits.memory=64MiB)", baseline, during)
    assert code == 128 + 9, f"the hog was not killed ({code}): {out}"
    assert _oom_kills(lab, attacker) > oom_before, "the instance's memory cgroup saw no OOM kill"
    assert int(lab.cgroup_file(attacker, "memory", "memory.max_usage_in_bytes")) <= 64 * MiB
    assert lab.sh(attacker, "echo alive") == (0, "alive\n"), "the instance died with its hog"
    assert host_can_fork()


def _oom_kills(lab: Lab, inst) -> int:
    text = lab.cgroup_file(inst, "memory", "memory.oom_control")
    m = re.search(r"oom_kill (\d+)", text)
    return int(m[1]) if m else int(lab.cgroup_file(inst, "memory", "memory.failcnt"))


def test_dev_shm_fill_is_held_by_its_size_and_charged_to_the_instance(lab: Lab, pair: tuple) -> None:
    _, neighbour, baseline = pair
    inst = lab.new(config={"limits.memory": "256MiB"})
    lab.start(inst)
    try:
        background(lab, inst, "fill /dev/shm/fill 1024")
        during = latency_us(lab, neighbour)
        code, out = finished(lab, inst)
        _during("a /dev/shm fill", baseline, during)
        m = re.search(r"fill\t(\d+) MiB\t(\w+)", out)
        assert code == 0 and m and m[2] == "ENOSPC", out
        assert int(m[1]) <= 64, "/dev/shm grew past its 64 MiB"
        # its pages count against the instance's memory, not the host's
        assert int(lab.cgroup_file(inst, "memory", "memory.usage_in_bytes")) >= int(m[1]) * MiB
        assert host_can_fork()
    finally:
        lab.remove(inst)


@pytest.fixture(scope="module")
def loop_lab(sec_top: Path, sec_store: TemplateStore) -> Iterator[Lab]:
    top = sec_top / "loop"
    top.mkdir()
    top.chmod(0o711)
    lab = Lab(top, sec_store, pool_kind="loop")
    yield lab
    left = lab.close()
    assert not left, f"left behind: {left}"


@pytest.fixture(scope="module")
def quota(loop_lab: Lab, pair: tuple) -> Iterator[tuple]:
    if not shutil.which("mkfs.ext4"):
        pytest.skip("mkfs.ext4 missing: a loop pool needs e2fsprogs")
    inst = loop_lab.new(config={"limits.disk": "64MiB"})
    loop_lab.start(inst)
    yield inst, pair[1], pair[2]
    loop_lab.remove(inst)


def test_disk_fill_is_held_by_the_loop_quota(loop_lab: Lab, lab: Lab, quota: tuple) -> None:
    inst, neighbour, baseline = quota
    background(loop_lab, inst, "fill /root/fill 1024")
    during = latency_us(lab, neighbour)
    code, out = finished(loop_lab, inst, timeout=120)
    _during("a disk fill (limits.disk=64MiB)", baseline, during)
    m = re.search(r"fill\t(\d+) MiB\t(\w+)", out)
    assert code == 0 and m and m[2] == "ENOSPC", out
    assert int(m[1]) <= 64
    held = loop_lab.pool.usage(inst.name)
    assert held <= 64 * MiB + MiB, f"the volume holds {held >> 20} MiB of the host's disk for a 64 MiB quota"
    loop_lab.sh(inst, "rm -f /root/fill")
    assert host_can_fork()


def test_inodes_are_held_by_the_loop_quota(loop_lab: Lab, quota: tuple) -> None:
    inst, _, _ = quota
    assert loop_lab.sh(inst, "mkdir -p /root/many")[0] == 0
    code, out = loop_lab.run(inst, ["/usr/bin/escape", "inodes", "/root/many", "10000000"])
    m = re.search(r"inodes\t(\d+)\t(\w+)", out)
    assert code == 0 and m and m[2] == "ENOSPC", out
    FIGURES.append(f"inodes created before ENOSPC on a 64 MiB loop quota: {m[1]}")
    assert int(m[1]) < 10000000
    assert loop_lab.sh(inst, "rm -rf /root/many")[0] == 0
