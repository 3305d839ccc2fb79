#!/usr/bin/python3.11
"""What a NIC adds to an instance's start through jaulad: busybox system instances started with
eth0 on a network (veth into the bridge, firewall elements, addresses, routes) and with
`nic.eth0.type=none` (loopback only), interleaved, the start timed from the API call to the
init's exec (the start operation waited on), as bench/daemon.py times starts; then their stop
(--force) timed the same way. jaulad runs with $JAULA_NIC_TIMING, so the spawner's plug, unplug
and /etc writes are timed step by step (medians printed).

    .venv/bin/python bench/daemon_nic.py [-n 15]      (as root; its own jaulad in a temporary root)

Measured 2026-11-26 (vm, 2 cpus shared with other work, Linux 6.18): -n 15, medians: with eth0
112.4 ms, loopback only 71.9 ms: the NIC adds 40.5 ms (goal "under 5 ms": NOT met). Of it, timed
apart on the same host: Firewall.add_nic 10-15 ms (libnftables: our tables read, then one
transaction), links.attach 6-17 ms, the daemon's plans 0.6 ms per instance read; its unplug at
stop (not in this figure) 26-46 ms. Again later with the batched attach (e176674) and the lighter
firewall reads (5e15e8a), load average 5.7 from other work: -n 15, the NIC adds 47.5 ms; the plug
step timed inside the spawner 22-78 ms (attach alone 2-16 ms, add_nic 5-13 ms outside it).

With the plug overlapping the init's own setup (jaula.oci create's on_namespaces), the previous
commit's code run in turns with it (from an export, PYTHONPATH), same day, NIC adds to the start
(before / after): load 2.6-3.9: 35.0 / 5.7, 6.7 / 20.2 ms, and 0.2 ms in a run of its own at
load 3.4 (goal met when a core is free); load 6.3-7.6: 8.4 / 5.8, 18.4 / 11.9, 35.8 / 16.9 ms.
Later at load 3.7-4.0 (two pairs): 10.7 / 2.6 and 9.6 / 3.8 ms (goal met in both).
To a stop: 3.9-21.7 ms, alike before and after (Firewall.remove_nic 1.7-6.9 ms in the spawner).
The plug in the spawner: 10-26 ms wall, Firewall.add_nic 4.4-14.5 ms of it, the veth 2.8-6.1 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench.daemon import Daemon
from jaula.instances.nics import TIMING_ENV


def _steps(path: Path) -> dict[str, dict[str, float]]:
    """Median of each step of the spawner's plug, unplug and /etc writes ($JAULA_NIC_TIMING)."""
    seen: dict[str, dict[str, list[float]]] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        what, *fields = line.split()
        for f in fields:
            step, _, ms = f.partition("=")
            seen.setdefault(what, {}).setdefault(step, []).append(float(ms))
    return {w: {s: statistics.median(v) for s, v in steps.items()} for w, steps in seen.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=15, help="starts of each kind")
    ns = p.parse_args(argv)
    top = Path(tempfile.mkdtemp(prefix="jaula-bench-nic-"))
    top.chmod(0o711)
    timing = top / "steps.txt"
    os.environ[TIMING_ENV] = str(timing)  # jaulad and its spawner inherit it
    d = Daemon(top)
    samples: dict[str, list[float]] = {"nic": [], "none": [], "stop-nic": [], "stop-none": []}
    load = os.getloadavg()
    try:
        d.start()
        c = d.client
        c.create_network("bench", {"ipv6.address": "none"})
        kinds = {"nic": {"nic.eth0.network": "bench"}, "none": {"nic.eth0.type": "none"}}
        for kind, config in kinds.items():
            c.create("busybox", f"warm-{kind}", config=config)
            c.start(f"warm-{kind}")
        timing.unlink(missing_ok=True)
        for i in range(ns.n):
            for kind in (("nic", "none") if i % 2 else ("none", "nic")):
                name = f"{kind}{i}"
                c.create("busybox", name, config=kinds[kind])
                t = time.perf_counter()
                c.start(name)
                samples[kind].append((time.perf_counter() - t) * 1000)
                d.note(name)
                t = time.perf_counter()
                c.stop(name, force=True)
                samples["stop-" + kind].append((time.perf_counter() - t) * 1000)
                c.delete(name)
        for kind in kinds:
            c.delete(f"warm-{kind}", force=True)
        c.delete_network("bench")
    finally:
        problems = d.remove_all()
        d.stop()
        from tests.support.network import remove_daemon_network

        remove_daemon_network(d.root)
        left = d.leaks()
        steps = _steps(timing)
        if not left:
            shutil.rmtree(top, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    after = os.getloadavg()
    print(f"load average {load[0]:.2f} before, {after[0]:.2f} after")
    print(f"start through jaulad, busybox system, median of {ns.n} (ms): "
          f"with eth0 {med.get('nic', 0):.1f}, loopback only {med.get('none', 0):.1f}, "
          f"the NIC adds {med.get('nic', 0) - med.get('none', 0):.1f}")
    print(f"stop --force, median (ms): with eth0 {med.get('stop-nic', 0):.1f}, "
          f"loopback only {med.get('stop-none', 0):.1f}, "
          f"the NIC adds {med.get('stop-nic', 0) - med.get('stop-none', 0):.1f}")
    for what, st in steps.items():
        print(f"  spawner {what} (medians, ms): " + " ".join(f"{k} {v:.2f}" for k, v in st.items()))
    for p_ in problems + left:
        print("problem:", p_)
    return 1 if problems or left else 0


if __name__ == "__main__":
    sys.exit(main())
