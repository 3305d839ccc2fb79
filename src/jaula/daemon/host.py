"""Host capacity: what this host has (physical), what its instances are promised (committed),
what is in use now (used), and the overcommit ratios a start must stay within.

- physical: cpus this process may run on (sched_getaffinity), MemTotal of /proc/meminfo, the
  size of the file system holding jaulad's root (statvfs).
- committed: the sum of `limits.memory` and `limits.cpu` (profiles merged) of the instances that
  are **running or frozen**: a stopped instance holds nothing, so a create never commits and only
  a start (or a restart of a stopped one) is checked. An instance without `limits.memory` (or
  `limits.cpu`) commits nothing of it: it is counted under `unlimited`.
- used: the host's own view, cheap to read: MemTotal - MemAvailable, the 1-minute load average
  as cpus busy, the root's used bytes.
- ratios: `overcommit.memory` (default 1.0) and `overcommit.cpu` (default 4.0), kept in
  `host.json` beside the database (`$ROOT/host.json`), set with PUT /1.0/host or
  `jaula host set overcommit.memory=1.5`.

A start whose instance would take the committed total past physical x ratio is refused (409,
BadState) with how much it would be over. The check is made when the start is asked for and
again in its operation, there atomically with the commitment (`Host.starting`): under one lock,
the check counts the starts in flight too and reserves the instance's limits until its row says
running (or the start failed), so concurrent starts cannot together pass the ratios.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jaula.errors import BadState, ConfigError, JaulaError

DEFAULT_RATIOS = {"overcommit.memory": 1.0, "overcommit.cpu": 4.0}
ACTIVE = ("running", "frozen")


def gib(n: float) -> str:
    """Bytes as a short GiB/MiB figure for messages: 26 GiB, 1.5 GiB, 512 MiB."""
    if abs(n) >= 1 << 30:
        v = n / (1 << 30)
        return f"{v:.0f} GiB" if v == int(v) else f"{v:.1f} GiB"
    v = n / (1 << 20)
    return f"{v:.0f} MiB"


def cpus_str(n: float) -> str:
    return f"{n:g}"


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    out: dict[str, int] = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def probe(root: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """The host's physical and used figures (see the module's doc)."""
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ncpu = os.cpu_count() or 1
    mem = meminfo()
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable", mem.get("MemFree", 0))
    st = os.statvfs(root)
    disk_total = st.f_blocks * st.f_frsize
    disk_used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return {"physical": {"cpu": ncpu, "memory": total, "disk": disk_total},
            "used": {"cpu": round(os.getloadavg()[0], 2), "memory": total - available, "disk": disk_used}}


class Host:
    """Capacity over the database; `probe` is replaceable (tests give fixed figures)."""

    def __init__(self, db: Any, expanded: Callable[[list[str], dict[str, Any]], dict[str, Any]],
                 root: str | os.PathLike[str] | None = None) -> None:
        self.db = db
        self.expanded = expanded  # (profiles, own config) -> the validated, merged config
        self.root = Path(root) if root is not None else (Path(db.path).parent if db is not None else Path("/"))
        self.probe: Callable[[], dict[str, dict[str, float]]] = lambda: probe(self.root)
        self._lock = threading.Lock()
        self._starting_lock = threading.Lock()  # a check and its reservation, as one step
        self._starting: dict[str, tuple[int | None, float | None]] = {}  # name -> its limits, in flight

    # -- ratios -----------------------------------------------------------------------------------
    @property
    def settings_path(self) -> Path:
        return self.root / "host.json"

    def ratios(self) -> dict[str, float]:
        try:
            stored = json.loads(self.settings_path.read_text())
        except FileNotFoundError:
            stored = {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{str(self.settings_path)!r} cannot be read ({exc}): fix or remove it") from None
        return {k: float(stored.get(k, v)) for k, v in DEFAULT_RATIOS.items()}

    def set_ratios(self, changes: dict[str, Any]) -> dict[str, float]:
        problems = []
        clean: dict[str, float] = {}
        for key, value in changes.items():
            if key not in DEFAULT_RATIOS:
                problems.append(f"{key}: unknown host setting (known: {', '.join(DEFAULT_RATIOS)})")
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                problems.append(f"{key}: {value!r} is not a number")
                continue
            if not 0 < v <= 1000:
                problems.append(f"{key}: {value!r} must be above 0 and at most 1000")
            clean[key] = v
        if problems:
            raise ConfigError(problems)
        with self._lock:
            ratios = {**self.ratios(), **clean}
            tmp = self.settings_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(ratios, indent=2) + "\n")
            os.replace(tmp, self.settings_path)
        return ratios

    # -- figures ----------------------------------------------------------------------------------
    def limits_of(self, row: Any) -> tuple[int | None, float | None]:
        try:
            cfg = self.expanded(list(row.profiles), dict(row.config))
        except JaulaError:  # a config that no longer validates: counted as unlimited
            return None, None
        mem = cfg.get("limits.memory")
        cpu = cfg.get("limits.cpu")
        return (int(mem) if mem is not None else None), (float(cpu) if cpu is not None else None)

    def committed(self, exclude: str | None = None) -> dict[str, Any]:
        """What the running (or frozen) instances hold, and the starts in flight (`starting`)."""
        mem, cpu, count = 0, 0.0, 0
        unlimited = {"memory": 0, "cpu": 0}
        rows = self.db.list_instances()
        active = {r.name for r in rows if r.status in ACTIVE}
        held = [self.limits_of(r) for r in rows if r.name in active and r.name != exclude]
        held += [v for n, v in dict(self._starting).items() if n not in active and n != exclude]
        for m, c in held:
            count += 1
            if m is None:
                unlimited["memory"] += 1
            else:
                mem += m
            if c is None:
                unlimited["cpu"] += 1
            else:
                cpu += c
        return {"memory": mem, "cpu": round(cpu, 3), "instances": count, "unlimited": unlimited}

    def report(self) -> dict[str, Any]:
        found = self.probe()
        ratios = self.ratios()
        physical, used = found["physical"], found["used"]
        committed = self.committed()
        return {
            "physical": physical, "used": used, "committed": committed,
            "overcommit": ratios,
            "allowed": {"memory": int(physical["memory"] * ratios["overcommit.memory"]),
                        "cpu": round(physical["cpu"] * ratios["overcommit.cpu"], 3)},
        }

    @contextmanager
    def starting(self, row: Any) -> Iterator[None]:
        """Check a start of `row` and hold its limits as committed while the caller starts it and
        records it running: the check and the reservation are one step under a lock, so two
        concurrent starts cannot both pass on the same headroom. Released when the block ends
        (the row then says running, and counts as such; or the start failed)."""
        with self._starting_lock:
            self.check_start(row)
            self._starting[row.name] = self.limits_of(row)
        try:
            yield
        finally:
            with self._starting_lock:
                self._starting.pop(row.name, None)

    def check_start(self, row: Any, doing: str = "starting") -> None:
        """Refuse (BadState) a start of `row` that would commit more than physical x ratio
        (counting the starts in flight); `doing` words the refusal ("this change to": a running
        instance's limits raised live)."""
        mem, cpu = self.limits_of(row)
        if mem is None and cpu is None:
            return
        found = self.probe()["physical"]
        ratios = self.ratios()
        others = self.committed(exclude=row.name)
        problems = []
        if mem is not None:
            ratio = ratios["overcommit.memory"]
            allowed = found["memory"] * ratio
            total = others["memory"] + mem
            if total > allowed:
                problems.append(
                    f"{doing} {row.name} would commit {gib(total)} of memory against {gib(found['memory'])} "
                    f"physical (ratio {ratio:g}): {gib(total - allowed)} over; lower limits.memory or raise "
                    f"the ratio with `jaula host set overcommit.memory=...`")
        if cpu is not None:
            ratio = ratios["overcommit.cpu"]
            allowed = found["cpu"] * ratio
            total = others["cpu"] + cpu
            if total > allowed + 1e-9:
                problems.append(
                    f"{doing} {row.name} would commit {cpus_str(round(total, 3))} cpus against "
                    f"{cpus_str(found['cpu'])} physical (ratio {ratio:g}): {cpus_str(round(total - allowed, 3))} "
                    f"over; lower limits.cpu or raise the ratio with `jaula host set overcommit.cpu=...`")
        if problems:
            raise BadState("; ".join(problems))
