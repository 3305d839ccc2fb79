#!/usr/bin/python3.11
"""Network figures of jaula's interfaces (`jaula.network.links`, `jaula.network.tc`).

1. `attach` of one BRIDGED NIC (veth born in the netns, MAC, MTU, IPv4 + IPv6, lo, default
   routes) into a fresh netns: median and spread of `--attach N` (default 50), with its steps.
   Issue 5's goal: a NIC adds < 5 ms to a start.
2. iperf3 TCP throughput: loopback inside one netns; instance to instance (two netns over veth +
   bridge, made by `links`); host to instance (from the bridge's address); each bare and with the
   firewall (`jaula.network.firewall`: network ensured, both NICs added, a port forward), the two
   in turns within each round; the forward from the host's 127.0.0.1 (DNAT + masquerade). Medians,
   ratios to loopback, and the firewall/bare ratio paired by round (issue 5's goal: >= 90%).
   `--pin`: iperf3's client on cpu 0 and server on cpu 1.
3. Latency: TCP request-response round trips (1 byte, `--rr` per sample, first and last round)
   on the same paths: median and p99. `bench/network_firewall.py` looks at the rules in depth.
4. The rate limits: 4 MB pushed through a limit of `--limit` kbit/s each way, the observed rate.
Prints figures, asserts nothing. Run as root:
  .venv/bin/python bench/network.py [--attach 50] [--seconds 3] [--rounds 6] [--pin] [--rr 2000]
                                    [--limit 8000] [--skip attach,throughput,rates] [--json]
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


# ---- 2./3. throughput and latency ---------------------------------------------------------------

class Host:
    """The host's own namespace, spoken to like an `Ns`."""

    pid = os.getpid()

    def argv(self, *args: str) -> list[str]:
        return list(args)

    def run(self, *args: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check)

    def popen(self, *args: str, **kw: object) -> subprocess.Popen:
        return subprocess.Popen(list(args), **kw)  # type: ignore[call-overload]


def iperf(client: Ns | Host, server: Ns | Host, address: str, seconds: int, port: int | None = None,
          bind: str | None = None, pin: bool = False) -> tuple[float, float]:
    """Gbit/s received by `server` (listening on `bind`, default `address`) from `client`, which
    connects to `address` (and `port`: a port forward's; default the server's 5201), and Gbit per
    CPU-second that client and server used (iperf3's rusage, user + system: the network stack's
    work on a veth runs mostly in their context), a figure that moves less with the host's load
    than the throughput, which follows the share of the cores the two get. `pin`: the client on
    cpu 0, the server on cpu 1 (iperf3 -A)."""
    srv = server.popen(IPERF, "-s", "-1", "-B", bind or address, *(["-A", "1"] if pin else []),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = None
        for _ in range(50):
            r = client.run(IPERF, "-c", address, "-t", str(seconds), "-J", *(["-p", str(port)] if port else []),
                           *(["-A", "0"] if pin else []), timeout=seconds + 30, check=False)
            out = json.loads(r.stdout or "{}")
            if r.returncode == 0 and "sum_received" in out.get("end", {}):
                gbit = out["end"]["sum_received"]["bits_per_second"] / 1e9
                cpu = out["end"].get("cpu_utilization_percent", {})
                busy = (cpu.get("host_total", 0) + cpu.get("remote_total", 0)) / 100
                return gbit, (gbit / busy if busy > 0 else float("nan"))
            time.sleep(0.1)  # the server was not listening yet
        raise RuntimeError(f"iperf3: {r.stdout[-500:] if r else ''}")
    finally:
        srv.kill()
        srv.wait()


RR_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while (b := c.recv(64)):
    c.sendall(b)
"""
RR_CLIENT = """
import json, socket, sys, time
n = int(sys.argv[3])
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = []
for i in range(n + 50):
    t = time.perf_counter_ns(); c.sendall(b"x"); c.recv(64)
    if i >= 50:     # the first ones warm the caches and the neighbour entry
        out.append(time.perf_counter_ns() - t)
print(json.dumps(out))
"""


def tcp_rr(client: Ns | Host, server: Ns | Host, address: str, n: int, port: int = 5301,
           bind: str | None = None, pin: bool = False) -> list[float]:
    """Round trips (us) of one byte over one TCP connection, `n` times: a request-response latency
    (Python on both ends: ~10-20 us of it is the interpreter's, the same on every path)."""
    taskset = ["taskset", "-c"]
    srv = server.popen(*(taskset + ["1"] if pin else []), sys.executable, "-c", RR_SERVER, bind or address,
                       "5301", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if srv.stdout is None or srv.stdout.readline().strip() != "ready":
            raise RuntimeError("tcp_rr server did not start")
        r = client.run(*(taskset + ["0"] if pin else []), sys.executable, "-c", RR_CLIENT, address, str(port),
                       str(n), timeout=120)
        return [x / 1e3 for x in json.loads(r.stdout)]
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


def _p(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _frames(ifname: str) -> tuple[int, int]:
    """Frames and bytes the host end of a veth received (what its instance sent into the bridge)."""
    base = f"/sys/class/net/{ifname}/statistics"
    return int(Path(f"{base}/rx_packets").read_text()), int(Path(f"{base}/rx_bytes").read_text())


def bench_throughput(seconds: int, rounds: int, pin: bool = False, rr: int = 2000) -> dict[str, object]:
    """Rounds of: the same paths bare (no jaula tables) and with the firewall (network ensured,
    both NICs added, a port forward to b), the two in turns (bare first in even rounds, second in
    odd ones), each round's policed/bare ratio paired. Paths: loopback in b's netns; a -> b
    (instance to instance over veth + bridge + veth); host -> b (from the bridge's address);
    with the firewall, host 127.0.0.1:port -> b (the port forward: DNAT, masquerade)."""
    from jaula.network.plan import PortForward

    net = plan_net()
    a, b, host = Ns(), Ns(), Host()
    na, nb = plan_nic(1), plan_nic(2)
    Firewall = firewall_class()
    fw = Firewall(table=f"jn{os.getpid()}") if Firewall else None
    ip_b = f"{SUB4}.12"
    fport = 30000 + os.getpid() % 20000
    fwd = PortForward(instance="b2", proto="tcp", host_port=fport, address=ip_b, port=5201)
    runs: dict[str, list[float]] = {}
    eff: dict[str, list[float]] = {}
    lat: dict[str, list[float]] = {}
    frames: dict[str, list[tuple[float, float]]] = {}

    def keep(key: str, got: tuple[float, float]) -> None:
        runs.setdefault(key, []).append(got[0])
        eff.setdefault(key, []).append(got[1])

    def police(on: bool) -> None:
        if fw is None:
            return
        if not on:
            fw.destroy()
            return
        fw.ensure_network(net)
        fw.add_nic(net, na)
        fw.add_nic(net, nb)
        fw.add_forward(fwd)

    try:
        links.ensure_bridge(net)
        links.attach(na, a.pid)
        links.attach(nb, b.pid)
        b.run("ip", "link", "set", "lo", "up")
        for i in range(rounds):
            modes = [False, True] if fw is not None else [False]
            for policed in (modes if i % 2 == 0 else modes[::-1]):
                police(policed)
                tag = "rules" if policed else "bare"
                if not policed:
                    keep("loopback", iperf(b, b, "127.0.0.1", seconds, pin=pin))
                f0 = _frames(na.host_name)
                t0 = time.monotonic()
                keep(f"i2i_{tag}", iperf(a, b, ip_b, seconds, pin=pin))
                f1, took = _frames(na.host_name), time.monotonic() - t0
                frames.setdefault(tag, []).append(((f1[0] - f0[0]) / took, (f1[1] - f0[1]) / max(1, f1[0] - f0[0])))
                keep(f"h2i_{tag}", iperf(host, b, ip_b, seconds, pin=pin))
                if policed:
                    keep("fwd_rules", iperf(host, b, "127.0.0.1", seconds, port=fport, bind=ip_b, pin=pin))
                if rr and i == 0 or rr and i == rounds - 1:   # latency in the first and last round
                    if not policed:
                        lat.setdefault("loopback", []).extend(tcp_rr(b, b, "127.0.0.1", rr, pin=pin))
                    lat.setdefault(f"i2i_{tag}", []).extend(tcp_rr(a, b, ip_b, rr, pin=pin))
                    lat.setdefault(f"h2i_{tag}", []).extend(tcp_rr(host, b, ip_b, rr, pin=pin))
    finally:
        if fw is not None:
            fw.destroy()
        links.detach(na)
        links.detach(nb)
        links.remove_bridge(net)
        a.close()
        b.close()
    med = {k: statistics.median(v) for k, v in runs.items()}
    res: dict[str, object] = {"pinned": pin, "runs_gbit": runs, "median_gbit": med,
                              "runs_gbit_per_cpu_s": eff,
                              "median_gbit_per_cpu_s": {k: statistics.median(v) for k, v in eff.items()},
                              "bridge_over_loopback": med["i2i_bare"] / med["loopback"],
                              "host_over_loopback": med["h2i_bare"] / med["loopback"]}
    if fw is not None:
        pairs = {p: [r / b_ for r, b_ in zip(runs[f"{p}_rules"], runs[f"{p}_bare"])] for p in ("i2i", "h2i")}
        epairs = {p: [r / b_ for r, b_ in zip(eff[f"{p}_rules"], eff[f"{p}_bare"])] for p in ("i2i", "h2i")}
        res |= {"paired_ratio_runs": pairs,
                "paired_ratio_median": {p: statistics.median(v) for p, v in pairs.items()},
                "paired_cpu_ratio_runs": epairs,
                "paired_cpu_ratio_median": {p: statistics.median(v) for p, v in epairs.items()},
                "fwd_over_h2i_bare": med["fwd_rules"] / med["h2i_bare"]}
    res["i2i_frames"] = {t: {"per_s": statistics.median(x[0] for x in v), "bytes_each": statistics.median(x[1] for x in v)}
                         for t, v in frames.items()}
    if lat:
        res["latency_us"] = {k: {"median": statistics.median(v), "p99": _p(v, 0.99), "n": len(v)}
                             for k, v in lat.items()}
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
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--limit", type=int, default=8000)
    ap.add_argument("--pin", action="store_true", help="iperf3 and the latency probe: client on cpu 0, server on cpu 1")
    ap.add_argument("--rr", type=int, default=2000, help="request-response round trips per latency sample (0: none)")
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
        res["throughput"] = bench_throughput(args.seconds, args.rounds, args.pin, args.rr)
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
        med, runs = tp["median_gbit"], tp["runs_gbit"]
        print(f"iperf3 TCP, {args.rounds} rounds x {args.seconds}s, bare and with the firewall in turns, medians"
              f"{' (client pinned to cpu 0, server to cpu 1)' if tp['pinned'] else ''}:")
        rows = [("loopback", "loopback in one netns"), ("i2i_bare", "instance -> instance, bare"),
                ("i2i_rules", "instance -> instance, firewall"), ("h2i_bare", "host -> instance, bare"),
                ("h2i_rules", "host -> instance, firewall"), ("fwd_rules", "host 127.0.0.1 -> forward -> inst.")]
        effm = tp["median_gbit_per_cpu_s"]
        for key, label in rows:
            if key in med:
                print(f"  {label:34s} {med[key]:6.2f} Gbit/s = {med[key] / med['loopback']:4.0%} of loopback  "
                      f"{[round(x, 2) for x in runs[key]]}; {effm[key]:5.2f} Gbit per CPU-second "
                      f"= {effm[key] / effm['loopback']:4.0%}")
        if "paired_ratio_median" in tp:
            for p, label in (("i2i", "instance -> instance"), ("h2i", "host -> instance")):
                v, e = tp["paired_ratio_runs"][p], tp["paired_cpu_ratio_runs"][p]
                print(f"  {label}: firewall / bare, paired by round: throughput median "
                      f"{tp['paired_ratio_median'][p]:.0%} (min {min(v):.0%}, max {max(v):.0%}); per CPU-second "
                      f"{tp['paired_cpu_ratio_median'][p]:.0%} (min {min(e):.0%}, max {max(e):.0%})"
                      f"{'  goal >= 90%' if p == 'i2i' else ''}")
            print(f"  forward from 127.0.0.1 / host -> instance bare: {tp['fwd_over_h2i_bare']:.0%}")
        else:
            print("  (jaula.network.firewall missing: no firewall figures)")
        for t, v in tp["i2i_frames"].items():
            print(f"  instance -> instance {t}: {v['per_s']:,.0f} frames/s into the bridge (each through the "
                  f"anti-spoofing lookups when policed), {v['bytes_each']:,.0f} bytes each (GSO: the rules see "
                  f"one frame per segment batch)")
        if (lt := tp.get("latency_us")) is not None:
            print("TCP request-response, 1 byte each way (Python both ends), us:")
            for key, label in rows:
                if key in lt:
                    print(f"  {label:34s} median {lt[key]['median']:6.1f}  p99 {lt[key]['p99']:6.1f}  "
                          f"(n {lt[key]['n']})")
    if (rt := res.get("rates")) is not None:
        print(f"rate limits, {rt['bytes'] / 1e6:.0f} MB with busybox nc through {rt['limit_kbit']} kbit/s each way "
              f"(set_rate {rt['set_rate_ms']:.1f} ms): into the instance {rt['into_kbit']:.0f} kbit/s, "
              f"out of it {rt['out_of_kbit']:.0f} kbit/s; limit removed: {rt['unlimited_kbit']:.0f} kbit/s")
    if res["leftovers"]:
        print(f"LEFT BEHIND: {res['leftovers']}")


if __name__ == "__main__":
    main()
