"""The cgroup v2 driver: one directory on the unified hierarchy.

`Unified` holds the v2 logic on its own so that the v1 driver of a hybrid host can hand it the
controllers that live on the cgroup2 mount (hugetlb here, say). Device rules become an eBPF program.
"""

from __future__ import annotations

import errno
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
from jaula.cgroups.resources import (
    BlockIO,
    Cpu,
    Memory,
    Resources,
    blkio_weight_to_io_weight,
    max_text,
    parse_max,
    shares_to_weight,
    swap_v2,
)
from jaula.errors import JaulaError, KernelMissing

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; statistics are for `events`:
if TYPE_CHECKING:       # stats.py is imported when asked for (~0.6 ms less on jaula-runtime's create)
    from jaula.cgroups.stats import Stats

log = logging.getLogger("jaula.cgroups")
W = "linux.resources"
# Controllers a v2 cgroup can have; "cgroup" names the core files every cgroup has.
KNOWN = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
_THROTTLE_KEYS = {"throttle_read_bps_device": "rbps", "throttle_write_bps_device": "wbps",
                  "throttle_read_iops_device": "riops", "throttle_write_iops_device": "wiops"}


class Unified:
    """A cgroup on the unified (v2) hierarchy: delegation, the writes for each resource, freezer."""

    def __init__(self, t: Target, fs: CgroupFs) -> None:
        self.t = t
        self.dir = t.dir
        self.fs = fs

    def f(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str, d: str | None = None) -> str | None:
        try:
            return self.fs.read(os.path.join(d or self.dir, name))
        except OSError:
            return None

    def controllers(self, d: str | None = None) -> set[str]:
        """What `d` may use (cgroup.controllers); its subtree_control says what its children get."""
        return set((self.read("cgroup.controllers", d) or "").split())

    def offered(self) -> set[str]:
        """Controllers the cgroup has or could get by delegation from where it hangs."""
        return self.controllers(self.t.base) | self.controllers()

    def create(self) -> list[str]:
        made = mkdirs(self.fs, self.t)
        for d in made[:-1]:     # only directories this call made: the caller's own stay as they are
            for c in sorted(self.controllers(d)):
                self.fs.write(os.path.join(d, "cgroup.subtree_control"), f"+{c}")
        return made

    def ensure(self, wanted: set[str], p: Problems, field: str) -> None:
        """Delegate `wanted` controllers down from t.base to the cgroup: enabled only when needed."""
        missing = wanted - self.controllers() - {"cgroup", "devices"}
        if not missing or not self.fs.isdir(self.dir):
            return
        chain, d = [], os.path.dirname(self.dir)
        while d == self.t.base or d.startswith(self.t.base.rstrip("/") + "/"):
            chain.insert(0, d)
            d = os.path.dirname(d)
        for c in sorted(missing):
            for d in chain:
                if c in (self.read("cgroup.subtree_control", d) or "").split():
                    continue
                if c not in self.controllers(d):
                    p.kernel.append(f"{field}: the {c} controller is not available in {d}/cgroup.controllers "
                                    f"(the cgroup above it does not delegate {c}, or the kernel lacks it)")
                    break
                try:
                    self.fs.write(os.path.join(d, "cgroup.subtree_control"), f"+{c}")
                except OSError as e:
                    hint = ""
                    if e.errno == errno.EBUSY:
                        hint = (": the cgroup has processes of its own, and cgroup v2 lets only a cgroup without "
                                "processes hand controllers to its children; run jaula from a leaf cgroup of a "
                                "delegated subtree (systemd Delegate=yes) or use an absolute cgroupsPath")
                    p.kernel.append(f"{field}: cannot write '+{c}' to {d}/cgroup.subtree_control: "
                                    f"{os.strerror(e.errno or errno.EIO)}{hint}")
                    break

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, res: Resources, full: bool, p: Problems, groups: set[str]) -> list[Write]:
        """The writes for the resource groups in `groups` that this hierarchy handles."""
        cpu = res.cpu or Cpu()
        asked = {
            "memory": res.memory is not None, "pids": res.pids is not None, "hugetlb": bool(res.hugepage_limits),
            "io": res.block_io is not None, "cpuset": bool(cpu.cpus or cpu.mems),
            "cpu": any(v is not None for v in (cpu.shares, cpu.quota, cpu.period, cpu.burst, cpu.idle)),
        }
        want = {g for g in groups if asked.get(g)}
        want |= {k.split(".")[0] for k in res.unified} if "unified" in groups else set()
        self.ensure(want & set(KNOWN), p, W)
        out: list[Write] = []
        if "memory" in groups:
            out += self.memory(res.memory, full, p)
        if "cpu" in groups:
            out += self.cpu(cpu, full, p)
        if "cpuset" in groups:
            for k, v in (("cpus", cpu.cpus), ("mems", cpu.mems)):
                if v is not None:
                    out.append(Write(self.f(f"cpuset.{k}"), v, f"{W}.cpu.{k}", "cpuset"))
                elif full and (self.read(f"cpuset.{k}") or "").strip():
                    # empty: the parent's effective set (cgroup-v2.rst, cpuset.cpus); "" would be a 0-byte write
                    out.append(Write(self.f(f"cpuset.{k}"), "\n", f"{W}.cpu.{k}", "cpuset", True))
        if "pids" in groups:
            if res.pids is not None:
                out.append(Write(self.f("pids.max"), "max" if res.pids.limit <= 0 else str(res.pids.limit), f"{W}.pids.limit", "pids"))
            elif full:
                out.append(Write(self.f("pids.max"), "max", f"{W}.pids.limit", "pids", optional=True))
        if "io" in groups:
            out += self.io(res.block_io, full)
        if "hugetlb" in groups:
            for i, h in enumerate(res.hugepage_limits):
                out.append(Write(self.f(f"hugetlb.{h.page_size}.max"), str(h.limit), f"{W}.hugepageLimits[{i}]", "hugetlb"))
            if full:     # every other page size back to max
                given = {h.page_size for h in res.hugepage_limits}
                try:
                    names = sorted(self.fs.listdir(self.dir))
                except OSError:
                    names = []
                for name in names:
                    size = name[len("hugetlb."):-len(".max")]
                    if (name.startswith("hugetlb.") and name.endswith(".max") and "." not in size and size not in given
                            and (self.read(name) or "max").strip() != "max"):
                        out.append(Write(self.f(name), "max", f"{W}.hugepageLimits", "hugetlb", True))
        if "network" in groups and res.network is not None and (res.network.class_id is not None or res.network.priorities):
            p.kernel.append(f"{W}.network: net_cls and net_prio exist on cgroup v1 only; on v2 match the "
                            "cgroup path in nftables (meta cgroup / socket cgroupv2) instead")
        if "unified" in groups:
            for k, v in res.unified.items():
                out.append(Write(self.f(k), v, f"{W}.unified.{k}", k.split(".")[0]))
        return out

    def memory(self, m: Memory | None, full: bool, p: Problems) -> list[Write]:
        m = m or Memory()
        out: list[Write] = []
        w = lambda name, val, fld, opt=False: Write(self.f(name), val, f"{W}.memory.{fld}", "memory", opt)  # noqa: E731
        if m.check_before_update and m.limit and m.limit > 0:
            cur = self.read("memory.current")
            if cur is not None and m.limit < int(cur):
                p.config.append(f"{W}.memory.limit: {m.limit} is below the current usage {int(cur)} "
                                f"({self.f('memory.current')}) and checkBeforeUpdate is set")
        if m.limit is not None or full:
            out.append(w("memory.max", max_text(m.limit if m.limit is not None else -1), "limit", m.limit is None))
        limit = m.limit
        if limit is None and m.swap not in (None, 0, -1):
            cur = self.read("memory.max")
            limit = parse_max(cur) if cur else None
        try:
            sv = swap_v2(limit, m.swap)
        except ValueError as e:
            p.config.append(f"{W}.memory.swap: {e}")
            sv = None
        if sv is not None:
            # without swap (no memory.swap.max) "unlimited" and "none" are already true: only a real limit must fail
            out.append(w("memory.swap.max", max_text(sv), "swap", sv <= 0))
        elif full:
            out.append(w("memory.swap.max", "max", "swap", True))
        if m.reservation is not None or full:
            out.append(w("memory.low", max_text(m.reservation if m.reservation is not None else 0), "reservation",
                         m.reservation is None))
        for fld, val in (("kernel", m.kernel), ("kernelTCP", m.kernel_tcp), ("swappiness", m.swappiness),
                         ("disableOOMKiller", m.disable_oom_killer)):
            if val is not None:
                log.warning("%s.memory.%s=%s ignored: cgroup v2 has no such knob (kernel memory is counted in "
                            "memory.max; swappiness and the OOM killer are global)", W, fld, val)
        if m.use_hierarchy is False:
            p.config.append(f"{W}.memory.useHierarchy: false is not possible; cgroup v2 is always hierarchical")
        return out

    def cpu(self, c: Cpu, full: bool, p: Problems) -> list[Write]:
        out: list[Write] = []
        w = lambda name, val, fld, opt=False, sw=False: Write(self.f(name), val, f"{W}.cpu.{fld}", "cpu", opt, sw)  # noqa: E731
        if c.shares is not None:
            out.append(w("cpu.weight", str(shares_to_weight(c.shares)), "shares"))
        elif full:
            out.append(w("cpu.weight", "100", "shares", True))
        if c.quota is not None or c.period is not None:
            cur = (self.read("cpu.max") or "max 100000").split()
            quota = c.quota if c.quota is not None else parse_max(cur[0])
            period = c.period if c.period is not None else int(cur[1])
            out.append(w("cpu.max", f"{max_text(quota)} {period}", "quota", sw=c.burst is not None))
        elif full:
            out.append(w("cpu.max", "max", "quota", True))
        if c.burst is not None or full:
            out.append(w("cpu.max.burst", str(c.burst or 0), "burst", c.burst is None))
        if c.idle is not None:
            out.append(w("cpu.idle", str(c.idle), "idle"))
        if c.realtime_runtime is not None or c.realtime_period is not None:
            p.kernel.append(f"{W}.cpu.realtimeRuntime/realtimePeriod: cgroup v2 has no realtime CPU bandwidth "
                            "(cpu.rt_* exists on cgroup v1 only)")
        return out

    def io(self, b: BlockIO | None, full: bool) -> list[Write]:
        out: list[Write] = []
        bfq = self.fs.exists(self.f("io.bfq.weight"))
        w = lambda name, val, fld, opt=False: Write(self.f(name), val, f"{W}.blockIO.{fld}", "io", opt)  # noqa: E731
        if b is None and not full:
            return []
        b = b or BlockIO()
        if b.weight is None and full:
            out.append(w("io.bfq.weight", "default 100", "weight", True) if bfq else w("io.weight", "default 100", "weight", True))
        # BFQ takes the blkio scale as it is; io.weight needs it converted (runc, crun do the same)
        if b.weight is not None:
            out.append(w("io.bfq.weight", str(b.weight), "weight") if bfq
                       else w("io.weight", f"default {blkio_weight_to_io_weight(b.weight)}", "weight"))
        for i, d in enumerate(b.weight_device):
            if d.weight is not None:
                dev = f"{d.major}:{d.minor}"
                out.append(w("io.bfq.weight", f"{dev} {d.weight}", f"weightDevice[{i}]") if bfq
                           else w("io.weight", f"{dev} {blkio_weight_to_io_weight(d.weight)}", f"weightDevice[{i}]"))
        if b.leaf_weight is not None or any(d.leaf_weight is not None for d in b.weight_device):
            log.warning("%s.blockIO.leafWeight ignored: cgroup v2 has no leaf weights", W)
        given: set[tuple[str, str]] = set()
        for attr, key in _THROTTLE_KEYS.items():
            for i, t in enumerate(getattr(b, attr)):
                name = "throttle" + attr[8:].title().replace("_", "").replace("Iops", "IOPS")
                out.append(w("io.max", f"{t.major}:{t.minor} {key}={t.rate or 'max'}", f"{name}[{i}]"))
                given.add((f"{t.major}:{t.minor}", key))
        if full:     # a device's limits the config no longer names go back to max
            for line in (self.read("io.max") or "").splitlines():
                dev, *kvs = line.split() or [""]
                stale = [k for k, _, v in (kv.partition("=") for kv in kvs)
                         if k in _THROTTLE_KEYS.values() and v != "max" and (dev, k) not in given]
                if stale:
                    out.append(w("io.max", f"{dev} " + " ".join(f"{k}=max" for k in stale), "throttle", True))
        return out

    def check(self, writes: list[Write], p: Problems) -> list[Write]:
        """Drop defaults the kernel cannot take; name every asked-for file that does not exist."""
        kept = []
        for wr in writes:
            if self.fs.exists(wr.path):
                kept.append(wr)
            elif not wr.optional:
                if not self.fs.isdir(self.dir):
                    why = "the cgroup does not exist (create() it first)"
                elif wr.field.startswith(f"{W}.unified."):
                    why = "no such interface file on this kernel, or its controller is not enabled"
                elif wr.controller in self.controllers():
                    why = f"this kernel's {wr.controller} controller has no such file"
                else:
                    why = f"the {wr.controller} controller is not enabled for this cgroup"
                p.kernel.append(f"{wr.field}: {wr.path} does not exist: {why}")
        return kept

    # -- freezer and devices ----------------------------------------------------------------------
    def freeze(self, timeout: float) -> None:
        if not self.fs.exists(self.f("cgroup.freeze")):
            raise KernelMissing(f"freeze: {self.f('cgroup.freeze')} does not exist (the v2 freezer needs Linux 5.2)")
        self.fs.write(self.f("cgroup.freeze"), "1")
        try:
            wait_for(self.fs, self.f("cgroup.events"), "frozen 1", timeout, "freeze")
        except JaulaError:
            self.fs.write(self.f("cgroup.freeze"), "0")
            raise

    def thaw(self, timeout: float) -> None:
        if self.fs.exists(self.f("cgroup.freeze")):
            self.fs.write(self.f("cgroup.freeze"), "0")
            wait_for(self.fs, self.f("cgroup.events"), "frozen 0", timeout, "thaw")

    def frozen(self) -> bool:
        return "frozen 1" in (self.read("cgroup.events") or "").splitlines()


class V2Cgroup(Cgroup):
    """A cgroup on a pure cgroup v2 host."""

    GROUPS = {"memory", "cpu", "cpuset", "pids", "io", "hugetlb", "network", "unified"}

    def __init__(self, layout: Layout, targets: list[Target], fs: CgroupFs | None = None) -> None:
        super().__init__(layout, targets, fs)
        self.u = Unified(next(t for t in targets if t.hierarchy.version == 2), self.fs)
        self.paths = {"unified": self.u.dir}

    def create(self) -> None:
        self.u.create()

    def plan(self, res: Resources, full: bool) -> list[Write]:
        p = Problems()
        writes = self.u.check(self.u.plan(res, full, p, self.GROUPS), p)
        p.raise_if_any()
        return writes

    def _devices(self, res: Resources) -> None:
        if res.devices is not None:
            self.fs.set_device_filter(self.u.dir, res.devices)

    def add_pid(self, pid: int) -> None:
        self._write_one(Write(self.u.f("cgroup.procs"), str(pid), "process", "cgroup"))

    def freeze(self, timeout: float = 5.0) -> None:
        self.u.freeze(timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self.u.thaw(timeout)

    def frozen(self) -> bool:
        return self.u.frozen()

    def kill(self, sig: int = 9) -> None:
        """cgroup.kill (Linux 5.14) kills the whole subtree at once, forks included."""
        if sig == 9 and self.fs.exists(self.u.f("cgroup.kill")):
            self._write_one(Write(self.u.f("cgroup.kill"), "1", "kill", "cgroup"))
            return
        super().kill(sig)

    def _procs_dir(self) -> str:
        return self.u.dir

    def stats(self) -> Stats:
        from jaula.cgroups.stats import collect

        return collect({c: (self.u.dir, 2) for c in ("memory", "pids", "cpu", "hugetlb", "io")}, self.fs,
                       os.path.basename(self.u.dir))
