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
