"""Resource exhaustion from inside a default instance, held by its own limits: a fork bomb by the
pids limit, a memory hog by the memory limit (killed inside, not on the host), /dev/shm by its
size, the disk and its inodes by a loop pool's quota, busy loops by the cpu shares. Each is held
(asserted), and each is then run again against a neighbour instance in phases: the attack on for
PERIOD, off for PERIOD, over SECONDS, while the neighbour samples its fork+wait latency all along
and sorts each sample by phase (`escape phased` and `escape latency-phased`, on the host's
monotonic clock). The goal: the neighbour's median latency during the attack at most MAX_RATIO
times its median in the quiet phases of the same run; both sides see the host's other work alike.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from jaula.errors import JaulaError
from jaula.storage import TemplateStore
from tests.security.lab import FIGURES, Lab
from tests.support.containers import wait_until

pytestmark = [pytest.mark.root, pytest.mark.attempt, pytest.mark.timeout(300)]
MiB = 1 << 20


PERIOD_MS = 1000     # one phase: the attack on (or off) for a second
SECONDS = 20         # 10 phases on, 10 off
GAP_US = 1000        # the neighbour's pace: a sample, then a millisecond idle (a service's request)
MAX_RATIO = 2.0      # issue 6's goal: the neighbour's latency at most doubled


class Interference(NamedTuple):
    on_us: float
    off_us: float
    on_p90: float
    off_p90: float
    samples: tuple[int, int]
    attacker: str

    @property
    def ratio(self) -> float:
        return self.on_us / self.off_us if self.samples[0] else float("inf")


def interference(attacker_lab: Lab, attacker, lab: Lab, neighbour, attack: str, workers: int = 1) -> Interference:
    """`escape phased ... ATTACK` in the attacker and `escape latency-phased` in the neighbour on
    one schedule, starting 3 s from now on the host's monotonic clock (an instance's time
    namespace moves only its boot clock)."""
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 3_000_000_000
    schedule = f"{t0} {PERIOD_MS} {SECONDS}"
    background(attacker_lab, attacker, f"phased {schedule} {workers} {attack}")
    background(lab, neighbour, f"latency-phased {schedule} {GAP_US}")
    code, out = finished(lab, neighbour, timeout=SECONDS + 90)
    assert code == 0, out
    side = {parts[0]: parts[1:] for line in out.splitlines() if len(parts := line.split("\t")) == 4}
    acode, aout = finished(attacker_lab, attacker, timeout=60)
    assert acode == 0 and aout.startswith("phased"), aout
    on, off = side["on"], side["off"]
    got = Interference(float(on[0]), float(off[0]), float(on[1]), float(off[1]), (int(on[2]), int(off[2])), aout.strip())
    assert got.samples[1] >= 500, f"too few samples in the quiet phases (clocks apart?): {out}"
    return got


def report(what: str, got: Interference) -> None:
    FIGURES.append(f"neighbour fork+wait latency during {what}: {got.on_us:.0f} us vs {got.off_us:.0f} us quiet "
                   f"({got.ratio:.2f}x; p90 {got.on_p90:.0f}/{got.off_p90:.0f} us; medians of {got.samples[0]}/"
                   f"{got.samples[1]} samples, {PERIOD_MS} ms phases interleaved over {SECONDS} s)")


def assert_neighbour_served(what: str, got: Interference) -> None:
    # paced samples (one per GAP_US): half as many in the attack's phases is a halved service too
    assert got.samples[0] * MAX_RATIO >= got.samples[1], (
        f"the neighbour starved during {what}: {got.samples[0]} samples vs {got.samples[1]} in as long quiet; "
        f"attacker: {got.attacker}")
    assert got.ratio <= MAX_RATIO, (f"the neighbour's latency during {what}: {got.on_us:.0f} us vs {got.off_us:.0f} us "
                                    f"without it ({got.ratio:.2f}x > {MAX_RATIO}x); attacker: {got.attacker}")


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
    """An attacker with small limits and a default neighbour, both running."""
    attacker = lab.new(config={"limits.memory": "64MiB", "limits.processes": "100"})
    neighbour = lab.new()
    lab.start(attacker)
    lab.start(neighbour)
    yield attacker, neighbour
    lab.remove(attacker)
    lab.remove(neighbour)


def test_fork_bomb_is_held_by_the_pids_limit(lab: Lab, pair: tuple) -> None:
    """Held twice: root's bomb by RLIMIT_NPROC (limits.processes: the kernel refuses early in
    fork, before copying the address space), any uid's by the pids cgroup (each uid has its own
    RLIMIT_NPROC count; the cgroup counts them all). In an instance of its own without a memory
    limit: refused forks churn kernel memory (task structs and stacks freed after an RCU grace
    period) charged to the instance; in limits.memory=64MiB a bomb of seconds OOM-killed its init."""
    _, neighbour = pair
    attacker = lab.new(config={"limits.processes": "100"})
    lab.start(attacker)
    try:
        for who in ("1", "self"):  # the init's, and an exec's (the bombs below are started by exec)
            assert re.search(r"Max processes +100 +100 ", lab.sh(attacker, f"cat /proc/{who}/limits")[1]), who
        events = lambda: int(lab.cgroup_file(attacker, "pids", "pids.events").split()[-1])
        background(lab, attacker, "forkbomb 4")
        time.sleep(0.5)  # let it reach the limit
        assert host_can_fork()
        code, out = finished(lab, attacker)
        m = re.search(r"forks (\d+)\tfailed (\d+) (\w+)", out)
        assert code == 0 and m, out
        assert int(m[2]) > 0 and m[3] == "EAGAIN", f"the bomb never hit the limit: {out}"
        assert int(lab.cgroup_file(attacker, "pids", "pids.current")) < 100
        before = events()
        code, out = lab.run(attacker, ["/usr/bin/escape", "forkbomb", "3"], user=(1000, 1000))
        m = re.search(r"forks (\d+)\tfailed (\d+) (\w+)", out)
        assert code == 0 and m and int(m[2]) > 0 and m[3] == "EAGAIN", f"uid 1000's bomb never hit the limit: {out}"
        assert events() > before, "pids.events counts no refused fork of uid 1000's bomb"
        assert lab.sh(neighbour, "echo alive") == (0, "alive\n")
        got = interference(lab, attacker, lab, neighbour, "forkbomb")
        report("a fork bomb (limits.processes=100)", got)
        assert int(lab.cgroup_file(attacker, "pids", "pids.current")) < 100
        assert lab.sh(attacker, "echo alive") == (0, "alive\n"), "the instance died with its bomb"
        assert_neighbour_served("a fork bomb", got)
    finally:
        lab.remove(attacker)


def test_memory_hog_is_killed_inside_its_limit(lab: Lab, pair: tuple) -> None:
    attacker, neighbour = pair
    oom_before = _oom_kills(lab, attacker)
    background(lab, attacker, "hog 1024")
    code, out = finished(lab, attacker)
    assert code == 128 + 9, f"the hog was not killed ({code}): {out}"
    assert _oom_kills(lab, attacker) > oom_before, "the instance's memory cgroup saw no OOM kill"
    assert int(lab.cgroup_file(attacker, "memory", "memory.max_usage_in_bytes")) <= 64 * MiB
    assert lab.sh(attacker, "echo alive") == (0, "alive\n"), "the instance died with its hog"
    assert host_can_fork()
    got = interference(lab, attacker, lab, neighbour, "hog 1024")
    report("a memory hog (1 GiB again and again in limits.memory=64MiB)", got)
    m = re.search(r"runs (\d+) killed (\d+)", got.attacker)
    assert m and int(m[2]) >= 10 and int(m[2]) == int(m[1]), f"every hog is killed by its OOM: {got.attacker}"
    assert int(lab.cgroup_file(attacker, "memory", "memory.max_usage_in_bytes")) <= 64 * MiB
    assert_neighbour_served("a memory hog", got)


def test_busy_loops_are_held_by_the_cpu_shares(lab: Lab, pair: tuple) -> None:
    """Four busy loops on a 2-cpu host: the attacker's cgroup gets its share (default weight, as
    the neighbour's), the neighbour's wake-ups still come at once."""
    attacker, neighbour = pair
    got = interference(lab, attacker, lab, neighbour, "burn", workers=4)
    report("four busy loops (default cpu weight)", got)
    assert_neighbour_served("busy loops", got)


def _oom_kills(lab: Lab, inst) -> int:
    text = lab.cgroup_file(inst, "memory", "memory.oom_control")
    m = re.search(r"oom_kill (\d+)", text)
    return int(m[1]) if m else int(lab.cgroup_file(inst, "memory", "memory.failcnt"))


def test_dev_shm_fill_is_held_by_its_size_and_charged_to_the_instance(lab: Lab, pair: tuple) -> None:
    _, neighbour = pair
    inst = lab.new(config={"limits.memory": "256MiB"})
    lab.start(inst)
    try:
        background(lab, inst, "fill /dev/shm/fill 1024")
        code, out = finished(lab, inst)
        m = re.search(r"fill\t(\d+) MiB\t(\w+)", out)
        assert code == 0 and m and m[2] == "ENOSPC", out
        assert int(m[1]) <= 64, "/dev/shm grew past its 64 MiB"
        # its pages count against the instance's memory, not the host's
        assert int(lab.cgroup_file(inst, "memory", "memory.usage_in_bytes")) >= int(m[1]) * MiB
        assert host_can_fork()
        assert lab.sh(inst, "rm -f /dev/shm/fill")[0] == 0
        got = interference(lab, inst, lab, neighbour, "fill 1024 /dev/shm/fill")
        report("a /dev/shm fill (64 MiB, removed, again)", got)
        assert_neighbour_served("a /dev/shm fill", got)
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
    yield inst, pair[1]
    loop_lab.remove(inst)


def test_disk_fill_is_held_by_the_loop_quota(loop_lab: Lab, lab: Lab, quota: tuple) -> None:
    inst, neighbour = quota
    background(loop_lab, inst, "fill /root/fill 1024")
    code, out = finished(loop_lab, inst, timeout=120)
    m = re.search(r"fill\t(\d+) MiB\t(\w+)", out)
    assert code == 0 and m and m[2] == "ENOSPC", out
    assert int(m[1]) <= 64
    held = loop_lab.pool.usage(inst.name)
    assert held <= 64 * MiB + MiB, f"the volume holds {held >> 20} MiB of the host's disk for a 64 MiB quota"
    loop_lab.sh(inst, "rm -f /root/fill")
    assert host_can_fork()
    got = interference(loop_lab, inst, lab, neighbour, "fill 1024 /root/fill")
    report("a disk fill (limits.disk=64MiB, written, removed, again)", got)
    assert_neighbour_served("a disk fill", got)


def test_inodes_are_held_by_the_loop_quota(loop_lab: Lab, quota: tuple) -> None:
    inst, _ = quota
    assert loop_lab.sh(inst, "mkdir -p /root/many")[0] == 0
    code, out = loop_lab.run(inst, ["/usr/bin/escape", "inodes", "/root/many", "10000000"])
    m = re.search(r"inodes\t(\d+)\t(\w+)", out)
    assert code == 0 and m and m[2] == "ENOSPC", out
    FIGURES.append(f"inodes created before ENOSPC on a 64 MiB loop quota: {m[1]}")
    assert int(m[1]) < 10000000
    assert loop_lab.sh(inst, "rm -rf /root/many")[0] == 0
