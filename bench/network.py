#!/usr/bin/python3.11
"""Network figures of jaula's interfaces (`jaula.network.links`, `jaula.network.tc`).

1. `attach` of one BRIDGED NIC (veth born in the netns, MAC, MTU, IPv4 + IPv6, lo, default
   routes) into a fresh netns: median and spread of `--attach N` (default 50), with its steps.
   Issue 5's goal: a NIC adds < 5 ms to a start.
2. iperf3 TCP throughput: loopback inside one netns, and between two netns over veth + bridge
   (made by `links`), rounds interleaved, medians and ratios.
3. The same bridge path with the firewall's anti-spoofing on (`jaula.network.firewall`: network
   ensured, both NICs added): the ratio to the bare path (issue 5's goal: >= 90%).
   `bench/network_firewall.py` (the firewall's own bench) looks at its rules in more depth.
4. The rate limits: 4 MB pushed through a limit of `--limit` kbit/s each way, the observed rate.
Prints figures, asserts nothing. Run as root:
  .venv/bin/python bench/network.py [--attach 50] [--seconds 3] [--rounds 3] [--limit 8000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, REPO)

from pyroute2 import IPRoute

from jaula.network import links, tc
from jaula.network.plan import BRIDGED, NetworkPlan, NicPlan
from tests.support.netns import BUSYBOX, Ns

IPERF = "/usr/bin/iperf3"
P = f"jn{os.getpid() % 10000:04d}"
SUB4 = f"10.{150 + os.getpid() % 50}.{os.getpid() % 250}"
SUB6 = f"fd43:{os.getpid() % 65536:x}:9"


def plan_net() -> NetworkPlan:
    return NetworkPlan(name="bench", bridge=f"{P}br", ipv4=f"{SUB4}.1/24", ipv6=f"{SUB6}::1/64")


def plan_nic(i: int, **kw: object) -> NicPlan:
    base: dict[str, object] = {
        "instance": f"b{i}", "name": "eth0", "type": BRIDGED, "host_name": f"{P}v{i}", "parent": f"{P}br",
        "mac": f"02:00:00:bb:{i >> 8:02x}:{i & 255:02x}", "network": "bench", "ipv4": (f"{SUB4}.{10 + i}/24",),
        "ipv6": (f"{SUB6}::{10 + i:x}/64",), "gateway4": f"{SUB4}.1", "gateway6": f"{SUB6}::1"}
    base.update(kw)
    return NicPlan(**base)  # type: ignore[arg-type]


def leftovers() -> list[str]:
    with IPRoute() as ipr:
        return [n for n in (x.get_attr("IFLA_IFNAME") for x in ipr.link("dump")) if n.startswith(P)]


# ---- 1. attach ---------------------------------------------------------------------------------

def bench_attach(n: int) -> dict[str, object]:
    total: list[float] = []
    cpu: list[float] = []
    steps: dict[str, list[float]] = {}
    net = plan_net()
    links.ensure_bridge(net)
    marks: list[tuple[str, float]] = []
    try:
        for _ in range(n):
            ns = Ns()
            nic = plan_nic(1)
            try:
                marks.clear()
                c0 = time.process_time()
                t0 = time.perf_counter()
                links.attach(nic, ns.pid, timing=lambda step: marks.append((step, time.perf_counter())))
                total.append((time.perf_counter() - t0) * 1e3)
                cpu.append((time.process_time() - c0) * 1e3)
                last = t0
                for step, t in marks:
                    steps.setdefault(step, []).append((t - last) * 1e3)
                    last = t
            finally:
                links.detach(nic)
                ns.close()
    finally:
        links.remove_bridge(net)
    return {"runs": n, "median_ms": statistics.median(total), "cpu_median_ms": statistics.median(cpu),
            "min_ms": min(total),
            "p90_ms": sorted(total)[int(0.9 * (n - 1))], "max_ms": max(total),
            "steps_median_ms": {k: round(statistics.median(v), 3) for k, v in steps.items()}}


# ---- 2./3. throughput --------------------------------------------------------------------------

def iperf(client: Ns, server: Ns, address: str, seconds: int) -> float:
    """Gbit/s received by `server` (at `address`) from `client`."""
    srv = server.popen(IPERF, "-s", "-1", "-B", address, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = None
        for _ in range(50):
            r = client.run(IPERF, "-c", address, "-t", str(seconds), "-J", timeout=seconds + 30, check=False)
            out = json.loads(r.stdout or "{}")
            if r.returncode == 0 and "sum_received" in out.get("end", {}):
                return out["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)  # the server was not listening yet
        raise RuntimeError(f"iperf3: {r.stdout[-500:] if r else ''}")
    finally:
        srv.kill()
        srv.wait()


def firewall_class():  # -> type | None
    """THE FIREWALL HOOK: `jaula.network.firewall.Firewall` when that module is there."""
    try:
        from jaula.network.firewall import Firewall
    except ImportError:
        return None
    return Firewall


def bench_throughput(seconds: int, rounds: int) -> dict[str, object]:
    net = plan_net()
    a, b = Ns(), Ns()
    na, nb = plan_nic(1), plan_nic(2)
    Firewall = firewall_class()
    fw = Firewall(table=f"jn{os.getpid()}") if Firewall else None
    loop: list[float] = []
    bridge: list[float] = []
    policed: list[float] = []
    try:
        links.ensure_bridge(net)
        links.attach(na, a.pid)
        links.attach(nb, b.pid)
        b.run("ip", "link", "set", "lo", "up")
        for _ in range(rounds):
            loop.append(iperf(b, b, "127.0.0.1", seconds))
            bridge.append(iperf(a, b, f"{SUB4}.12", seconds))
            if fw is not None:
                fw.ensure_network(net)
                fw.add_nic(net, na)
                fw.add_nic(net, nb)
                policed.append(iperf(a, b, f"{SUB4}.12", seconds))
                fw.destroy()
    finally:
        if fw is not None:
            fw.destroy()
        links.detach(na)
        links.detach(nb)
        links.remove_bridge(net)
        a.close()
        b.close()
    res: dict[str, object] = {
        "loopback_gbit": statistics.median(loop), "bridge_gbit": statistics.median(bridge),
        "bridge_over_loopback": statistics.median(bridge) / statistics.median(loop),
        "loopback_runs": loop, "bridge_runs": bridge}
    if policed:
        res |= {"policed_gbit": statistics.median(policed),
                "policed_over_bridge": statistics.median(policed) / statistics.median(bridge),
                "policed_runs": policed}
    return res


# ---- 4. rate limits ----------------------------------------------------------------------------

def nc_seconds(src: Ns, dst: Ns, address: str, data: Path) -> float:
    out = data.with_suffix(".out")
    with out.open("wb") as sink:
        server = dst.popen(BUSYBOX, "nc", "-l", "-p", "5001", stdin=subprocess.PIPE, stdout=sink)
    try:
        for _ in range(100):
            if any(line.split()[1].endswith(":1389") and line.split()[3] == "0A"
                   for line in Path(f"/proc/{server.pid}/net/tcp").read_text().splitlines()[1:]):
                break
            time.sleep(0.05)
        t0 = time.monotonic()
        with data.open("rb") as f:
            subprocess.run(src.argv(BUSYBOX, "nc", address, "5001"), stdin=f, capture_output=True, timeout=120,
                           check=True)
        server.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdin.close()  # type: ignore[union-attr]
    if out.stat().st_size != data.stat().st_size:
        raise RuntimeError(f"nc delivered {out.stat().st_size} of {data.stat().st_size} bytes")
    out.unlink()
    return took


def bench_rates(kbit: int, size: int = 4_000_000) -> dict[str, object]:
    net = plan_net()
    a, b = Ns(), Ns()
    na, nb = plan_nic(1), plan_nic(2)
    data = Path(f"/tmp/jaula-bench-{os.getpid()}.data")
    data.write_bytes(os.urandom(size))
    res: dict[str, object] = {"limit_kbit": kbit, "bytes": size}
    try:
        links.ensure_bridge(net)
        links.attach(na, a.pid)
        links.attach(nb, b.pid)
        t0 = time.perf_counter()
        tc.set_rate(plan_nic(1, ingress_kbit=kbit, egress_kbit=kbit))
        res["set_rate_ms"] = (time.perf_counter() - t0) * 1e3
        res["into_kbit"] = size * 8 / 1000 / nc_seconds(b, a, f"{SUB4}.11", data)
        res["out_of_kbit"] = size * 8 / 1000 / nc_seconds(a, b, f"{SUB4}.12", data)
        tc.set_rate(plan_nic(1))
        res["unlimited_kbit"] = size * 8 / 1000 / nc_seconds(b, a, f"{SUB4}.11", data)
    finally:
        data.unlink(missing_ok=True)
        links.detach(na)
        links.detach(nb)
        links.remove_bridge(net)
        a.close()
        b.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attach", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=8000)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: attach,throughput,rates")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if "throughput" not in skip and not os.access(IPERF, os.X_OK):
        sys.exit(f"{IPERF} missing: run scripts/setup")
    res: dict[str, object] = {"load": os.getloadavg()[0]}
    if "attach" not in skip:
        res["attach"] = bench_attach(args.attach)
    if "throughput" not in skip:
        res["throughput"] = bench_throughput(args.seconds, args.rounds)
    if "rates" not in skip:
        res["rates"] = bench_rates(args.limit)
    res["leftovers"] = leftovers()
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"load average at start {res['load']:.1f} (2 shared cores: figures move with it)")
    if (at := res.get("attach")) is not None:
        print(f"attach, one bridged NIC into a fresh netns, {at['runs']} runs: median {at['median_ms']:.2f} ms "
              f"(min {at['min_ms']:.2f}, p90 {at['p90_ms']:.2f}, max {at['max_ms']:.2f}); goal < 5 ms")
        print(f"  CPU time (user + kernel, this process) median {at['cpu_median_ms']:.2f} ms: the rest is waiting "
              "for a core")
        print(f"  steps (median ms): {at['steps_median_ms']}")
    if (tp := res.get("throughput")) is not None:
        print(f"iperf3 TCP, {args.rounds} x {args.seconds}s interleaved, medians:")
        print(f"  loopback in one netns   {tp['loopback_gbit']:7.2f} Gbit/s  {[round(x, 2) for x in tp['loopback_runs']]}")
        print(f"  netns -> bridge -> netns {tp['bridge_gbit']:6.2f} Gbit/s  {[round(x, 2) for x in tp['bridge_runs']]}"
              f"  = {tp['bridge_over_loopback']:.0%} of loopback")
        if "policed_gbit" in tp:
            print(f"  same, anti-spoofing on  {tp['policed_gbit']:7.2f} Gbit/s  {[round(x, 2) for x in tp['policed_runs']]}"
                  f"  = {tp['policed_over_bridge']:.0%} of the bare bridge (goal >= 90%)")
        else:
            print("  (jaula.network.firewall missing: no anti-spoofing figure)")
    if (rt := res.get("rates")) is not None:
        print(f"rate limits, {rt['bytes'] / 1e6:.0f} MB with busybox nc through {rt['limit_kbit']} kbit/s each way "
              f"(set_rate {rt['set_rate_ms']:.1f} ms): into the instance {rt['into_kbit']:.0f} kbit/s, "
              f"out of it {rt['out_of_kbit']:.0f} kbit/s; limit removed: {rt['unlimited_kbit']:.0f} kbit/s")
    if res["leftovers"]:
        print(f"LEFT BEHIND: {res['leftovers']}")


if __name__ == "__main__":
    main()
