"""A synthetic cgroup kernel for the unit tests: a temp tree whose mkdir makes interface files.

It keeps the kernel rules the drivers depend on (v2 delegation through cgroup.subtree_control and the
no-internal-process rule, v1 memory <= memory+swap, rmdir of a busy or non-empty cgroup) and records
every write, signal and eBPF program, so tests can assert exactly what a driver did.
"""

from __future__ import annotations

import errno
import os
import signal

from jaula.cgroups import bpf
from jaula.cgroups.base import CgroupFs
from jaula.cgroups.layout import Layout, probe

V1_FILES: dict[str, dict[str, str]] = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712", "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": "0",
               "memory.max_usage_in_bytes": "0", "memory.failcnt": "0", "memory.memsw.usage_in_bytes": "0",
               "memory.memsw.failcnt": "0", "memory.swappiness": "60", "memory.use_hierarchy": "1",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
               "memory.kmem.tcp.limit_in_bytes": "9223372036854771712"},
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1", "cpu.cfs_burst_us": "0",
            "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0", "cpu.idle": "0",
            "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "0", "pids.peak": "0", "pids.events": "max 0\n"},
    "freezer": {"freezer.state": "THAWED"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.bfq.weight_device": "", "blkio.throttle.read_bps_device": "",
              "blkio.throttle.write_bps_device": "", "blkio.throttle.read_iops_device": "",
              "blkio.throttle.write_iops_device": "", "blkio.throttle.io_service_bytes_recursive": "Total 0\n"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "9223372036854771712", "hugetlb.2MB.usage_in_bytes": "0",
                "hugetlb.2MB.max_usage_in_bytes": "0", "hugetlb.2MB.failcnt": "0"},
    "net_cls": {"net_cls.classid": "0"},
    "net_prio": {"net_prio.ifpriomap": ""},
}
V2_FILES: dict[str, dict[str, str]] = {
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.low": "0", "memory.high": "max",
               "memory.current": "0", "memory.peak": "0", "memory.swap.current": "0",
               "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", "memory.swap.events": "high 0\nmax 0\nfail 0\n"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "io": {"io.weight": "default 100", "io.max": "", "io.stat": ""},
    "pids": {"pids.max": "max", "pids.current": "0", "pids.events": "max 0\n"},
    "hugetlb": {"hugetlb.2MB.max": "max", "hugetlb.2MB.current": "0", "hugetlb.2MB.events": "max 0\n",
                "hugetlb.1GB.max": "max", "hugetlb.1GB.current": "0", "hugetlb.1GB.events": "max 0\n"},
}
V2_CORE = {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.events": "populated 0\nfrozen 0\n",
           "cgroup.freeze": "0", "cgroup.kill": "", "cgroup.type": "domain", "cpu.stat": "usage_usec 0\nnr_throttled 0\n"}
UNL = 9223372036854771712


class FakeKernel(CgroupFs):
    def __init__(self, root: str) -> None:
        self.root = root
        self.hier: dict[str, tuple[int, tuple[str, ...]]] = {}   # mountpoint -> (version, controllers)
        self.writes: list[tuple[str, str]] = []                   # (path relative to root, value)
        self.signals: list[tuple[int, int]] = []
        self.programs: dict[str, list[bpf.Insn]] = {}
        self.freezing_reads = 0          # v1: how many reads show FREEZING before FROZEN
        self.busy_rmdirs: dict[str, int] = {}   # dir -> EBUSY answers before it goes
        self.device_resets = 0           # writes of an "a" rule (every device at once)

    # -- building the tree ------------------------------------------------------------------------
    def mount(self, mountpoint: str, version: int, controllers: tuple[str, ...], root_controllers: str = "") -> str:
        mnt = os.path.join(self.root, mountpoint.lstrip("/"))
        os.makedirs(mnt)
        self.hier[mnt] = (version, controllers)
        self._populate(mnt, root=True, root_controllers=root_controllers)
        return mnt

    def _hier_of(self, path: str) -> tuple[str, int, tuple[str, ...]]:
        for mnt, (v, c) in sorted(self.hier.items(), key=lambda x: -len(x[0])):
            if path == mnt or path.startswith(mnt + "/"):
                return mnt, v, c
        raise AssertionError(f"{path} is not on a fake cgroup mount")

    def _populate(self, d: str, root: bool = False, root_controllers: str = "") -> None:
        mnt, v, ctrls = self._hier_of(d)
        files = {"cgroup.procs": "", "tasks": ""} if v == 1 else dict(V2_CORE)
        if v == 1:
            for c in ctrls:
                files.update(V1_FILES.get(c, {}))
        else:
            enabled = root_controllers if root else self._read(os.path.join(os.path.dirname(d), "cgroup.subtree_control"))
            files["cgroup.controllers"] = enabled
            for c in enabled.split():
                files.update(V2_FILES.get(c, {}))
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)

    @staticmethod
    def _read(path: str) -> str:
        with open(path) as f:
            return f.read()

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def written(self, suffix: str) -> list[str]:
        """Values written to files whose path ends with `suffix`, in order."""
        return [v for p, v in self.writes if p.endswith(suffix)]

    # -- CgroupFs ---------------------------------------------------------------------------------
    def read(self, path: str) -> str:
        text = self._read(path)
        if path.endswith("freezer.state") and text == "FROZEN" and self.freezing_reads > 0:
            self.freezing_reads -= 1
            return "FREEZING\n"
        return text

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        self._populate(path)

    def rmdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if any(os.path.isdir(os.path.join(path, e)) for e in os.listdir(path)):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        if self.busy_rmdirs.get(path, 0) > 0:
            self.busy_rmdirs[path] -= 1
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        if self._read(os.path.join(path, "cgroup.procs")).split():
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        for e in os.listdir(path):
            os.unlink(os.path.join(path, e))
        os.rmdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def sleep(self, seconds: float) -> None:
        pass

    def kill(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))
        if sig == signal.SIGKILL:
            self._drop_pid(pid)

    def _drop_pid(self, pid: int, only: str | None = None) -> None:
        for mnt in [only] if only else self.hier:
            for d, _, files in os.walk(mnt):
                p = os.path.join(d, "cgroup.procs")
                pids = self._read(p).split()
                if str(pid) in pids:
                    open(p, "w").write("\n".join(x for x in pids if x != str(pid)))

    def set_device_filter(self, cgroup_dir: str, rules: list) -> None:
        self.writes.append((self.rel(cgroup_dir) + "/<bpf>", f"{len(rules)} rules"))
        self.programs[cgroup_dir] = bpf.device_program(rules)

    def write(self, path: str, value: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        d, name = os.path.dirname(path), os.path.basename(path)
        mnt, v, _ = self._hier_of(d)
        new = value
        if name == "cgroup.subtree_control":
            new = self._subtree(d, mnt, value)
        elif name == "cgroup.procs":
            if v == 2 and d != mnt and self._read(os.path.join(d, "cgroup.subtree_control")).split():
                raise OSError(errno.EBUSY, "Device or resource busy", path)   # no internal processes
            self._drop_pid(int(value), only=mnt)     # a process is in one cgroup per hierarchy
            new = (self._read(path).strip() + "\n" + value).strip()
        elif name == "cgroup.freeze":
            self._set(os.path.join(d, "cgroup.events"), f"populated 0\nfrozen {value}\n")
        elif name == "cgroup.kill":
            for sub, _, _ in os.walk(d):
                self._set(os.path.join(sub, "cgroup.procs"), "")
        elif name in ("devices.allow", "devices.deny"):
            self._device_rule(d, name == "devices.allow", value)
        elif name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            n = UNL if int(value) == -1 else int(value)
            other = "memory.memsw.limit_in_bytes" if name == "memory.limit_in_bytes" else "memory.limit_in_bytes"
            o = int(self._read(os.path.join(d, other))) if os.path.exists(os.path.join(d, other)) else None
            if o is not None and ((name == "memory.limit_in_bytes" and n > o) or (name != "memory.limit_in_bytes" and n < o)):
                raise OSError(errno.EINVAL, "Invalid argument", path)    # memory <= memory+swap always
            new = str(n)
        self.writes.append((self.rel(path), value))
        self._set(path, new)

    def _device_rule(self, d: str, allow: bool, value: str) -> None:
        """security/device_cgroup.c on devices.list: behaviour plus an exception list, exact-match removal."""
        lst = os.path.join(d, "devices.list")
        lines = self._read(lst).splitlines()
        blacklist = lines == ["a *:* rwm"]
        exc = [] if blacklist else [ln.split() for ln in lines]        # [type, "maj:min", access]
        if value.startswith("a"):
            self._set(lst, "a *:* rwm\n" if allow else "")
            self.device_resets += 1
            return
        typ, majmin, acc = value.split()
        if blacklist:
            raise AssertionError("the fake keeps no deny exceptions of a blacklist; the driver wrote one")
        hit = next((e for e in exc if e[0] == typ and e[1] == majmin), None)
        if allow:
            if hit is None:
                exc.append([typ, majmin, acc])
            else:
                hit[2] = "".join(c for c in "rwm" if c in hit[2] + acc)
        elif hit is not None:
            hit[2] = "".join(c for c in hit[2] if c not in acc)
            if not hit[2]:
                exc.remove(hit)
        self._set(lst, "".join(" ".join(e) + "\n" for e in exc))

    def _set(self, path: str, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    def _subtree(self, d: str, mnt: str, value: str) -> str:
        have = self._read(os.path.join(d, "cgroup.subtree_control")).split()
        avail = self._read(os.path.join(d, "cgroup.controllers")).split()
        for tok in value.split():
            c = tok[1:]
            if c not in avail:
                raise OSError(errno.ENOENT, "No such file or directory", d)
            if d != mnt and self._read(os.path.join(d, "cgroup.procs")).split():
                raise OSError(errno.EBUSY, "Device or resource busy", d)
            if tok[0] == "+" and c not in have:
                have.append(c)
                for e in os.listdir(d):     # children get the controller and its files
                    child = os.path.join(d, e)
                    if os.path.isdir(child):
                        ctl = os.path.join(child, "cgroup.controllers")
                        self._set(ctl, " ".join(self._read(ctl).split() + [c]))
                        for name, text in V2_FILES.get(c, {}).items():
                            self._set(os.path.join(child, name), text)
        return " ".join(have)


def write_proc(tmp: str, mountinfo: list[tuple[str, str, str, str]], self_cgroup: str) -> tuple[str, str]:
    """mountinfo lines from (root, mountpoint, fstype, super options) and the /proc/self/cgroup text."""
    lines = [f"{30 + i} 23 0:{40 + i} {root} {mnt} rw,relatime - {fstype} {fstype} {opts}"
             for i, (root, mnt, fstype, opts) in enumerate(mountinfo)]
    mi, sc = os.path.join(tmp, "mountinfo"), os.path.join(tmp, "self_cgroup")
    open(mi, "w").write("\n".join(lines) + "\n")
    open(sc, "w").write(self_cgroup)
    return mi, sc


def v2_host(tmp: str, caller: str = "/user.slice/jaula-test.scope",
            root_subtree: str = "cpuset cpu io memory hugetlb pids", controllers: str = "cpuset cpu io memory hugetlb pids",
            caller_subtree: str = "cpuset cpu io memory pids") -> tuple[FakeKernel, Layout]:
    """A pure v2 host; the cgroups above the caller delegate all they have, the caller `caller_subtree`."""
    k = FakeKernel(tmp)
    root = os.path.join(tmp, "fs")
    mnt = k.mount("/fs/sys/fs/cgroup", 2, (), controllers)
    k.write(os.path.join(mnt, "cgroup.subtree_control"), " ".join("+" + c for c in root_subtree.split()))
    d = mnt
    parts = caller.strip("/").split("/")
    for i, part in enumerate(parts):
        d = os.path.join(d, part)
        k.mkdir(d)
        ctl = k._read(os.path.join(d, "cgroup.controllers")).split()
        want = ctl if i < len(parts) - 1 else [c for c in caller_subtree.split() if c in ctl]
        if want:
            k.write(os.path.join(d, "cgroup.subtree_control"), " ".join("+" + c for c in want))
    k.writes.clear()
    mi, sc = write_proc(tmp, [("/", "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate")], f"0::{caller}\n")
    return k, probe(mi, sc, fs_root=root)


V1_MOUNTS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "name=systemd")


def v1_host(tmp: str, mounts: tuple[str, ...] = V1_MOUNTS, hybrid: str | None = "hugetlb",
            memory_caller: str = "/process_api/abc") -> tuple[FakeKernel, Layout]:
    """A v1 host like the one these tests grew on: memory's caller cgroup is deeper than the others',
    and (hybrid) a cgroup2 mount offering `hybrid` controllers. "cpu,cpuacct" co-mounts two."""
    k = FakeKernel(tmp)
    entries, self_cg = [], []
    for i, m in enumerate(mounts):
        mp = "/sys/fs/cgroup/" + (m[5:] if m.startswith("name=") else m)
        mnt = k.mount("/fs" + mp, 1, tuple(m.split(",")))
        entries.append(("/", mp, "cgroup", "rw," + m))
        cur = memory_caller if "memory" in m.split(",") else "/"
        self_cg.append(f"{len(mounts) - i}:{m}:{cur}")
        if cur != "/":
            d = mnt
            for part in cur.strip("/").split("/"):
                d = os.path.join(d, part)
                k.mkdir(d)
        if "cpuset" in m.split(","):
            k._set(os.path.join(mnt, "cpuset.cpus"), "0-3\n")
            k._set(os.path.join(mnt, "cpuset.mems"), "0\n")
    if hybrid is not None:
        k.mount("/fs/sys/fs/cgroup/unified", 2, (), hybrid)
        entries.append(("/", "/sys/fs/cgroup/unified", "cgroup2", "rw"))
        self_cg.append("0::/")
    mi, sc = write_proc(tmp, entries, "\n".join(self_cg) + "\n")
    return k, probe(mi, sc, fs_root=os.path.join(tmp, "fs"))
