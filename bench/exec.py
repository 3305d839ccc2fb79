#!/usr/bin/python3.11
"""Commands and files inside an instance through a real jaulad: `true` run through the API
(POST /exec, its websocket, the exit code), without and with a pty, beside `jaula-runtime exec`
of the same container (a new interpreter each time, as a CLI pays) and the `jaula exec` CLI; file
push and pull throughput.

Measured on 2026-11-26 (vm, Linux 6.18, 2 cpus shared with other engineers' test runs, so
loaded; jaulad in the repo's .venv), `-n 30`, medians (p90):
    API exec true             90 ms (126)   POST -> websocket -> exit frame, python client in-process
    API exec -t true          82 ms (124)   with a pty from the instance's devpts
    jaula-runtime exec true   92 ms (124)   the OCI CLI on the same container (a new interpreter)
    jaula exec CLI           894 ms         (`jaula list` took 760 ms at the same time: the CLI's
                                             interpreter start-up dominates under this load)
    push 32 MiB  30 MiB/s   pull 32 MiB  83 MiB/s   (a running busybox instance, dir pool)
  An earlier run on a quieter machine: API exec 46 ms (pty 62), CLI 615 ms, push 66 MiB/s, pull
  160 MiB/s.

Run as root: `.venv/bin/python bench/exec.py [-n 30]`. It starts its own jaulad in a temporary
folder and removes everything it made (the instance, the daemon, the folder) at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1000:7.1f} ms   p90 {xs[int(len(xs) * 0.9) - 1] * 1000:7.1f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=30, help="iterations of each measure")
    ns = p.parse_args()
    if os.geteuid() != 0:
        print("bench/exec.py: run as root", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    from jaula.client import Client
    from jaula.client.stream import relay

    top = Path(tempfile.mkdtemp(prefix="jaula-bench-exec-"))
    top.chmod(0o711)
    sock, root, name = top / "s.sock", top / "root", f"bx{os.getpid()}"
    log = open(top / "jaulad.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen([str(BIN / "jaulad"), "--root", str(root), "--socket", str(sock)], stdout=log, stderr=log)
    client = None
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        client = Client(str(sock), timeout=300)
        for _ in range(100):
            try:
                client.list()
                break
            except Exception:  # noqa: BLE001 - not answering yet
                time.sleep(0.1)
        client.create("busybox", name)
        client.start(name)
        null = os.open(os.devnull, os.O_RDWR)

        def api(tty: bool) -> float:
            t = time.perf_counter()
            op = client.exec(name, ["true"], interactive=tty)
            code = relay(client.attach(op), tty=tty, stdin=null, stdout=null, stderr=null, forward_signals=False)
            assert code == 0, code
            return time.perf_counter() - t

        def runtime() -> float:
            t = time.perf_counter()
            subprocess.run([str(BIN / "jaula-runtime"), "--root", str(root / "instances" / "runtime"), "exec", name,
                            "true"], check=True, stdin=subprocess.DEVNULL)
            return time.perf_counter() - t

        def cli() -> float:
            t = time.perf_counter()
            subprocess.run([str(BIN / "jaula"), "--socket", str(sock), "exec", name, "--", "true"], check=True,
                           stdin=subprocess.DEVNULL)
            return time.perf_counter() - t

        runs: dict[str, list[float]] = {"API exec true": [], "API exec -t true": [], "jaula-runtime exec true": [],
                                        "jaula exec CLI": []}
        for f in (lambda: api(False), lambda: api(True), runtime, cli):  # warm up
            f()
        for i in range(ns.n):  # interleaved
            runs["API exec true"].append(api(False))
            runs["API exec -t true"].append(api(True))
            runs["jaula-runtime exec true"].append(runtime())
            if i < max(5, ns.n // 3):
                runs["jaula exec CLI"].append(cli())
        for what, xs in runs.items():
            print(f"{what:26s} {_ms(xs)}   (n={len(xs)})")
        blob = os.urandom(1 << 20) * 32
        push, pull = [], []
        for _ in range(5):
            t = time.perf_counter()
            client.push_file(name, "/root/blob", blob)
            push.append(time.perf_counter() - t)
            t = time.perf_counter()
            _, got = client.pull_file(name, "/root/blob")
            pull.append(time.perf_counter() - t)
            assert got == blob
        print(f"push 32 MiB: {32 / statistics.median(push):6.0f} MiB/s   pull 32 MiB: {32 / statistics.median(pull):6.0f} MiB/s")
    finally:
        if client is not None:
            try:
                client.delete(name, force=True)
            except Exception as exc:  # noqa: BLE001
                print(f"cleanup: {exc}", file=sys.stderr)
            client.close()
        daemon.terminate()
        daemon.wait(30)
        log.close()
        subprocess.run(["rm", "-rf", str(top)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
