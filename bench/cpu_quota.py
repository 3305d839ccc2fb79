#!/usr/bin/python3.11
"""How exactly a cpu quota given as a number of cpus holds: the goal is within 5% from 0.25 to 2 cpus.

For each quota, a fresh cgroup gets it (jaula.cgroups: cpu.cfs_quota_us / cpu.max) and as many busy
processes as the quota can use plus one, so demand always passes the quota. After a short warm-up the
cgroup's cpu time (cpuacct.usage, or cpu.stat's usage_usec on v2) is read over --seconds of wall
time: measured cpus = cpu time / wall time, error = measured / quota - 1.

The quota is an upper bound; other load on the host can only push a measure below it, never above.
So that the measure shows the quota and not the host's load, the cgroup sits right below the
caller's own with the highest cpu weight (shares 262144, weight 10000 on v2: a nice value would not
do, the scheduler weighs the cgroup as one entity). --shares 1024 shows the plain default instead.
A quota above the host's cpu count cannot be reached, and is marked so. Run as root:
  .venv/bin/python bench/cpu_quota.py [--seconds 2] [--quotas 0.25,0.5,1,1.5,2] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from jaula.cgroups import Resources, cpus_to_quota, open_cgroup, probe  # noqa: E402

GOAL = 0.05
BUSY = "import sys\nsys.stdin.buffer.read(1)\nwhile True: pass\n"


def measure(cpus: float, seconds: float, shares: int, period: int, warmup: float) -> dict:
    """One quota: its cgroup, its busy processes, the measure; everything removed again."""
    name = f"jaula-bench-{os.getpid()}-{str(cpus).replace('.', '_')}"
    cg = open_cgroup(name, name)
    cg.create()
    procs: list[subprocess.Popen] = []
    try:
        quota, period = cpus_to_quota(cpus, period)
        cg.update(Resources.from_oci({"cpu": {"shares": shares, "quota": quota, "period": period}}))
        workers = math.ceil(cpus) + 1
        for _ in range(workers):
            p = subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.PIPE)
            procs.append(p)
            cg.add_pid(p.pid)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"x")
            p.stdin.flush()
        time.sleep(warmup)
        s0, t0 = cg.stats(), time.monotonic()
        time.sleep(seconds)
        s1, t1 = cg.stats(), time.monotonic()
        used = ((s1.cpu_usage_ns or 0) - (s0.cpu_usage_ns or 0)) / 1e9
        wall = t1 - t0
        got = used / wall
        c0, c1 = s0.row("cpu"), s1.row("cpu")
        periods = c1.details.get("nr_periods", 0) - c0.details.get("nr_periods", 0)
        throttled = (c1.failcnt or 0) - (c0.failcnt or 0)
        return {"quota_cpus": cpus, "quota_us": quota, "period_us": period, "workers": workers,
                "cpu_s": round(used, 4), "wall_s": round(wall, 4), "measured_cpus": round(got, 4),
                "error_pct": round((got / cpus - 1) * 100, 2), "periods": periods, "throttled_periods": throttled,
                "reachable": cpus <= (os.cpu_count() or 1)}
    finally:
        cg.kill(9)
        for p in procs:
            p.wait(timeout=10)
        cg.remove(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measured wall time per quota (default 2)")
    ap.add_argument("--quotas", default="0.25,0.5,1,1.5,2", help="cpus, comma-separated")
    ap.add_argument("--period", type=int, default=100000, help="cfs period in microseconds (default 100000)")
    ap.add_argument("--shares", type=int, default=262144, help="cpu.shares of the cgroup (default 262144, the most)")
    ap.add_argument("--warmup", type=float, default=0.3, help="seconds before measuring (default 0.3)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/cpu_quota.py: run as root (it makes cgroups)", file=sys.stderr)
        return 1
    load = os.getloadavg()
    rows = [measure(float(q), a.seconds, a.shares, a.period, a.warmup) for q in a.quotas.split(",")]
    host = {"cpus": os.cpu_count(), "kernel": platform.release(), "cgroups": probe().mode,
            "loadavg_before": [round(x, 2) for x in load], "shares": a.shares, "seconds": a.seconds}
    if a.json:
        print(json.dumps({"host": host, "rows": rows}, indent=2))
        return 0
    print(f"cpu quota accuracy: {host['cpus']} cpus, Linux {host['kernel']}, cgroups {host['cgroups']}, "
          f"load before {host['loadavg_before'][0]}, shares {a.shares}, {a.seconds:g} s per quota")
    print(f"{'quota':>7} {'workers':>8} {'measured':>9} {'error':>8} {'throttled':>12}  goal ±{GOAL:.0%}")
    worst = 0.0
    for r in rows:
        ok = abs(r["error_pct"]) <= GOAL * 100
        note = "ok" if ok else ("more than this host's cpus" if not r["reachable"] else
                                "MISSED" if r["throttled_periods"] * 2 >= r["periods"] else
                                "MISSED: throttled in few periods, the host's load held it back, not the quota")
        if r["reachable"]:
            worst = max(worst, abs(r["error_pct"]))
        print(f"{r['quota_cpus']:>7g} {r['workers']:>8} {r['measured_cpus']:>9.4f} {r['error_pct']:>+7.2f}% "
              f"{r['throttled_periods']:>5}/{r['periods']:<6}  {note}")
    print(f"worst error within reach: {worst:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
