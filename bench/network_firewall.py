#!/usr/bin/python3.11
"""Instance-to-instance TCP throughput on one bridge, bare and with the firewall's anti-spoofing on.

Two netns on veths into one host bridge (the integration tests' topology); iperf3 from one to the
other, `--rounds` times, bare (no jaula tables) and policed (the network ensured and both NICs
added: every frame from a port goes through the bridge prerouting lookups) in turns, the order
swapped every round, each round's ratio paired; `--pin` puts iperf3's client on cpu 0 and its
server on cpu 1. With
`--filler N` the sets also hold N other ports (their MAC and addresses), to show the cost is a
lookup, not a walk. Also timed: add_nic and remove_nic (one transaction each). Goal of issue 5:
policed >= 90% of bare. `--calls N` skips iperf3 and times N add_nic/remove_nic pairs with 1 NIC and
with --filler (default 1000) other NICs present, and ensure_network/update_network with them
(goal: a NIC adds under 5 ms to a start, all of it). Run as root:
  .venv/bin/python bench/network_firewall.py [--seconds 3] [--rounds 6] [--pin] [--filler 1000] [--json]
  .venv/bin/python bench/network_firewall.py --calls 200 [--filler 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, REPO)

from collections.abc import Callable

from jaula.network import nft
from jaula.network.firewall import Firewall, add_commands, nic_elements
from jaula.network.plan import BRIDGED, ISOLATE, NetworkPlan, NicPlan
from tests.support.firewall_topology import Topology, leftovers

IPERF = "/usr/bin/iperf3"


def iperf(t: Topology, seconds: int, pin: bool = False) -> float:
    """Gbit/s received by b from a (`pin`: client on cpu 0, server on cpu 1)."""
    server = subprocess.Popen(["ip", "netns", "exec", t.ns("b"), IPERF, "-s", "-1", "-B", t.ip4("b"),
                               *(["-A", "1"] if pin else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            r = subprocess.run(["ip", "netns", "exec", t.ns("a"), IPERF, "-c", t.ip4("b"), "-t", str(seconds),
                                "-J", *(["-A", "0"] if pin else [])], capture_output=True, text=True, check=False)
            out = json.loads(r.stdout or "{}")
            if r.returncode == 0 and "sum_received" in out.get("end", {}):
                return out["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)      # the server was not listening yet
        raise RuntimeError(f"iperf3: {r.stdout[-500:]} {r.stderr[-500:]}")
    finally:
        server.kill()
        server.wait()


def filler(fw: Firewall, net: NetworkPlan, n: int) -> None:
    """N more NICs on the network, every element add_nic gives them, in batches of 200."""
    batch: list[dict] = []
    for i in range(n):
        nic = NicPlan(instance=f"filler{i}", name="eth0", type=BRIDGED, host_name=f"jf{i:06}", parent=net.bridge,
                      mac=f"02:ff:00:00:{i >> 8:02x}:{i & 255:02x}", network=net.name,
                      ipv4=(f"10.250.{i >> 8}.{i & 255}/16",), ipv6=(f"fd00:250::{i:x}/64",))
        batch += add_commands(fw.table, nic_elements(net, nic))
        if len(batch) > 1000 or i == n - 1:
            nft.run(batch)
            batch = []


def _ms(f: Callable[[], object], cpu: list[float] | None = None) -> float:
    """Wall-clock ms of f(); its CPU ms (this thread's) appended to `cpu`: on a loaded host the wall
    clock's tail is time spent waiting for a core."""
    c0, t0 = time.thread_time(), time.perf_counter()
    f()
    t1, c1 = time.perf_counter(), time.thread_time()
    if cpu is not None:
        cpu.append((c1 - c0) * 1e3)
    return (t1 - t0) * 1e3


def calls(t: Topology, fw: Firewall, n: int, others: int) -> dict:
    """Medians and 90th percentiles (ms) of add_nic, remove_nic, ensure/update_network with `others` NICs."""
    net = t.network()
    fw.destroy()
    fw.ensure_network(net)
    if others:
        filler(fw, net, others)
    nic = t.nics["a"]
    add, remove, add_cpu, remove_cpu = [], [], [], []
    for _ in range(n):
        add.append(_ms(lambda: fw.add_nic(net, nic), add_cpu))
        remove.append(_ms(lambda: fw.remove_nic(nic), remove_cpu))
    again = [_ms(lambda: fw.add_nic(net, nic)) for _ in range(n // 4 + 1)]   # already there: the same adds
    update = [_ms(lambda: fw.update_network(net)) for _ in range(5)]
    isolate = []      # to isolate and back: the ports on the bridge are read, then each changed
    for _ in range(3):
        isolate.append(_ms(lambda: fw.update_network(net.replace(isolation=ISOLATE))))
        isolate.append(_ms(lambda: fw.update_network(net)))

    def stats(xs: list[float]) -> dict:
        xs = sorted(xs)
        return {"median": round(statistics.median(xs), 3), "p90": round(xs[int(len(xs) * 0.9)], 3)}

    return {"other_nics": others, "calls": n, "add_nic_ms": stats(add), "remove_nic_ms": stats(remove),
            "add_nic_cpu_ms": stats(add_cpu), "remove_nic_cpu_ms": stats(remove_cpu),
            "add_nic_again_ms": stats(again), "update_network_ms": stats(update),
            "update_network_isolation_ms": stats(isolate)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pin", action="store_true", help="iperf3's client on cpu 0, its server on cpu 1")
    ap.add_argument("--filler", type=int, default=None, help="other NICs in the sets (default 0, --calls: 1000)")
    ap.add_argument("--calls", type=int, default=0, help="time this many add_nic/remove_nic pairs, no iperf3")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.calls:
        main_calls(args.calls, 1000 if args.filler is None else args.filler, args.json)
        return
    args.filler = args.filler or 0
    if not os.access(IPERF, os.X_OK):
        sys.exit(f"{IPERF} missing: run scripts/setup")
    t = Topology("ab")
    fw = Firewall(f"jb{os.getpid()}")
    bare: list[float] = []
    policed: list[float] = []
    add_ms: list[float] = []
    remove_ms: list[float] = []
    try:
        net = t.network()
        for i in range(args.rounds):   # bare first in even rounds, policed first in odd ones
            for policed_now in ((False, True) if i % 2 == 0 else (True, False)):
                if not policed_now:
                    fw.destroy()
                    bare.append(iperf(t, args.seconds, args.pin))
                    continue
                fw.ensure_network(net)
                if args.filler:
                    filler(fw, net, args.filler)
                for name in "ab":
                    t0 = time.perf_counter()
                    fw.add_nic(net, t.nics[name])
                    add_ms.append((time.perf_counter() - t0) * 1e3)
                policed.append(iperf(t, args.seconds, args.pin))
                for name in "ab":
                    t0 = time.perf_counter()
                    fw.remove_nic(t.nics[name])
                    remove_ms.append((time.perf_counter() - t0) * 1e3)
    finally:
        fw.destroy()
        t.close()
    left = leftovers(table=fw.table)
    res = {"bare_gbit": statistics.median(bare), "policed_gbit": statistics.median(policed),
           "ratio": statistics.median(policed) / statistics.median(bare),
           "paired_ratios": [p / b for p, b in zip(policed, bare)], "pinned": args.pin,
           "add_nic_ms": statistics.median(add_ms), "remove_nic_ms": statistics.median(remove_ms),
           "filler_ports": args.filler, "rounds": args.rounds, "seconds": args.seconds,
           "bare_runs": bare, "policed_runs": policed, "leftovers": left}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"iperf3 TCP a->b on one bridge, {args.rounds} x {args.seconds}s interleaved, medians "
              f"({args.filler} filler ports in the sets)")
        print(f"  bare                 {res['bare_gbit']:7.2f} Gbit/s  {[round(x, 2) for x in bare]}")
        print(f"  anti-spoofing on     {res['policed_gbit']:7.2f} Gbit/s  {[round(x, 2) for x in policed]}")
        pr = res["paired_ratios"]
        print(f"  ratio                {res['ratio']:7.1%}   (goal >= 90%); paired by round: median "
              f"{statistics.median(pr):.0%} (min {min(pr):.0%}, max {max(pr):.0%})"
              f"{'; client on cpu 0, server on cpu 1' if args.pin else ''}")
        print(f"  add_nic {res['add_nic_ms']:.1f} ms, remove_nic {res['remove_nic_ms']:.1f} ms (one transaction each)")
        if left:
            print(f"  LEFT BEHIND: {left}")


def main_calls(n: int, others: int, as_json: bool) -> None:
    t = Topology("ab")
    fw = Firewall(f"jb{os.getpid()}")
    try:
        res = [calls(t, fw, n, 0), calls(t, fw, n, others)]
    finally:
        fw.destroy()
        t.close()
    left = leftovers(table=fw.table)
    if as_json:
        print(json.dumps({"runs": res, "leftovers": left}, indent=2))
        return
    print(f"Firewall calls, {n} add_nic/remove_nic pairs of one NIC (one transaction each, nothing read), ms")
    for r in res:
        print(f"  {r['other_nics'] + 1:5} NICs: add_nic {r['add_nic_ms']['median']:.2f} (p90 {r['add_nic_ms']['p90']:.2f})"
              f"  remove_nic {r['remove_nic_ms']['median']:.2f} (p90 {r['remove_nic_ms']['p90']:.2f})"
              f"  CPU {r['add_nic_cpu_ms']['median']:.2f}/{r['remove_nic_cpu_ms']['median']:.2f}"
              f"  add_nic again {r['add_nic_again_ms']['median']:.2f}"
              f"  update_network {r['update_network_ms']['median']:.1f}"
              f" (isolation changed: {r['update_network_isolation_ms']['median']:.1f})")
    if left:
        print(f"  LEFT BEHIND: {left}")


if __name__ == "__main__":
    main()
