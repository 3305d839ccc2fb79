#!/usr/bin/python3.11
"""Start-up time of the `jaula` CLI: `jaula --help` and `jaula list` (an idle jaulad with no
instance: the time is the CLI's own), beside the bare interpreter, each a new process as a user
pays it. With `--baseline DIR` (a `src/` tree of another commit, e.g. from
`git archive <commit> src | tar -x -C DIR`), the same commands of that tree in the same run.

Measured on 2026-11-26 (vm, Linux 6.18, 2 cpus shared with other engineers' test runs: load 2 to
3, so minimums say more than medians), `-n 40`, the baseline 2158ee0 in the same run:
                       before (2158ee0)                 after
    python -c pass                                      min  10 ms, median  18 ms
    jaula --help       min 124 ms, median 182 ms        min  52 ms, median  95 ms
    jaula list         min 197 ms, median 254 ms        min 136 ms, median 204 ms
  hyperfine -N (40 runs, same moment): --help 133 ms min, 132 ms user cpu -> 57 ms min, 49 ms
  user; list 192 ms min, 168 ms user -> 162 ms min, 146 ms user.
  What went: httpx and rich for --help (the client is imported when a command first needs
  jaulad), and the cli/ modules' commands for a command of cli/main.py (registered when first
  looked for); httpx's own command-line tool (click, rich's syntax, pygments: ~50 ms) for every
  command (jaula/client/httpx_core.py); the CA bundle loaded into an SSL context for a UNIX
  socket that never uses TLS (~30 ms). What `list` still pays: click (~25 ms), httpx and httpcore
  (~45 ms), rich's console and table (~20 ms).

Then (2026-11-26, load 6.8 on the 2 cpus): the plain JSON calls over the UNIX socket go
through jaula.client.uds_http (socket, json and urllib.parse of the standard library; one
request per connection), and httpx is imported only for streams, uploads, downloads and
remotes. Split of a `jaula list` before that, in one process: click ~45 ms, httpx + httpcore + h11
imports ~60-90 ms, httpx.Client() ~15-35 ms (httpcore imported on first use), the request itself
3-8 ms, rich ~16-35 ms, rendering 3-8 ms. Interleaved, 40 pairs, the same jaulad:
    jaula list   before (HEAD 823eeb0)  min 177.6 ms, median 408.0 ms
                 after                  min  94.0 ms, median 200.7 ms   paired median -190 ms
  What `list` still pays: click and rich (the table); the request is a few ms.

Run as root: `.venv/bin/python bench/cli_startup.py [-n 30] [--baseline DIR]`. It starts its own
jaulad in a temporary folder and removes it at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def _time(argv: list[str], n: int, env: dict[str, str]) -> list[float]:
    out = []
    for _ in range(n + 2):  # two warm-ups
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        out.append(time.perf_counter() - t)
    return out[2:]


def _show(what: str, xs: list[float]) -> None:
    xs = sorted(xs)
    print(f"{what:34} min {xs[0] * 1000:6.1f} ms   median {statistics.median(xs) * 1000:6.1f} ms   "
          f"p90 {xs[int(len(xs) * 0.9) - 1] * 1000:6.1f} ms")


def _launcher(src: Path, where: Path) -> list[str]:
    """A launcher as scripts/setup writes it, over the `src` tree."""
    where.write_text(f"import sys\nsys.path.insert(0, {str(src)!r})\nfrom jaula.cli.main import main\nsys.exit(main())\n")
    return [str(BIN / "python3"), str(where)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=30)
    p.add_argument("--baseline", type=Path, help="a folder holding another commit's src/")
    ns = p.parse_args()
    top = Path(tempfile.mkdtemp(prefix="jaula-bench-cli-"))
    top.chmod(0o711)
    sock = top / "jaula.sock"
    env = dict(os.environ, JAULA_NO_AUTOSTART="1")
    daemon = subprocess.Popen([str(BIN / "jaulad"), "--root", str(top / "root"), "--socket", str(sock)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        trees = [("", REPO / "src")] + ([("baseline ", ns.baseline / "src")] if ns.baseline else [])
        clis = {label: _launcher(src, top / f"jaula{i}.py") for i, (label, src) in enumerate(trees)}
        deadline = time.monotonic() + 30
        while subprocess.run([*clis[""], "--socket", str(sock), "list"], env=env, capture_output=True,
                             check=False).returncode:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("jaulad did not answer")
            time.sleep(0.2)
        _show("python -c pass", _time([str(BIN / "python3"), "-c", "pass"], ns.n, env))
        for label, cli in clis.items():
            _show(f"{label}jaula --help", _time([*cli, "--help"], ns.n, env))
            _show(f"{label}jaula list", _time([*cli, "--socket", str(sock), "list"], ns.n, env))
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
