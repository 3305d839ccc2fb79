"""Parsing and checking of OCI `linux.resources`: every problem is collected, each naming its field."""

from __future__ import annotations

from jaula.cgroups.resources import (
    BlockIO,
    Cpu,
    DeviceRule,
    HugepageLimit,
    InterfacePriority,
    Memory,
    Network,
    Pids,
    Resources,
    ThrottleDevice,
    WeightDevice,
)

MAX_INT64 = 2**63 - 1
MAX_UINT32 = 2**32 - 1


def _cpu_list(v: str) -> bool:
    """'0-3,5' and the like (what cpuset.cpus takes)."""
    for part in v.split(","):
        a, _, b = part.partition("-")
        if not a.isdigit() or not a.isascii() or (_ and not (b.isdigit() and b.isascii())):
            return False
    return bool(v)


def _page_size(v: str) -> bool:
    """'2MB', '1GB', '64KB' (hugetlb page sizes as the OCI spec writes them)."""
    n, unit = v[:-2], v[-2:]
    return unit in ("KB", "MB", "GB") and n.isdigit() and n.isascii() and n[0] != "0"
# Files that describe the tree itself: jaula owns them, a config may not write them through `unified`.
_UNIFIED_REFUSED = {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "cgroup.kill", "cgroup.type",
                    "cgroup.freeze", "cgroup.controllers", "cgroup.events"}


class Parser:
    """Collects every problem instead of stopping at the first (runc's validator does the same)."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def obj(self, d: object, where: str) -> dict | None:
        if d is None:
            return None
        if not isinstance(d, dict):
            self.bad(where, f"{d!r} is not an object")
            return None
        return d

    def array(self, d: object, where: str) -> list:
        if d is None:
            return []
        if not isinstance(d, list):
            self.bad(where, f"{d!r} is not an array")
            return []
        return d

    def int_(self, d: dict, key: str, where: str, ok: object, hint: str,
             lo: int = -(2**63), hi: int = MAX_INT64) -> int | None:
        v = d.get(key)
        w = f"{where}.{key}"
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(w, f"{v!r} is not an integer; {hint}")
        elif not (lo <= v <= hi) or not ok(v):
            self.bad(w, f"{v} is not allowed; {hint}")
        else:
            return v
        return None

    def bool_(self, d: dict, key: str, where: str) -> bool | None:
        v = d.get(key)
        if v is not None and not isinstance(v, bool):
            self.bad(f"{where}.{key}", f"{v!r} is not a boolean (true or false)")
            return None
        return v

    def str_(self, d: dict, key: str, where: str) -> str | None:
        v = d.get(key)
        if v is not None and not isinstance(v, str):
            self.bad(f"{where}.{key}", f"{v!r} is not a string")
            return None
        return v

    def resources(self, d: object, where: str) -> Resources:
        d = self.obj(d, where) or {}
        sub = lambda key: self.obj(d.get(key), f"{where}.{key}")  # noqa: E731
        r = Resources(memory=self.memory(sub("memory"), f"{where}.memory"))
        r.cpu = self.cpu(sub("cpu"), f"{where}.cpu")
        r.pids = self.pids(sub("pids"), f"{where}.pids")
        r.block_io = self.block_io(sub("blockIO"), f"{where}.blockIO")
        hp = self.array(d.get("hugepageLimits"), f"{where}.hugepageLimits")
        r.hugepage_limits = [h for i, x in enumerate(hp) if (h := self.hugepage(x, f"{where}.hugepageLimits[{i}]"))]
        r.network = self.network(sub("network"), f"{where}.network")
        if d.get("devices") is not None:
            devs = self.array(d["devices"], f"{where}.devices")
            r.devices = [v for i, x in enumerate(devs) if (v := self.device(x, f"{where}.devices[{i}]"))]
        r.unified = self.unified(sub("unified"), f"{where}.unified")
        return r

    def memory(self, d: dict | None, w: str) -> Memory | None:
        if d is None:
            return None
        bytes_ = "use a positive byte count or -1 for unlimited"
        pos = lambda v: v > 0 or v == -1  # noqa: E731
        m = Memory(
            limit=self.int_(d, "limit", w, pos, bytes_),
            reservation=self.int_(d, "reservation", w, lambda v: v >= -1, "use a byte count, 0 or -1 for none"),
            swap=self.int_(d, "swap", w, lambda v: v >= -1, "use memory+swap in bytes (at least memory.limit), 0 for unset or -1 for unlimited"),
            kernel=self.int_(d, "kernel", w, pos, bytes_),
            kernel_tcp=self.int_(d, "kernelTCP", w, pos, bytes_),
            swappiness=self.int_(d, "swappiness", w, lambda v: 0 <= v <= 100, "use 0 to 100"),
            disable_oom_killer=self.bool_(d, "disableOOMKiller", w),
            use_hierarchy=self.bool_(d, "useHierarchy", w),
            check_before_update=self.bool_(d, "checkBeforeUpdate", w),
        )
        if m.limit and m.limit > 0 and m.swap and m.swap > 0 and m.swap < m.limit:
            self.bad(f"{w}.swap", f"{m.swap} is below memory.limit {m.limit}; OCI swap counts memory+swap, so use at least the limit")
        return m

    def cpu(self, d: dict | None, w: str) -> Cpu | None:
        if d is None:
            return None
        c = Cpu(
            shares=self.int_(d, "shares", w, lambda v: 2 <= v <= 262144, "use 2 to 262144 (1024 is the default)"),
            quota=self.int_(d, "quota", w, lambda v: v == -1 or v >= 1000, "use microseconds per period, at least 1000, or -1 for unlimited"),
            burst=self.int_(d, "burst", w, lambda v: v >= 0, "use microseconds, 0 for none"),
            period=self.int_(d, "period", w, lambda v: 1000 <= v <= 1000000, "use 1000 to 1000000 microseconds"),
            realtime_runtime=self.int_(d, "realtimeRuntime", w, lambda v: v >= -1, "use microseconds or -1 for unlimited"),
            realtime_period=self.int_(d, "realtimePeriod", w, lambda v: v > 0, "use a positive count of microseconds"),
            cpus=self.cpulist(d, "cpus", w),
            mems=self.cpulist(d, "mems", w),
            idle=self.int_(d, "idle", w, lambda v: v in (0, 1), "use 0 or 1"),
        )
        if c.burst and c.quota is not None and c.quota > 0 and c.burst > c.quota:
            self.bad(f"{w}.burst", f"{c.burst} is above quota {c.quota}; the kernel allows a burst of at most the quota")
        return c

    def cpulist(self, d: dict, key: str, w: str) -> str | None:
        v = self.str_(d, key, w)
        if v is None or v == "":
            return None     # "" is how many tools say "not set"
        if not _cpu_list(v):
            self.bad(f"{w}.{key}", f"{v!r} is not a list like \"0-3,6\"")
            return None
        return v

    def pids(self, d: dict | None, w: str) -> Pids | None:
        if d is None:
            return None
        if "limit" not in d:
            self.bad(f"{w}.limit", "missing; use a number of tasks or -1 for unlimited")
            return None
        v = self.int_(d, "limit", w, lambda v: v >= -1, "use a number of tasks or -1 for unlimited")
        return None if v is None else Pids(v)

    def major_minor(self, d: dict, w: str, wildcard: bool) -> tuple[int | None, int | None]:
        out = []
        for key in ("major", "minor"):
            if wildcard and d.get(key) is None:
                out.append(None)
                continue
            if d.get(key) is None:
                self.bad(f"{w}.{key}", "missing")
                out.append(None)
                continue
            ok = (lambda v: v >= -1) if wildcard else (lambda v: v >= 0)
            v = self.int_(d, key, w, ok, "use a device number" + (" or -1 for any" if wildcard else ""), hi=2**31 - 1)
            out.append(None if v is None or v == -1 else v)
        return out[0], out[1]

    def block_io(self, d: dict | None, w: str) -> BlockIO | None:
        if d is None:
            return None
        wt = lambda v: 10 <= v <= 1000  # noqa: E731
        hint = "use 10 to 1000"
        b = BlockIO(weight=self.int_(d, "weight", w, wt, hint), leaf_weight=self.int_(d, "leafWeight", w, wt, hint))
        for i, x in enumerate(self.array(d.get("weightDevice"), f"{w}.weightDevice")):
            wi = f"{w}.weightDevice[{i}]"
            x = self.obj(x, wi)
            if x is not None:
                major, minor = self.major_minor(x, wi, False)
                b.weight_device.append(WeightDevice(major or 0, minor or 0, self.int_(x, "weight", wi, wt, hint),
                                                    self.int_(x, "leafWeight", wi, wt, hint)))
        for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
            target = _THROTTLE[key]
            for i, x in enumerate(self.array(d.get(key), f"{w}.{key}")):
                wi = f"{w}.{key}[{i}]"
                x = self.obj(x, wi)
                if x is not None:
                    major, minor = self.major_minor(x, wi, False)
                    rate = self.int_(x, "rate", wi, lambda v: v >= 0, "use a rate per second, 0 for no limit")
                    if "rate" not in x:
                        self.bad(f"{wi}.rate", "missing")
                    getattr(b, target).append(ThrottleDevice(major or 0, minor or 0, rate or 0))
        return b

    def hugepage(self, x: object, w: str) -> HugepageLimit | None:
        x = self.obj(x, w)
        if x is None:
            return None
        size = self.str_(x, "pageSize", w)
        if size is None or not _page_size(size):
            self.bad(f"{w}.pageSize", f"{size!r} is not a page size like \"2MB\", \"1GB\" or \"64KB\"")
        limit = self.int_(x, "limit", w, lambda v: v >= 0, "use a byte count")
        if "limit" not in x:
            self.bad(f"{w}.limit", "missing")
        return HugepageLimit(size, limit) if size and limit is not None and _page_size(size) else None

    def network(self, d: dict | None, w: str) -> Network | None:
        if d is None:
            return None
        n = Network(class_id=self.int_(d, "classID", w, lambda v: v >= 0, "use a 32-bit class id (0xMMMMmmmm)", hi=MAX_UINT32))
        for i, x in enumerate(self.array(d.get("priorities"), f"{w}.priorities")):
            wi = f"{w}.priorities[{i}]"
            x = self.obj(x, wi)
            if x is None:
                continue
            name = self.str_(x, "name", wi)
            prio = self.int_(x, "priority", wi, lambda v: v >= 0, "use a priority from 0", hi=MAX_UINT32)
            if not name or " " in name or "/" in name:
                self.bad(f"{wi}.name", f"{name!r} is not an interface name")
            elif prio is not None:
                n.priorities.append(InterfacePriority(name, prio))
        return n

    def device(self, x: object, w: str) -> DeviceRule | None:
        x = self.obj(x, w)
        if x is None:
            return None
        allow = self.bool_(x, "allow", w)
        if allow is None and "allow" not in x:
            self.bad(f"{w}.allow", "missing; say true or false")
        type_ = self.str_(x, "type", w) or "a"
        if type_ not in ("a", "b", "c"):
            self.bad(f"{w}.type", f"{type_!r} is not a device type; use \"a\" (all), \"b\" (block) or \"c\" (char)")
        access = self.str_(x, "access", w) or "rwm"
        if not access or set(access) - set("rwm"):
            self.bad(f"{w}.access", f"{access!r} is not allowed; use letters from \"rwm\"")
        major, minor = self.major_minor(x, w, True)
        if allow is None:
            return None
        return DeviceRule(allow, type_, major, minor, "".join(c for c in "rwm" if c in access))

    def unified(self, d: dict | None, w: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in (d or {}).items():
            if not isinstance(k, str) or "/" in k or k in ("", ".", "..") or "." not in k:
                self.bad(w, f"{k!r} is not a cgroup v2 interface file name (like \"memory.high\")")
            elif k in _UNIFIED_REFUSED:
                self.bad(f"{w}.{k}", "jaula manages this file itself; it cannot be set from the config")
            elif not isinstance(v, str):
                self.bad(f"{w}.{k}", f"{v!r} is not a string")
            else:
                out[k] = v
        return out


_THROTTLE = {
    "throttleReadBpsDevice": "throttle_read_bps_device",
    "throttleWriteBpsDevice": "throttle_write_bps_device",
    "throttleReadIOPSDevice": "throttle_read_iops_device",
    "throttleWriteIOPSDevice": "throttle_write_iops_device",
}
