"""The sysinfo agent's figures (jaula.daemon.sysinfo_notify) on synthetic cgroup v1 and v2 trees
and /proc files, the struct's layout, mem_unit as the kernel's do_sysinfo, and the profile rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaula.daemon import sysinfo_notify as si
from jaula.linux import seccomp_notify as sn

MiB = 1 << 20
HOST = {"MemTotal": 8192 * MiB, "SwapTotal": 1024 * MiB, "SwapFree": 1000 * MiB}


def _write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for k, v in files.items():
        (d / k).write_text(v)


def _proc(tmp: Path, pid: int, cgroup: str, mountinfo: str) -> Path:
    proc = tmp / "proc"
    _write(proc / str(pid), {"cgroup": cgroup})
    _write(proc / "self", {"mountinfo": mountinfo})
    return proc


V1_MOUNTS = ("35 31 0:32 / {top}/memory rw,relatime - cgroup cgroup rw,memory\n"
             "39 31 0:36 / {top}/pids rw,relatime - cgroup cgroup rw,pids\n"
             "41 31 0:38 / {top}/unified rw,relatime - cgroup2 cgroup2 rw\n")


def test_v1_tree(tmp_path: Path) -> None:
    top = tmp_path / "cg"
    proc = _proc(tmp_path, 42, "9:name=systemd:/\n8:pids:/jaula/web\n4:memory:/jaula/web\n0::/\n",
                 V1_MOUNTS.format(top=top))
    _write(top / "memory/jaula/web", {
        "memory.limit_in_bytes": f"{256 * MiB}\n", "memory.usage_in_bytes": f"{100 * MiB}\n",
        "memory.memsw.limit_in_bytes": f"{384 * MiB}\n", "memory.memsw.usage_in_bytes": f"{110 * MiB}\n",
        "memory.stat": "cache 5\ntotal_cache 7\ntotal_shmem 4194304\n"})
    _write(top / "pids/jaula/web", {"pids.current": "17\n"})
    cg = si.cgroup_of(42, si.cgroup_mounts(str(proc / "self/mountinfo")), str(proc))
    assert cg is not None and cg.version == 1
    assert cg.memory == f"{top}/memory/jaula/web" and cg.pids == f"{top}/pids/jaula/web"
    fig = si.figures(cg, HOST)
    assert fig is not None
    assert (fig.totalram, fig.freeram, fig.sharedram) == (256 * MiB, 156 * MiB, 4 * MiB)
    assert (fig.totalswap, fig.freeswap, fig.procs) == (128 * MiB, 118 * MiB, 17)
    # the swap limit is at most the host's swap: a host without swap answers none
    fig = si.figures(cg, HOST | {"SwapTotal": 0, "SwapFree": 0})
    assert fig is not None and (fig.totalswap, fig.freeswap) == (0, 0)
    # unlimited memory+swap: the host's swap figures
    (top / "memory/jaula/web/memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    fig = si.figures(cg, HOST)
    assert fig is not None and (fig.totalswap, fig.freeswap) == (1024 * MiB, 1000 * MiB)
    # usage over the limit (charged kernel memory) never makes free negative
    (top / "memory/jaula/web/memory.usage_in_bytes").write_text(f"{300 * MiB}\n")
    assert si.figures(cg, HOST).freeram == 0  # type: ignore[union-attr]


def test_v1_without_a_memory_limit_leaves_it_to_the_kernel(tmp_path: Path) -> None:
    d = tmp_path / "m"
    _write(d, {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": "1000\n"})
    assert si.figures(si.Cgroup(1, str(d), None), HOST) is None
    # a limit at or above the host's RAM: the kernel's answer is as honest
    (d / "memory.limit_in_bytes").write_text(f"{8192 * MiB}\n")
    assert si.figures(si.Cgroup(1, str(d), None), HOST) is None
    (d / "memory.limit_in_bytes").write_text(f"{8191 * MiB}\n")
    assert si.figures(si.Cgroup(1, str(d), None), HOST) is not None


def test_v2_tree(tmp_path: Path) -> None:
    top = tmp_path / "unified"
    proc = _proc(tmp_path, 7, "0::/jaula.slice/db\n", f"30 23 0:27 / {top} rw - cgroup2 cgroup2 rw,nsdelegate\n")
    _write(top / "jaula.slice/db", {
        "memory.max": f"{512 * MiB}\n", "memory.current": f"{200 * MiB}\n",
        "memory.swap.max": f"{64 * MiB}\n", "memory.swap.current": f"{16 * MiB}\n",
        "memory.stat": "anon 1\nfile 2\nshmem 1048576\n", "pids.current": "3\n"})
    cg = si.cgroup_of(7, si.cgroup_mounts(str(proc / "self/mountinfo")), str(proc))
    assert cg is not None and cg.version == 2 and cg.memory == cg.pids == f"{top}/jaula.slice/db"
    fig = si.figures(cg, HOST)
    assert fig is not None
    assert (fig.totalram, fig.freeram, fig.sharedram, fig.totalswap, fig.freeswap, fig.procs) == (
        512 * MiB, 312 * MiB, MiB, 64 * MiB, 48 * MiB, 3)
    (top / "jaula.slice/db/memory.swap.max").write_text("max\n")
    fig = si.figures(cg, HOST)
    assert fig is not None and (fig.totalswap, fig.freeswap) == (1024 * MiB, 1000 * MiB)
    (top / "jaula.slice/db/memory.max").write_text("max\n")
    assert si.figures(cg, HOST) is None


def test_a_cgroup_mount_of_a_sub_tree(tmp_path: Path) -> None:
    """A hierarchy mounted from a folder of it (a cgroup namespace's view): paths outside it are not reachable."""
    mounts = {"memory": ("/lxc/x", "/sys/fs/cgroup/memory")}
    assert si._join(mounts["memory"], "/lxc/x/jaula/a") == "/sys/fs/cgroup/memory/jaula/a"
    assert si._join(mounts["memory"], "/other") is None
    assert si._join(("/", "/sys/fs/cgroup/memory"), "/") == "/sys/fs/cgroup/memory"


def test_mem_unit_as_the_kernel() -> None:
    fig = si.Figures(256 * MiB + 100, 100 * MiB + 5000, 0, 0, 0, 1)
    vals, unit = si.scale(fig, 64, 4096)
    assert unit == 1 and vals[:2] == (256 * MiB, 100 * MiB + 4096)  # counted in whole pages, as the kernel
    # a 32-bit unsigned long: 6 GiB of RAM does not fit in bytes, so pages with mem_unit = the page size
    vals, unit = si.scale(si.Figures(6 << 30, 1 << 30, 0, 0, 0, 1), 32, 4096)
    assert unit == 4096 and vals[0] == (6 << 30) // 4096
    vals, unit = si.scale(si.Figures(2 << 30, 1 << 30, 0, 1 << 30, 0, 1), 32, 4096)
    assert unit == 1 and vals[0] == 2 << 30


def test_uptime_follows_the_time_namespace(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _write(proc / "5", {"timens_offsets": "monotonic           0         0\nboottime  -1001      500000000\n"})
    assert si.uptime(5, str(proc), boottime=1234.25) == 234  # 233.75 s: whole seconds rounded up (the kernel keeps nsec in 0..1e9)
    assert si.uptime(6, str(proc), boottime=1234.0) == 1234  # no file: no time namespace of its own


def test_loads_and_host_meminfo(tmp_path: Path) -> None:
    _write(tmp_path, {"loadavg": "1.50 0.25 0.00 1/174 8446\n",
                      "meminfo": "MemTotal:  1000 kB\nMemFree: 10 kB\nSwapTotal: 20 kB\nSwapFree: 5 kB\n"})
    h = si.Host(str(tmp_path))
    assert h.loads() == (98304, 16384, 0)  # 1.5 and 0.25 in 16.16 fixed point
    assert h.meminfo() == {"MemTotal": 1024000, "SwapTotal": 20480, "SwapFree": 5120}


def test_struct_sysinfo_layout() -> None:
    import ctypes

    class SysInfo(ctypes.Structure):
        _fields_ = [("uptime", ctypes.c_long), ("loads", ctypes.c_ulong * 3), ("totalram", ctypes.c_ulong),
                    ("freeram", ctypes.c_ulong), ("sharedram", ctypes.c_ulong), ("bufferram", ctypes.c_ulong),
                    ("totalswap", ctypes.c_ulong), ("freeswap", ctypes.c_ulong), ("procs", ctypes.c_ushort),
                    ("totalhigh", ctypes.c_ulong), ("freehigh", ctypes.c_ulong), ("mem_unit", ctypes.c_uint),
                    ("_f", ctypes.c_char * 0)]

    raw = sn.pack_sysinfo(99, (1, 2, 3), 10, 9, 8, 7, 6, 5, 70000, 1)
    assert len(raw) == ctypes.sizeof(SysInfo) == 112
    s = SysInfo.from_buffer_copy(raw)
    assert (s.uptime, list(s.loads), s.totalram, s.freeram, s.sharedram, s.bufferram, s.totalswap, s.freeswap,
            s.procs, s.totalhigh, s.mem_unit) == (99, [1, 2, 3], 10, 9, 8, 7, 6, 5, 0xFFFF, 0, 1)


def test_bad_addresses_read_efault(tmp_path: Path) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"")
    fd = os.open(f, os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            sn.write_mem(fd, 1 << 64, b"x")  # past an off_t
        assert e.value.errno == 14
    finally:
        os.close(fd)


def test_the_profile_rule_goes_before_the_allow_rule() -> None:
    from jaula.oci.seccomp import Seccomp
    from jaula.oci.seccomp import compile as compile_
    from jaula.oci.seccomp_profile import default_profile, notify_sysinfo

    prof = default_profile()
    notify_sysinfo(prof, "/run/x/seccomp-agent.sock", "web")
    assert prof["syscalls"][0] == {"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}
    assert prof["listenerPath"] == "/run/x/seccomp-agent.sock" and prof["listenerMetadata"] == "web"
    sc = Seccomp.from_json(prof)
    assert sc.uses_notify and compile_(sc)


def test_render_adds_the_rule_only_with_an_agent_and_the_setting() -> None:
    from jaula.instances import settings

    s = settings.SETTINGS["security.syscalls.intercept.sysinfo"]
    assert s.default is True and not s.live
    assert settings.validate({"security.syscalls.intercept.sysinfo": "off"}) == {"security.syscalls.intercept.sysinfo": False}


def test_writable_ranges_from_maps() -> None:
    maps = (b"00400000-00401000 r-xp 00000000 08:01 12 /bin/x\n"
            b"00601000-00602000 rw-p 00001000 08:01 12 /bin/x\n"
            b"00602000-00604000 rw-p 00000000 00:00 0 [heap]\n"
            b"7ffd0000-7ffe0000 rw-p 00000000 00:00 0 [stack]\n")
    assert si.writable(maps, 0x00601f90, 112)          # across two adjacent writable mappings
    assert not si.writable(maps, 0x00400000, 112)      # read-only text: EFAULT, as copy_to_user
    assert not si.writable(maps, 0x00603fa0, 112)      # runs past the heap into a hole
    assert not si.writable(maps, 0xdead0000, 112)      # unmapped
    assert si.writable(maps, 0x7ffd1000, 112) and not si.writable(maps, 0, 112)


def test_render_with_an_agent(tmp_path: Path) -> None:
    from jaula.instances.model import Instance
    from tests.unit.test_instances_render import rendered

    agent = "/var/lib/jaula/seccomp-agent.sock"
    spec = rendered(tmp_path, Instance.new("s1", "bb", idmap_base=1 << 20), sysinfo_agent=agent)
    sc = spec["linux"]["seccomp"]
    assert sc["syscalls"][0] == {"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}
    assert sc["listenerPath"] == agent and sc["listenerMetadata"] == "s1"
    for inst, kw in ((Instance.new("s2", "bb", idmap_base=1 << 20), {}),  # no keeper answering: none
                     (Instance.new("s3", "bb", idmap_base=1 << 20,
                                   config={"security.syscalls.intercept.sysinfo": "false"}), {"sysinfo_agent": agent})):
        sc = rendered(tmp_path, inst, **kw)["linux"]["seccomp"]
        assert "listenerPath" not in sc and all(r["action"] != "SCMP_ACT_NOTIFY" for r in sc["syscalls"])
