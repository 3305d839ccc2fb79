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
    the limit was hit (on v1, memory's also counts refusals at the memory+swap limit). barrier is the
    soft limit where the resource has one (memory: v1's soft_limit_in_bytes, v2's memory.high), else
    the limit, as OpenVZ showed barrier = limit for resources without a soft limit. For "cpu", held is
    the usage in ns, barrier and limit the quota in millicpus (1000 = one cpu) and failcnt the number
    of throttled periods. For "io", held is the bytes moved so far.
    """

    resource: str
    held: int | None = None
    maxheld: int | None = None
    limit: int | None = None
    failcnt: int | None = None
    unit: str = "bytes"
    details: dict[str, int] = {}
    barrier: int | None = None


class Stats(Record):
    rows: list[Counter] = []
    cpu_usage_ns: int | None = None
    name: str = ""          # the cgroup's name (its directory's), the "uid" column of the table

    def row(self, resource: str) -> Counter | None:
        return next((r for r in self.rows if r.resource == resource), None)

    def as_dict(self) -> dict:
        return {"rows": [r.as_dict() for r in self.rows], "cpu_usage_ns": self.cpu_usage_ns, "name": self.name}

    def beancounters(self) -> str:
        """The table as /proc/user_beancounters printed it ('-' for unknown, 'max' for unlimited)."""
        return beancounters([self])


_HEADER = ("uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt", "unit")


def beancounters(stats: list[Stats]) -> str:
    """One table for several cgroups, /proc/user_beancounters' columns: the uid is shown on a cgroup's first row.

    '-' is unknown, 'max' unlimited; cpu's held is ns and its barrier and limit millicpus (1000 = one cpu).
    """
    show = lambda v, unl="-": unl if v is None else str(v)  # noqa: E731
    rows = [_HEADER]
    for st in stats:
        for i, r in enumerate(st.rows):
            uid = (st.name or "-") + ":" if i == 0 else ""
            unit = "ns, mcpu" if r.resource == "cpu" else r.unit
            rows.append((uid, r.resource, show(r.held), show(r.maxheld), show(r.barrier, "max"), show(r.limit, "max"),
                         show(r.failcnt), unit))
    width = [max(len(row[c]) for row in rows) for c in range(len(_HEADER))]
    lines = []
    for row in rows:
        cells = [row[0].rjust(width[0]), row[1].ljust(width[1])]
        cells += [v.rjust(max(width[c], 8)) for c, v in enumerate(row[2:7], 2)] + [row[7]]
        lines.append("  ".join(cells).rstrip())
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
        limit = d.limit("memory.limit_in_bytes")
        soft = d.limit("memory.soft_limit_in_bytes")
        # v1 charges memory+swap first and counts a refusal there only (try_charge in mm/memcontrol.c): with
        # swap == limit ("no swap") a refused page shows in memsw.failcnt, so the memory row adds it. Since
        # page counters got track_failcnt (Linux 6.15 or so; 6.18 here) only memory.failcnt moves on v1:
        # a refusal at the memory+swap limit then shows only as oom_kill in memory.oom_control.
        fails, sw_fails = d.int("memory.failcnt"), d.int("memory.memsw.failcnt")
        details = {k: oom[k] for k in ("oom_kill", "under_oom") if k in oom}
        if sw_fails is not None:
            details["memsw_failcnt"] = sw_fails
        mem = Counter("memory", d.int("memory.usage_in_bytes"), d.int("memory.max_usage_in_bytes"),
                      limit, None if fails is None else fails + (sw_fails or 0), details=details,
                      barrier=soft if soft is not None and (limit is None or soft < limit) else limit)
        rows = [mem]
        sw = d.int("memory.memsw.usage_in_bytes")
        if sw is not None:
            both = d.limit("memory.memsw.limit_in_bytes")
            limit = None if both is None or mem.limit is None else both - mem.limit
            rows.append(Counter("swap", max(0, sw - (mem.held or 0)), None, limit, sw_fails, barrier=limit))
        return rows
    if d.text("memory.current") is None:
        return []
    ev = d.keyed("memory.events")
    limit, high = d.limit("memory.max"), d.limit("memory.high")
    rows = [Counter("memory", d.int("memory.current"), d.int("memory.peak"), limit, ev.get("max"),
                    details={k: ev[k] for k in ("oom", "oom_kill", "high") if k in ev},
                    barrier=high if high is not None and (limit is None or high < limit) else limit)]
    if d.text("memory.swap.current") is not None:
        sev = d.keyed("memory.swap.events")
        sl = d.limit("memory.swap.max")
        rows.append(Counter("swap", d.int("memory.swap.current"), d.int("memory.swap.peak"), sl, sev.get("max"), barrier=sl))
    return rows


def _pids(d: _Dir, v: int) -> list[Counter]:
    if d.text("pids.current") is None:
        return []
    limit = d.limit("pids.max")
    return [Counter("pids", d.int("pids.current"), d.int("pids.peak"), limit,
                    d.keyed("pids.events").get("max"), unit="tasks", barrier=limit)]


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
    return [Counter("cpu", usage, None, mcpu, st.get("nr_throttled"), unit="ns", details=details, barrier=mcpu)], usage


def _hugetlb(d: _Dir, v: int) -> list[Counter]:
    rows = []
    suffix = ".limit_in_bytes" if v == 1 else ".max"
    sizes = sorted({n[len("hugetlb."):-len(suffix)] for n in d.names()
                    if n.startswith("hugetlb.") and n.endswith(suffix) and ".rsvd." not in n})
    for s in sizes:
        p = f"hugetlb.{s}."
        if v == 1:
            limit = d.limit(p + "limit_in_bytes")
            rows.append(Counter(f"hugetlb.{s}", d.int(p + "usage_in_bytes"), d.int(p + "max_usage_in_bytes"),
                                limit, d.int(p + "failcnt"), barrier=limit))
        else:
            limit = d.limit(p + "max")
            rows.append(Counter(f"hugetlb.{s}", d.int(p + "current"), None, limit,
                                d.keyed(p + "events").get("max"), barrier=limit))
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


def collect(sources: dict[str, tuple[str, int]], fs: _Reader, name: str = "") -> Stats:
    """Read the counters; `sources` maps a controller to (its directory, its cgroup version)."""
    st = Stats(name=name)
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


_USAGE = """usage: python -m jaula.cgroups.stats [CGROUP ...]

Print the beancounter table of cgroups: held, maxheld, barrier, limit and failcnt per resource.
A CGROUP is a name (a cgroup jaula made: <your cgroup>/jaula/NAME), a path relative to your own
cgroup (a/b), or a host directory below it (/sys/fs/cgroup/pids/jaula/NAME). With none: every
cgroup in <your cgroup>/jaula.
"""


def main(argv: list[str] | None = None, layout: object = None, fs: object = None) -> int:
    """The table for people at a shell; exit status 1 when a cgroup asked for is not there."""
    import sys

    from jaula.cgroups.base import CgroupFs, open_cgroup
    from jaula.cgroups.layout import probe
    from jaula.errors import JaulaError

    fs = fs or CgroupFs()
    args = sys.argv[1:] if argv is None else argv
    if any(a.startswith("-") for a in args):
        sys.stdout.write(_USAGE)
        return 0 if args[0] in ("-h", "--help") else 2
    layout = layout or probe()
    hs = layout.hierarchies()
    wanted: list[tuple[str | None, str]] = []       # (cgroupsPath, name) as open_cgroup takes them
    problems: list[str] = []
    if not args:
        names: set[str] = set()
        for h in hs:
            d = h.dir_of(h.current.rstrip("/") + "/jaula")
            try:
                names |= {e for e in fs.listdir(d) if fs.isdir(os.path.join(d, e))}
            except OSError:
                pass
        wanted = [(None, n) for n in sorted(names)]
    for a in args:
        a = a.rstrip("/")
        if "/" not in a:
            wanted.append((None, a))
            continue
        if not a.startswith("/"):
            wanted.append((a, os.path.basename(a)))
            continue
        for h in hs:
            caller = h.dir_of(h.current)
            if a.startswith(caller.rstrip("/") + "/"):
                rel = a[len(caller.rstrip("/")) + 1:]
                wanted.append((None, rel[len("jaula/"):]) if rel.count("/") == 1 and rel.startswith("jaula/")
                              else (rel, os.path.basename(rel)))
                break
        else:
            problems.append(f"{a!r} is not a directory below your own cgroup on any mounted hierarchy")
    stats = []
    for path, name in wanted:
        what = name if path is None else path
        try:
            cg = open_cgroup(path, name, layout=layout, fs=fs)
        except JaulaError as e:
            problems.append(f"{what!r}: {e}")
            continue
        if not cg.exists():
            problems.append(f"{what!r}: no such cgroup (looked for {sorted(set(cg.paths.values()))})")
            continue
        stats.append(cg.stats())
    if stats:
        sys.stdout.write(beancounters(stats))
    for p in problems:
        sys.stderr.write(f"jaula.cgroups.stats: {p}\n")
    return 1 if problems else 0


if __name__ == "__main__":      # run the package's module: not a second copy of its classes
    import sys

    from jaula.cgroups.stats import main as _main

    sys.exit(_main())
