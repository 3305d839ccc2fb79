"""Accounting as OpenVZ's /proc/user_beancounters showed it: held, maxheld, limit, failcnt per resource.

One reader per controller and cgroup version, so a hybrid host can mix them (hugetlb on v2, the rest on v1).
"""

from __future__ import annotations

import os

from jaula.record import Record

# v1 says "unlimited" with PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712 on x86_64) or -1.
_UNLIMITED_FROM = 2**62


class _Reader:
    def read(self, path: str) -> str: ...
    def listdir(self, path: str) -> list[str]: ...


class Counter(Record):
    """One beancounter row.

    held is the current use and maxheld its peak; limit None means unlimited; failcnt counts how often
    the limit was hit. For "cpu", held is the usage in ns, limit the quota in millicpus (1000 = one
    cpu) and failcnt the number of throttled periods. For "io", held is the bytes moved so far.
    """

    resource: str
    held: int | None = None
    maxheld: int | None = None
    limit: int | None = None
    failcnt: int | None = None
    unit: str = "bytes"
    details: dict[str, int] = {}


class Stats(Record):
    rows: list[Counter] = []
    cpu_usage_ns: int | None = None

    def row(self, resource: str) -> Counter | None:
        return next((r for r in self.rows if r.resource == resource), None)

    def as_dict(self) -> dict:
        return {"rows": [r.as_dict() for r in self.rows], "cpu_usage_ns": self.cpu_usage_ns}

    def beancounters(self) -> str:
        """The table as /proc/user_beancounters printed it ('-' for unknown, 'max' for unlimited)."""
        show = lambda v, unl="-": unl if v is None else str(v)  # noqa: E731
        lines = [f"{'resource':<16}{'held':>22}{'maxheld':>22}{'limit':>22}{'failcnt':>12}"]
        for r in self.rows:
            lines.append(f"{r.resource:<16}{show(r.held):>22}{show(r.maxheld):>22}{show(r.limit, 'max'):>22}"
                         f"{show(r.failcnt):>12}")
        return "\n".join(lines) + "\n"


class _Dir:
    def __init__(self, fs: _Reader, d: str) -> None:
        self.fs, self.d = fs, d

    def text(self, name: str) -> str | None:
        try:
            return self.fs.read(os.path.join(self.d, name))
        except (OSError, ValueError):
            return None

    def int(self, name: str) -> int | None:
        t = self.text(name)
        try:
            return None if t is None else int(t.split()[0])
        except (ValueError, IndexError):
            return None

    def limit(self, name: str) -> int | None:
        t = self.text(name)
        if t is None or t.strip() in ("max", "-1", ""):
            return None
        n = int(t.split()[0])
        return None if n >= _UNLIMITED_FROM else n

    def keyed(self, name: str) -> dict[str, int]:
        """Flat keyed files: "key value" per line (memory.events, cpu.stat, pids.events)."""
        out: dict[str, int] = {}
        for line in (self.text(name) or "").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
        return out

    def names(self) -> list[str]:
        try:
            return self.fs.listdir(self.d)
        except OSError:
            return []


def _memory(d: _Dir, v: int) -> list[Counter]:
    if v == 1:
        if d.text("memory.usage_in_bytes") is None:
            return []
        oom = d.keyed("memory.oom_control")
        mem = Counter("memory", d.int("memory.usage_in_bytes"), d.int("memory.max_usage_in_bytes"),
                      d.limit("memory.limit_in_bytes"), d.int("memory.failcnt"),
                      details={k: oom[k] for k in ("oom_kill", "under_oom") if k in oom})
        rows = [mem]
        sw = d.int("memory.memsw.usage_in_bytes")
        if sw is not None:
            both = d.limit("memory.memsw.limit_in_bytes")
            limit = None if both is None or mem.limit is None else both - mem.limit
            rows.append(Counter("swap", max(0, sw - (mem.held or 0)), None, limit, d.int("memory.memsw.failcnt")))
        return rows
    if d.text("memory.current") is None:
        return []
    ev = d.keyed("memory.events")
    rows = [Counter("memory", d.int("memory.current"), d.int("memory.peak"), d.limit("memory.max"), ev.get("max"),
                    details={k: ev[k] for k in ("oom", "oom_kill", "high") if k in ev})]
    if d.text("memory.swap.current") is not None:
        sev = d.keyed("memory.swap.events")
        rows.append(Counter("swap", d.int("memory.swap.current"), d.int("memory.swap.peak"),
                            d.limit("memory.swap.max"), sev.get("max")))
    return rows


def _pids(d: _Dir, v: int) -> list[Counter]:
    if d.text("pids.current") is None:
        return []
    return [Counter("pids", d.int("pids.current"), d.int("pids.peak"), d.limit("pids.max"),
                    d.keyed("pids.events").get("max"), unit="tasks")]


def _cpu(d: _Dir, v: int, acct: _Dir | None) -> tuple[list[Counter], int | None]:
    st = d.keyed("cpu.stat")
    if v == 1:
        usage = acct.int("cpuacct.usage") if acct else None
        quota, period = d.int("cpu.cfs_quota_us"), d.int("cpu.cfs_period_us")
    else:
        usage = st["usage_usec"] * 1000 if "usage_usec" in st else None
        q = (d.text("cpu.max") or "max 100000").split()
        quota, period = (-1 if q[0] == "max" else int(q[0])), int(q[1]) if len(q) > 1 else 100000
    if usage is None and not st:
        return [], None
    mcpu = None if quota is None or quota < 0 or not period else quota * 1000 // period
    details = {k: st[k] for k in ("nr_periods", "throttled_time", "throttled_usec") if k in st}
    return [Counter("cpu", usage, None, mcpu, st.get("nr_throttled"), unit="ns", details=details)], usage


def _hugetlb(d: _Dir, v: int) -> list[Counter]:
    rows = []
    suffix = ".limit_in_bytes" if v == 1 else ".max"
    sizes = sorted({n[len("hugetlb."):-len(suffix)] for n in d.names()
                    if n.startswith("hugetlb.") and n.endswith(suffix) and ".rsvd." not in n})
    for s in sizes:
        p = f"hugetlb.{s}."
        if v == 1:
            rows.append(Counter(f"hugetlb.{s}", d.int(p + "usage_in_bytes"), d.int(p + "max_usage_in_bytes"),
                                d.limit(p + "limit_in_bytes"), d.int(p + "failcnt")))
        else:
            rows.append(Counter(f"hugetlb.{s}", d.int(p + "current"), None, d.limit(p + "max"),
                                d.keyed(p + "events").get("max")))
    return rows


def _io(d: _Dir, v: int) -> list[Counter]:
    read = write = 0
    if v == 1:
        text = d.text("blkio.throttle.io_service_bytes_recursive") or d.text("blkio.throttle.io_service_bytes")
        if text is None:
            return []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in ("Read", "Write"):
                if parts[1] == "Read":
                    read += int(parts[2])
                else:
                    write += int(parts[2])
    else:
        text = d.text("io.stat")
        if text is None:
            return []
        for line in text.splitlines():
            for kv in line.split()[1:]:
                k, _, n = kv.partition("=")
                if k == "rbytes":
                    read += int(n)
                elif k == "wbytes":
                    write += int(n)
    return [Counter("io", read + write, None, None, None, details={"read_bytes": read, "write_bytes": write})]


def collect(sources: dict[str, tuple[str, int]], fs: _Reader) -> Stats:
    """Read the counters; `sources` maps a controller to (its directory, its cgroup version)."""
    st = Stats()
    dirs = {c: (_Dir(fs, d), v) for c, (d, v) in sources.items()}
    if "memory" in dirs:
        st.rows += _memory(*dirs["memory"])
    if "pids" in dirs:
        st.rows += _pids(*dirs["pids"])
    if "cpu" in dirs:
        acct = dirs.get("cpuacct", (None, 1))[0]
        rows, st.cpu_usage_ns = _cpu(*dirs["cpu"], acct)
        st.rows += rows
    if "hugetlb" in dirs:
        st.rows += _hugetlb(*dirs["hugetlb"])
    for key in ("io", "blkio"):
        if key in dirs:
            st.rows += _io(*dirs[key])
    return st
