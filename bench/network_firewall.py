#!/usr/bin/python3.11
"""Instance-to-instance TCP throughput on one bridge, bare and with the firewall's anti-spoofing on.

Two netns on veths into one host bridge (the integration tests' topology); iperf3 from one to the
other, `--rounds` times interleaved: bare (no jaula tables), then policed (the network ensured and
both NICs added: every frame from a port goes through the bridge prerouting lookups). With
`--filler N` the sets also hold N other ports (their MAC and addresses), to show the cost is a
lookup, not a walk. Also timed: add_nic and remove_nic (one transaction each). Goal of issue 5:
policed >= 90% of bare. Run as root:
  .venv/bin/python bench/network_firewall.py [--seconds 3] [--rounds 3] [--filler 1000] [--json]
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

from jaula.network import nft
from jaula.network.firewall import Firewall
from tests.support.firewall_topology import Topology, leftovers

IPERF = "/usr/bin/iperf3"


def iperf(t: Topology, seconds: int) -> float:
    """Gbit/s received by b from a."""
    server = subprocess.Popen(["ip", "netns", "exec", t.ns("b"), IPERF, "-s", "-1", "-B", t.ip4("b")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            r = subprocess.run(["ip", "netns", "exec", t.ns("a"), IPERF, "-c", t.ip4("b"), "-t", str(seconds),
                                "-J"], capture_output=True, text=True, check=False)
            out = json.loads(r.stdout or "{}")
            if r.returncode == 0 and "sum_received" in out.get("end", {}):
                return out["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)      # the server was not listening yet
        raise RuntimeError(f"iperf3: {r.stdout[-500:]} {r.stderr[-500:]}")
    finally:
        server.kill()
        server.wait()


def filler(fw: Firewall, n: int) -> None:
    """N more ports in the sets, in one batch (the bench measures lookups among them)."""
    elems: dict[str, list] = {"ports": [], "macs": [], "addr4": [], "addr6": []}
    for i in range(n):
        port = f"jf{i:06}"
        elems["ports"].append(port)
        elems["macs"].append({"concat": [port, f"02:ff:00:00:{i >> 8:02x}:{i & 255:02x}"]})
        elems["addr4"].append({"concat": [port, f"10.250.{i >> 8}.{i & 255}"]})
        elems["addr6"].append({"concat": [port, f"fd00:250::{i:x}"]})
    nft.run([{"add": {"element": {"family": "bridge", "table": fw.table, "name": k, "elem": v}}}
             for k, v in elems.items() if v])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--filler", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
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
        for _ in range(args.rounds):
            fw.destroy()
            bare.append(iperf(t, args.seconds))
            fw.ensure_network(net)
            if args.filler:
                filler(fw, args.filler)
            for name in "ab":
                t0 = time.perf_counter()
                fw.add_nic(net, t.nics[name])
                add_ms.append((time.perf_counter() - t0) * 1e3)
            policed.append(iperf(t, args.seconds))
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
        print(f"  ratio                {res['ratio']:7.1%}   (goal >= 90%)")
        print(f"  add_nic {res['add_nic_ms']:.1f} ms, remove_nic {res['remove_nic_ms']:.1f} ms (one transaction each)")
        if left:
            print(f"  LEFT BEHIND: {left}")


if __name__ == "__main__":
    main()
