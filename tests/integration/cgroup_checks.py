"""Real cgroup checks shared by the v1 and v2 integration modules: python children under real limits.

Every cgroup is made below the caller's own (path None: <caller>/jaula/<name>), named jaula-test-*,
and removed again; the fixture asserts that nothing is left behind.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from jaula.cgroups import Cgroup, Resources, open_cgroup

MiB = 2**20
_n = itertools.count()


def new_cgroup() -> Cgroup:
    cg = open_cgroup(None, f"jaula-test-{os.getpid()}-{next(_n)}")
    cg.create()
    return cg


def cleanup(cg: Cgroup, procs: list[subprocess.Popen]) -> None:
    """Kill, reap, remove, and check every directory is gone."""
    try:
        cg.kill(signal.SIGKILL)
    finally:
        for p in procs:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        cg.remove(timeout=10)
    left = [d for d in set(cg.paths.values()) if os.path.exists(d)]
    assert not left, f"cgroup directories left behind: {left}"


def spawn(code: str) -> subprocess.Popen:
    """A python child that waits for one byte on stdin (sent once it is in the cgroup) before `code`."""
    prog = "import sys, os\nsys.stdin.buffer.read(1)\n" + code
    return subprocess.Popen([sys.executable, "-c", prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def go(p: subprocess.Popen) -> None:
    assert p.stdin is not None
    p.stdin.write(b"x")
    p.stdin.flush()


def cputime(pid: int) -> int:
    """utime + stime in clock ticks, from /proc/PID/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def read(cg: Cgroup, key: str, name: str) -> str:
    with open(os.path.join(cg.paths[key], name)) as f:
        return f.read().strip()


# ---- the checks ------------------------------------------------------------------------------------

def check_membership(cg: Cgroup, procs: list) -> None:
    p = spawn("import time; time.sleep(60)")
    procs.append(p)
    cg.add_pid(p.pid)
    assert p.pid in cg.pids()
    with open(f"/proc/{p.pid}/cgroup") as f:
        lines = f.read().splitlines()
    name = os.path.basename(next(iter(cg.paths.values())))
    for line in lines:
        assert line.endswith(f"/jaula/{name}"), f"{line!r}: the child is not in {name} on that hierarchy"


def check_freeze(cg: Cgroup, procs: list) -> None:
    p = spawn("while True: pass")
    procs.append(p)
    cg.add_pid(p.pid)
    go(p)
    time.sleep(0.3)
    assert cputime(p.pid) > 0
    cg.freeze()
    assert cg.frozen()
    t0 = cputime(p.pid)
    time.sleep(0.5)
    assert cputime(p.pid) - t0 <= 1, "a frozen task kept running"
    cg.thaw()
    assert not cg.frozen()
    t1 = cputime(p.pid)
    time.sleep(0.5)
    assert cputime(p.pid) - t1 >= 2, "the thawed task did not run again"


def check_pids_limit(cg: Cgroup, procs: list) -> None:
    cg.update(Resources.from_oci({"pids": {"limit": 4}}))
    p = spawn(
        "import time\n"
        "kids = 0\n"
        "try:\n"
        "    for _ in range(50):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n"
        "        kids += 1\n"
        "    print('no EAGAIN', kids, flush=True)\n"
        "except BlockingIOError as e:\n"
        "    print('EAGAIN', kids, flush=True)\n"
        "time.sleep(60)\n")
    procs.append(p)
    cg.add_pid(p.pid)
    go(p)
    assert p.stdout is not None
    line = p.stdout.readline().decode().split()
    assert line == ["EAGAIN", "3"], f"forks under pids.max 4: {line}"
    assert len(cg.pids()) == 4
    row = cg.stats().row("pids")
    assert row is not None and row.limit == 4 and row.held == 4 and (row.failcnt or 0) > 0


def check_memory_oom(cg: Cgroup, procs: list) -> None:
    cg.update(Resources.from_oci({"memory": {"limit": 20 * MiB}}))
    p = spawn("hog = []\n"
              "for _ in range(200):\n"
              "    hog.append(bytearray(1 << 20))\n"
              "print('survived', flush=True)\n")
    procs.append(p)
    cg.add_pid(p.pid)
    go(p)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, f"the hog was not OOM-killed: rc {p.returncode}, {out!r}"
    row = cg.stats().row("memory")
    assert row is not None and row.limit == 20 * MiB
    assert (row.failcnt or 0) > 0 and row.details.get("oom_kill", 1) >= 1
    assert (row.maxheld or 0) > 10 * MiB


def check_devices(cg: Cgroup, procs: list, rules: dict | None = None) -> None:
    """/dev/null read-write and /dev/zero read allowed, everything else denied."""
    cg.update(Resources.from_oci({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]}))
    p = spawn("for path, mode in (('/dev/null', os.O_RDWR), ('/dev/zero', os.O_RDONLY), ('/dev/zero', os.O_WRONLY),\n"
              "                   ('/dev/full', os.O_RDONLY)):\n"
              "    try:\n"
              "        os.close(os.open(path, mode)); print(path, mode, 'ok')\n"
              "    except OSError as e:\n"
              "        print(path, mode, e.errno)\n")
    procs.append(p)
    cg.add_pid(p.pid)
    go(p)
    out, err = p.communicate(timeout=30)
    assert out.decode().splitlines() == ["/dev/null 2 ok", "/dev/zero 0 ok", "/dev/zero 1 1", "/dev/full 0 1"], err


def check_kill_tree(cg: Cgroup, procs: list) -> None:
    p = spawn("import time\n"
              "for _ in range(3):\n"
              "    if os.fork() == 0:\n"
              "        time.sleep(60); os._exit(0)\n"
              "print('forked', flush=True)\n"
              "time.sleep(60)\n")
    procs.append(p)
    cg.add_pid(p.pid)
    go(p)
    assert p.stdout is not None and p.stdout.readline() == b"forked\n"
    assert len(cg.pids()) == 4
    cg.kill(signal.SIGKILL)
    p.wait(timeout=10)
    deadline = time.monotonic() + 10
    while cg.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cg.pids() == []


def check_stats(cg: Cgroup, procs: list) -> None:
    p = spawn("x = bytearray(8 << 20)\nimport time\nt = time.time()\nwhile time.time() - t < 0.3: pass\n"
              "print('done', flush=True)\ntime.sleep(60)\n")
    procs.append(p)
    cg.add_pid(p.pid)
    go(p)
    assert p.stdout is not None and p.stdout.readline() == b"done\n"
    st = cg.stats()
    assert (st.cpu_usage_ns or 0) > 10_000_000
    assert (st.row("memory").held or 0) > 4 * MiB
    assert st.row("pids").held == 1
    assert "memory" in st.beancounters()


def skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: cgroups are created and limits written for real")
