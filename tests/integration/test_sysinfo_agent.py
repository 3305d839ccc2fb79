"""The console keeper's seccomp agent against the real kernel, without an instance: a process in a
memory cgroup limited to 256 MiB loads the default profile with the sysinfo NOTIFY rule, hands its
listener to a real keeper through jaula.oci's listenerPath code, and calls sysinfo(2) with a good
pointer (the cgroup's figures), an unmapped one and a read-only page (EFAULT, as the kernel gives;
the keeper lives on and answers the next call); a killed keeper leaves ENOSYS, never a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.daemon.console_keeper_service import KeeperService
from jaula.instances import console_pty
from tests.support.containers import wait_until

pytestmark = pytest.mark.root
MiB = 1 << 20

CHILD = r"""
import ctypes, json, os, sys
from jaula.cgroups import v1  # noqa: F401  (imports before the filter, as a runtime does)
from jaula.linux import proc
from jaula.oci import seccomp
from jaula.oci.seccomp_profile import default_profile, notify_sysinfo

mem, pids, agent = sys.argv[1:4]
for d in (mem, pids):
    with open(f"{d}/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
prof = default_profile()
notify_sysinfo(prof, agent, "t")
sc = seccomp.Seccomp.from_json(prof)
proc.set_no_new_privs()
fd = seccomp.install(sc)
seccomp.send_to_listener(agent, fd, {"id": "t", "pid": os.getpid(), "status": "creating"}, "t")
os.close(fd)

class SysInfo(ctypes.Structure):
    _fields_ = [("uptime", ctypes.c_long), ("loads", ctypes.c_ulong * 3), ("totalram", ctypes.c_ulong),
                ("freeram", ctypes.c_ulong), ("sharedram", ctypes.c_ulong), ("bufferram", ctypes.c_ulong),
                ("totalswap", ctypes.c_ulong), ("freeswap", ctypes.c_ulong), ("procs", ctypes.c_ushort),
                ("totalhigh", ctypes.c_ulong), ("freehigh", ctypes.c_ulong), ("mem_unit", ctypes.c_uint)]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(addr):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(99), ctypes.c_void_p(addr))
    return r, ctypes.get_errno()

out = {}
s = SysInfo()
out["good"] = call(ctypes.addressof(s))
out["info"] = {k: getattr(s, k) for k in ("uptime", "totalram", "freeram", "sharedram", "bufferram", "totalswap",
                                          "freeswap", "procs", "mem_unit")}
out["loads"] = list(s.loads)
out["unmapped"] = call(0xdead0000)
"""


def _ro_page_call() -> str:
    return r"""
import ctypes as _c
_libc = _c.CDLL(None, use_errno=True)
_libc.mmap.restype = _c.c_void_p
_p = _libc.mmap(None, 4096, 1, 0x22, -1, 0)   # PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS
out["readonly"] = call(_p)
s2 = SysInfo()
out["again"] = call(_c.addressof(s2))
out["again_total"] = s2.totalram
print(json.dumps(out), flush=True)
if len(sys.argv) > 4:
    sys.stdin.readline()          # the test kills the keeper meanwhile
    out2 = {"after": call(_c.addressof(s2))}
    print(json.dumps(out2), flush=True)
"""


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[KeeperService]:
    root = tmp_path / "keeper"
    root.mkdir()
    svc = KeeperService(root)
    assert svc.start(watch=False)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def cgroup() -> Iterator[tuple[str, str]]:
    made = []
    out = []
    with open("/proc/self/cgroup") as f:
        mine = {c: p for _, cs, p in (ln.rstrip("\n").split(":", 2) for ln in f) for c in cs.split(",")}
    for ctrl in ("memory", "pids"):
        if not os.path.isdir(f"/sys/fs/cgroup/{ctrl}"):
            pytest.skip(f"no cgroup v1 {ctrl} controller mounted at /sys/fs/cgroup/{ctrl} (the v2 figures: unit tests)")
        d = f"/sys/fs/cgroup/{ctrl}{mine[ctrl].rstrip('/')}/sysinfo-agent-{os.getpid()}"
        os.mkdir(d)
        made.append(d)
        out.append(d)
    Path(out[0], "memory.limit_in_bytes").write_text(str(256 * MiB))
    try:
        yield out[0], out[1]
    finally:
        for d in made:
            wait_until(f"{d} empty", lambda d=d: not Path(d, "cgroup.procs").read_text().strip(), timeout=10)
            os.rmdir(d)


def _run(cg: tuple[str, str], agent: str, hold: bool = False) -> subprocess.Popen:
    script = CHILD + _ro_page_call()
    args = [sys.executable, "-c", script, cg[0], cg[1], agent] + (["hold"] if hold else [])
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[2]))


def test_sysinfo_answered_from_the_cgroup_and_bad_pointers_get_efault(keeper: KeeperService,
                                                                      cgroup: tuple[str, str]) -> None:
    agent = str(Path(keeper.path).parent / console_pty.AGENT_SOCKET)
    p = _run(cgroup, agent)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    r = json.loads(out)
    info = r["info"]
    assert r["good"] == [0, 0], r
    assert info["mem_unit"] == 1 and info["totalram"] == 256 * MiB, info
    usage = int(Path(cgroup[0], "memory.max_usage_in_bytes").read_text())
    assert 256 * MiB - usage <= info["freeram"] < 256 * MiB, (info, usage)
    assert info["procs"] >= 1 and info["bufferram"] == 0
    host_up = float(Path("/proc/uptime").read_text().split()[0])
    assert abs(info["uptime"] - host_up) < 30, (info, host_up)  # no time namespace: the host's boot clock
    assert r["unmapped"] == [-1, 14] and r["readonly"] == [-1, 14], r  # EFAULT, as copy_to_user gives
    assert r["again"] == [0, 0] and r["again_total"] == 256 * MiB  # the keeper answered on
    verb, payload, _ = console_pty.request(keeper.path, "AGENT")
    _listeners, answered, _continued, faulted = map(int, payload.split())
    assert verb == "AGENT" and answered >= 2 and faulted >= 2, payload
    wait_until("the keeper to drop the ended process's listener",
               lambda: console_pty.request(keeper.path, "AGENT")[1].split()[0] == "0", timeout=10)


def test_a_dead_keeper_leaves_enosys_not_a_hang(keeper: KeeperService, cgroup: tuple[str, str]) -> None:
    agent = str(Path(keeper.path).parent / console_pty.AGENT_SOCKET)
    p = _run(cgroup, agent, hold=True)
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert json.loads(line)["good"] == [0, 0], line
        os.kill(keeper.pid, signal.SIGKILL)  # type: ignore[arg-type]
        wait_until("the keeper gone", lambda: not Path(f"/proc/{keeper.pid}").exists()
                   or "Z" in Path(f"/proc/{keeper.pid}/stat").read_text().split()[2], timeout=10)
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
        out, err = p.communicate(timeout=30)
        assert json.loads(out)["after"] == [-1, 38], (out, err)  # ENOSYS: no listener any more
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
