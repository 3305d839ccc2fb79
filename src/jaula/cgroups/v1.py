"""The cgroup v1 driver: one directory per mounted hierarchy, and the cgroup2 mount of a hybrid host.

Each resource goes to the hierarchy its controller lives on; a resource asked for whose controller is
mounted nowhere is an error naming it, never silently dropped.
"""

from __future__ import annotations

import os

from jaula import lazylog as logging
from jaula.cgroups.base import (
    Cgroup,
    CgroupFs,
    Problems,
    Target,
    Write,
    mkdirs,
    wait_for,
)
from jaula.cgroups.layout import Layout
from jaula.cgroups.resources import BlockIO, Cpu, Memory, Resources
from jaula.cgroups.v2 import Unified
from jaula.errors import JaulaError, KernelMissing

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; statistics are for `events`:
if TYPE_CHECKING:       # stats.py is imported when asked for (~0.6 ms less on jaula-runtime's create)
    from jaula.cgroups.stats import Stats

log = logging.getLogger("jaula.cgroups")
W = "linux.resources"
_UNLIMITED = 2**62
# Why a v1 file may be missing although its controller is mounted.
_HINTS = {
    "blkio.weight": "proportional weight needs the BFQ I/O scheduler with CONFIG_BFQ_GROUP_IOSCHED",
    "blkio.weight_device": "proportional weight needs the BFQ I/O scheduler with CONFIG_BFQ_GROUP_IOSCHED",
    "blkio.leaf_weight": "leaf weights went away with CFQ in Linux 5.0",
    "blkio.leaf_weight_device": "leaf weights went away with CFQ in Linux 5.0",
    "memory.memsw.limit_in_bytes": "swap accounting is off (boot with swapaccount=1)",
    "memory.kmem.tcp.limit_in_bytes": "kernel memory accounting is off (cgroup.memory=nokmem)",
    "cpu.cfs_burst_us": "CPU burst needs Linux 5.14",
    "cpu.idle": "cpu.idle needs Linux 5.15",
    "cpu.rt_runtime_us": "realtime group scheduling needs CONFIG_RT_GROUP_SCHED",
    "cpu.rt_period_us": "realtime group scheduling needs CONFIG_RT_GROUP_SCHED",
}
# Which v1 controller each resource group needs, and its name on v2 for a hybrid host.
_GROUPS = {"memory": ("memory", "memory"), "cpu": ("cpu", "cpu"), "cpuset": ("cpuset", "cpuset"),
           "pids": ("pids", "pids"), "io": ("blkio", "io"), "hugetlb": ("hugetlb", "hugetlb"),
           "net_cls": ("net_cls", None), "net_prio": ("net_prio", None), "devices": ("devices", None)}


def _asked(res: Resources) -> dict[str, str | None]:
    """The groups `res` sets, each with the config field to name when its controller is missing."""
    c = res.cpu or Cpu()
    n = res.network
    return {
        "memory": f"{W}.memory" if res.memory is not None else None,
        "cpu": f"{W}.cpu" if any(v is not None for v in (c.shares, c.quota, c.period, c.burst, c.idle,
                                                           c.realtime_runtime, c.realtime_period)) else None,
        "cpuset": f"{W}.cpu.cpus/mems" if c.cpus or c.mems else None,
        "pids": f"{W}.pids" if res.pids is not None else None,
        "io": f"{W}.blockIO" if res.block_io is not None else None,
        "hugetlb": f"{W}.hugepageLimits" if res.hugepage_limits else None,
        "net_cls": f"{W}.network.classID" if n is not None and n.class_id is not None else None,
        "net_prio": f"{W}.network.priorities" if n is not None and n.priorities else None,
        "devices": f"{W}.devices" if res.devices is not None else None,
    }


class V1Cgroup(Cgroup):
    """A cgroup on a v1 or hybrid host."""

    def __init__(self, layout: Layout, targets: list[Target], fs: CgroupFs | None = None) -> None:
        super().__init__(layout, targets, fs)
        self.v1 = [t for t in targets if t.hierarchy.version == 1]
        u = next((t for t in targets if t.hierarchy.version == 2), None)
        self.u = Unified(u, self.fs) if u is not None else None
        self.paths = {c: t.dir for t in self.v1 for c in t.hierarchy.controllers}
        if self.u is not None:
            self.paths["unified"] = self.u.dir
        self._to_v2_devices = False     # set by plan(): device rules go to eBPF on the cgroup2 mount
        self._devices_target: tuple[str, object] | None = None   # set by plan(): checked after the writes

    def dir(self, controller: str) -> str | None:
        return self.paths.get(controller) if controller != "unified" else None

    def create(self) -> None:
        made_all: list[str] = []
        try:
            for t in self.v1:
                made = mkdirs(self.fs, t)
                made_all += made
                if "cpuset" in t.hierarchy.controllers:
                    for d in made:     # a new cpuset starts with no cpus and no mems: it could hold no task
                        for f in ("cpuset.cpus", "cpuset.mems"):
                            if not self.fs.read(os.path.join(d, f)).strip():
                                self._write_one(Write(os.path.join(d, f), self.fs.read(os.path.join(os.path.dirname(d), f)).strip(), f, "cpuset"))
            if self.u is not None:
                made_all += self.u.create()
        except BaseException:
            for d in reversed(made_all):   # undo what this call made (Incus' revert habit)
                try:
                    self.fs.rmdir(d)
                except OSError:
                    pass
            raise

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, res: Resources, full: bool) -> list[Write]:
        p = Problems()
        self._devices_target = None
        asked = _asked(res)
        out: list[Write] = []
        to_v2: set[str] = set()
        for group, (c1, c2) in _GROUPS.items():
            d = self.dir(c1)
            if d is not None:
                out += self._plan(group, d, res, full, p)
            elif self.u is not None and c2 is not None and c2 in self.u.offered():
                to_v2.add(group)
            elif group == "devices" and self.u is not None:
                to_v2.add(group)     # device rules become eBPF on the cgroup2 mount
            elif asked[group]:
                where = " nor offered by the cgroup2 mount" if self.u is not None else ""
                p.kernel.append(f"{asked[group]}: the {c1} controller is not mounted on this host "
                                f"(no cgroup v1 hierarchy has it{where})")
        if res.unified:
            if self.u is None:
                p.config.append(f"{W}.unified: needs cgroup v2; this host mounts cgroup v1 only")
            for k in res.unified:
                ctl = k.split(".")[0]
                if self.u is not None and ctl in self.paths:
                    p.config.append(f"{W}.unified.{k}: the {ctl} controller is bound to cgroup v1 on this host; "
                                    "use the matching linux.resources field")
            if self.u is not None and not p.config:
                to_v2.add("unified")
        self._to_v2_devices = "devices" in to_v2
        if self.u is not None and to_v2 - {"devices"}:
            out += self.u.check(self.u.plan(res, full, p, to_v2 - {"devices"}), p)
        out = self._check(out, p)
        p.raise_if_any()
        return out

    def _plan(self, group: str, d: str, res: Resources, full: bool, p: Problems) -> list[Write]:
        f = lambda name: os.path.join(d, name)  # noqa: E731
        c = res.cpu or Cpu()
        if group == "memory":
            return self._memory(d, res.memory, full, p)
        if group == "cpu":
            w = lambda name, val, fld, opt=False, sw=False: Write(f(name), val, f"{W}.cpu.{fld}", "cpu", opt, sw)  # noqa: E731
            out = []
            if c.shares is not None or full:
                out.append(w("cpu.shares", str(c.shares or 1024), "shares", c.shares is None))
            if c.period is not None:   # the kernel checks quota/period against the parent: runc retries swapped
                out.append(w("cpu.cfs_period_us", str(c.period), "period", sw=c.quota is not None))
            if c.quota is not None or full:
                out.append(w("cpu.cfs_quota_us", str(c.quota if c.quota is not None else -1), "quota",
                             c.quota is None, sw=c.burst is not None))
            if c.burst is not None or full:
                out.append(w("cpu.cfs_burst_us", str(c.burst or 0), "burst", c.burst is None))
            if c.realtime_period is not None:
                out.append(w("cpu.rt_period_us", str(c.realtime_period), "realtimePeriod", sw=c.realtime_runtime is not None))
            if c.realtime_runtime is not None:
                out.append(w("cpu.rt_runtime_us", str(c.realtime_runtime), "realtimeRuntime"))
            if c.idle is not None:
                out.append(w("cpu.idle", str(c.idle), "idle"))
            return out
        if group == "cpuset":
            out = []
            for k, v in (("cpus", c.cpus), ("mems", c.mems)):
                if v:
                    out.append(Write(f(f"cpuset.{k}"), v, f"{W}.cpu.{k}", "cpuset"))
                elif full:   # back to the parent's set, as create() made it
                    parent = self._text(os.path.join(os.path.dirname(d), f"cpuset.{k}"))
                    if parent and parent != self._text(f(f"cpuset.{k}")):
                        out.append(Write(f(f"cpuset.{k}"), parent, f"{W}.cpu.{k}", "cpuset", True))
            return out
        if group == "pids":
            if res.pids is None:
                return [Write(f("pids.max"), "max", f"{W}.pids.limit", "pids", True)] if full else []
            return [Write(f("pids.max"), "max" if res.pids.limit <= 0 else str(res.pids.limit), f"{W}.pids.limit", "pids")]
        if group == "io":
            return self._blkio(d, res.block_io, full)
        if group == "hugetlb":
            out = [Write(f(f"hugetlb.{h.page_size}.limit_in_bytes"), str(h.limit), f"{W}.hugepageLimits[{i}]", "hugetlb")
                   for i, h in enumerate(res.hugepage_limits)]
            if full:     # every other page size back to unlimited
                given = {h.page_size for h in res.hugepage_limits}
                for name in sorted(self._listdir(d)):
                    size = name[len("hugetlb."):-len(".limit_in_bytes")]
                    if (name.startswith("hugetlb.") and name.endswith(".limit_in_bytes") and "." not in size
                            and size not in given and self._read_int(f(name)) not in (None, -1)):
                        out.append(Write(f(name), "-1", f"{W}.hugepageLimits", "hugetlb", True))
            return out
        if group == "net_cls":
            n = res.network
            return [Write(f("net_cls.classid"), str(n.class_id), f"{W}.network.classID", "net_cls")] if n and n.class_id is not None else []
        if group == "net_prio":
            n = res.network
            return [Write(f("net_prio.ifpriomap"), f"{x.name} {x.priority}", f"{W}.network.priorities[{i}]", "net_prio")
                    for i, x in enumerate(n.priorities if n else [])]
        if group == "devices" and res.devices is not None:
            return self._plan_devices(d, res, p)
        return []

    def _plan_devices(self, d: str, res: Resources, p: Problems) -> list[Write]:
        """Only the difference between devices.list and the rules (see devices.py): never deny-all-then-allow."""
        from jaula.cgroups.devices import Policy, transition

        try:
            target = Policy.from_rules(res.devices or [])
        except ValueError as e:
            p.config.append(f"{W}.devices: {e}")
            return []
        try:
            current = Policy.from_list(self.fs.read(os.path.join(d, "devices.list")))
        except (OSError, ValueError):
            current = Policy(default_allow=True)   # unknown: start over with the "a" rule
        self._devices_target = (d, target)
        return [Write(os.path.join(d, "devices.allow" if allow else "devices.deny"), line, f"{W}.devices", "devices")
                for allow, line in transition(current, target)]

    def _text(self, path: str) -> str | None:
        try:
            return self.fs.read(path).strip()
        except OSError:
            return None

    def _listdir(self, d: str) -> list[str]:
        try:
            return self.fs.listdir(d)
        except OSError:
            return []

    def _read_int(self, path: str) -> int | None:
        try:
            n = int(self.fs.read(path).split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return -1 if n >= _UNLIMITED else n

    def _memory(self, d: str, m: Memory | None, full: bool, p: Problems) -> list[Write]:
        m = m or Memory()
        f = lambda name: os.path.join(d, name)  # noqa: E731
        w = lambda name, val, fld, opt=False: Write(f(name), str(val), f"{W}.memory.{fld}", "memory", opt)  # noqa: E731
        limit = m.limit if m.limit is not None else (-1 if full else None)
        swap = m.swap if m.swap else None
        if swap is None and (limit == -1 or full):
            swap = -1      # unlimited memory without a swap value: lift memory+swap too (runc does)
        has_memsw = self.fs.exists(f("memory.memsw.limit_in_bytes"))
        if swap is not None and not has_memsw and (swap == -1 or swap == limit or m.swap is None):
            swap = None    # nothing to lift, or "no swap" on a host that does not account swap
        if m.check_before_update and m.limit and m.limit > 0:
            cur = self._read_int(f("memory.usage_in_bytes"))
            if cur is not None and m.limit < cur:
                p.config.append(f"{W}.memory.limit: {m.limit} is below the current usage {cur} "
                                f"({f('memory.usage_in_bytes')}) and checkBeforeUpdate is set")
        lim_w = w("memory.limit_in_bytes", limit, "limit", m.limit is None) if limit is not None else None
        sw_w = w("memory.memsw.limit_in_bytes", swap, "swap", m.swap is None) if swap is not None else None
        out: list[Write] = []
        if lim_w and sw_w:
            # memory <= memory+swap at every step: raise memsw first, or lower the memory limit first
            cur = self._read_int(f("memory.memsw.limit_in_bytes"))
            raising = swap == -1 or cur is None or (cur != -1 and swap >= cur)
            out += [sw_w, lim_w] if raising else [lim_w, sw_w]
        else:
            out += [x for x in (lim_w, sw_w) if x]
        if m.reservation is not None or full:
            out.append(w("memory.soft_limit_in_bytes", m.reservation if m.reservation is not None else -1,
                         "reservation", m.reservation is None))
        if m.kernel is not None:
            if self.fs.exists(f("memory.kmem.limit_in_bytes")):
                out.append(w("memory.kmem.limit_in_bytes", m.kernel, "kernel"))
            else:
                log.warning("%s.memory.kernel ignored: this kernel has no kernel memory limit (gone in Linux 6.1)", W)
        if m.kernel_tcp is not None:
            out.append(w("memory.kmem.tcp.limit_in_bytes", m.kernel_tcp, "kernelTCP"))
        if m.swappiness is not None:
            out.append(w("memory.swappiness", m.swappiness, "swappiness"))
        if m.disable_oom_killer is not None:
            out.append(w("memory.oom_control", int(m.disable_oom_killer), "disableOOMKiller"))
        if m.use_hierarchy is not None:
            out.append(w("memory.use_hierarchy", int(m.use_hierarchy), "useHierarchy"))
        return out

    def _blkio(self, d: str, b: BlockIO | None, full: bool) -> list[Write]:
        f = lambda name: os.path.join(d, name)  # noqa: E731
        if b is None and not full:
            return []
        b = b or BlockIO()
        w = lambda name, val, fld: Write(f(name), val, f"{W}.blockIO.{fld}", "blkio")  # noqa: E731
        # with CFQ gone (Linux 5.0) the weight files are BFQ's, under a bfq. prefix
        bfq = not self.fs.exists(f("blkio.weight")) and self.fs.exists(f("blkio.bfq.weight"))
        pre = "blkio.bfq." if bfq else "blkio."
        out = []
        if b.weight is not None:
            out.append(w(pre + "weight", str(b.weight), "weight"))
        if b.leaf_weight is not None:
            out.append(w("blkio.leaf_weight", str(b.leaf_weight), "leafWeight"))
        for i, x in enumerate(b.weight_device):
            if x.weight is not None:
                out.append(w(pre + "weight_device", f"{x.major}:{x.minor} {x.weight}", f"weightDevice[{i}]"))
            if x.leaf_weight is not None:
                out.append(w("blkio.leaf_weight_device", f"{x.major}:{x.minor} {x.leaf_weight}", f"weightDevice[{i}].leafWeight"))
        for attr, fname in (("throttle_read_bps_device", "read_bps_device"), ("throttle_write_bps_device", "write_bps_device"),
                            ("throttle_read_iops_device", "read_iops_device"), ("throttle_write_iops_device", "write_iops_device")):
            name = "throttle" + attr[8:].title().replace("_", "").replace("Iops", "IOPS")
            for i, t in enumerate(getattr(b, attr)):
                out.append(w(f"blkio.throttle.{fname}", f"{t.major}:{t.minor} {t.rate}", f"{name}[{i}]"))
            if full:     # a throttled device the config no longer names: rate 0 removes its rule
                given = {f"{t.major}:{t.minor}" for t in getattr(b, attr)}
                for line in (self._text(f(f"blkio.throttle.{fname}")) or "").splitlines():
                    dev = line.split()[0] if line.split() else ""
                    if dev and dev not in given:
                        out.append(Write(f(f"blkio.throttle.{fname}"), f"{dev} 0", f"{W}.blockIO.{name}", "blkio", True))
        return out

    def _check(self, writes: list[Write], p: Problems) -> list[Write]:
        kept = []
        seen: dict[str, bool] = {}  # a file written more than once (devices.allow) is looked up once
        for wr in writes:
            there = seen.get(wr.path)
            if there is None:
                there = seen[wr.path] = self.fs.exists(wr.path)
            if there or (self.u is not None and wr.path.startswith(self.u.dir + "/")):
                kept.append(wr)
            elif not wr.optional:
                d = os.path.dirname(wr.path)
                why = (_HINTS.get(os.path.basename(wr.path), f"this kernel's {wr.controller} controller has no such file")
                       if self.fs.isdir(d) else "the cgroup does not exist (create() it first)")
                p.kernel.append(f"{wr.field}: {wr.path} does not exist: {why}")
        return kept

    def _devices(self, res: Resources) -> None:
        if res.devices is not None and self._to_v2_devices and self.u is not None:
            self.fs.set_device_filter(self.u.dir, res.devices)
        if self._devices_target is not None:
            # runc's final check: what the kernel shows must be what was asked (a parent's policy, or a
            # rule it silently ignored, would otherwise go unnoticed)
            from jaula.cgroups.devices import Policy, matches

            d, target = self._devices_target
            self._devices_target = None
            path = os.path.join(d, "devices.list")
            shown = self.fs.read(path)
            if not matches(Policy.from_list(shown), target):
                raise JaulaError(f"devices {path!r} shows {shown.strip()!r} after the update, not the rules asked for "
                                 f"({target.list_text().strip()!r})")

    # -- processes --------------------------------------------------------------------------------
    def add_pid(self, pid: int) -> None:
        for d in self._dirs():
            self._write_one(Write(os.path.join(d, "cgroup.procs"), str(pid), "process", "cgroup"))

    def _procs_dir(self) -> str:
        for c in ("pids", "freezer", "memory", "cpu", "devices"):
            if c in self.paths:
                return self.paths[c]
        return self._dirs()[0]

    def _freezer(self) -> str | None:
        return self.paths.get("freezer")

    def freeze(self, timeout: float = 5.0) -> None:
        d = self._freezer()
        if d is None:
            if self.u is not None and self.fs.exists(self.u.f("cgroup.freeze")):
                return self.u.freeze(timeout)
            raise KernelMissing("freeze: the freezer controller is not mounted on this host")
        state = os.path.join(d, "freezer.state")
        try:
            self._write_one(Write(state, "FROZEN", "freeze", "freezer"))
            # a task that forks while freezing can leave the cgroup FREEZING: runc writes FROZEN again
            for _ in range(int(timeout / 0.1) + 1):
                try:
                    wait_for(self.fs, state, "FROZEN", 0.1, "freeze")
                    return
                except JaulaError:
                    self._write_one(Write(state, "FROZEN", "freeze", "freezer"))
            raise JaulaError(f"freeze {state!r}: still not FROZEN after {timeout}s; thawed it again")
        except BaseException:
            self._write_one(Write(state, "THAWED", "thaw", "freezer"))
            raise

    def thaw(self, timeout: float = 5.0) -> None:
        d = self._freezer()
        if d is None:
            if self.u is not None:
                return self.u.thaw(timeout)
            raise KernelMissing("thaw: the freezer controller is not mounted on this host")
        state = os.path.join(d, "freezer.state")
        self._write_one(Write(state, "THAWED", "thaw", "freezer"))
        wait_for(self.fs, state, "THAWED", timeout, "thaw")

    def frozen(self) -> bool:
        d = self._freezer()
        if d is None:
            return self.u.frozen() if self.u is not None else False
        try:
            return self.fs.read(os.path.join(d, "freezer.state")).strip() == "FROZEN"
        except FileNotFoundError:
            return False

    def kill(self, sig: int = 9) -> None:
        """Freeze, signal, thaw: frozen tasks cannot fork, so one pass reaches them all (runc does this)."""
        if sig != 9 or self._freezer() is None or not self.exists():
            return super().kill(sig)
        try:
            self.freeze()
        except (JaulaError, OSError) as e:
            log.debug("kill: freezing %s failed (%s); signalling in a loop", self._freezer(), e)
            return super().kill(sig)
        try:
            super().kill(sig)
        finally:
            self.thaw()

    def stats(self) -> Stats:
        src = {c: (self.paths[c], 1) for c in ("memory", "pids", "cpu", "cpuacct", "hugetlb", "blkio") if c in self.paths}
        if "hugetlb" not in src and self.u is not None:
            src["hugetlb"] = (self.u.dir, 2)
        from jaula.cgroups.stats import collect

        return collect(src, self.fs, os.path.basename(self._dirs()[0]))
