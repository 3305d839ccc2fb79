#!/usr/bin/python3.11
"""How long a running instance is held still, and how long its copies take, on a `dir` pool.

A busybox system instance (the container driver, as jaulad runs it) gets `--mib` MiB of its own
data in its root (files of 1 MiB of random bytes), then, `--iterations` times each, medians:
  snapshot   driver.snapshot of the running instance; "frozen" is the time its cgroup was
             frozen (the copy of its layer), taken from the freezer's own calls
  copy       driver.copy of the running instance to a new one (a clone + its hostname written)
  export     driver.export to a .tar.gz (frozen while its layer is cloned) and its size
  import     driver.import_ of that file as a new instance (the archive checked first)
Run as root: .venv/bin/python bench/snapshots.py [--mib 100] [--iterations 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from jaula.instances.container import ContainerDriver
from jaula.instances.model import Instance
from jaula.oci import lifecycle
from jaula.storage import TemplateStore
from jaula.storage.pool import open_pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="jaula-bench-snap-", dir=args.dir)
    os.chmod(top, 0o711)
    frozen: list[float] = []
    pause, resume = lifecycle.pause, lifecycle.resume
    since = [0.0]

    def timed_pause(c):  # type: ignore[no-untyped-def]
        pause(c)
        since[0] = time.perf_counter()

    def timed_resume(c):  # type: ignore[no-untyped-def]
        frozen.append(time.perf_counter() - since[0])
        resume(c)

    lifecycle.pause, lifecycle.resume = timed_pause, timed_resume
    made: list[Instance] = []
    driver = None
    try:
        store = TemplateStore(root=os.path.join(top, "templates"), cache=os.path.join(top, "cache"))
        store.build("bb", "busybox")
        driver = ContainerDriver(os.path.join(top, "run"), open_pool("dir", os.path.join(top, "pool")), store)

        def new(n: int) -> Instance:
            inst = Instance.new(f"b{n}", "bb", idmap_base=3000000 + n * 65536)
            made.append(inst)
            return inst

        src = new(0)
        driver.create(src)
        driver.start(src)
        data = os.path.join(driver.bundle(src.name), "rootfs", "root", "data")
        os.makedirs(data)
        for i in range(args.mib):
            with open(os.path.join(data, f"f{i}"), "wb") as f:
                f.write(os.urandom(1 << 20))
        times: dict[str, list[float]] = {"snapshot": [], "copy": [], "export": [], "import": []}
        sizes: list[int] = []
        n = 1
        for i in range(args.iterations):
            t = time.perf_counter()
            driver.snapshot(src, f"s{i}")
            times["snapshot"].append(time.perf_counter() - t)
            t = time.perf_counter()
            driver.copy(new(n), src.name)
            times["copy"].append(time.perf_counter() - t)
            path = os.path.join(top, f"b{i}.tar.gz")
            t = time.perf_counter()
            driver.export(src, path, {})
            times["export"].append(time.perf_counter() - t)
            sizes.append(os.path.getsize(path))
            t = time.perf_counter()
            driver.import_(new(n + 1), path)
            times["import"].append(time.perf_counter() - t)
            os.unlink(path)
            n += 2
        print(f"instance data: {args.mib} MiB of its own, dir pool, {args.iterations} iterations (medians)")
        for what, values in times.items():
            print(f"  {what:9} {statistics.median(values) * 1000:8.0f} ms")
        # snapshot, copy and export each freeze the running instance once, in this order
        print("  frozen during: " + ", ".join(f"{what} {statistics.median(frozen[k::3]) * 1000:.0f} ms"
                                               for k, what in enumerate(("snapshot", "copy", "export"))))
        print(f"  export size {statistics.median(sizes) / (1 << 20):.1f} MiB (.tar.gz of random data)")
    finally:
        lifecycle.pause, lifecycle.resume = pause, resume
        if driver is not None:
            for k, inst in enumerate(made):
                verbs = ((lambda i: driver.stop(i, force=True)),) if k == 0 else ()  # only b0 runs
                for verb in (*verbs, driver.delete):
                    try:
                        verb(inst)
                    except Exception as e:  # noqa: BLE001 - reported, the rest still cleaned
                        print(f"cleanup of {inst.name}: {e}", file=sys.stderr)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
