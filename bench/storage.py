#!/usr/bin/python3.11
"""Clone time and disk used for a 300 MB template: each pool backend against a full copy (cp -a).

The template really holds 300 MB (30 files of 10 MB of random bytes), written once per run.
Per method, `--iterations` fresh clones, each into a new name:
  dir         create_volume on a dir pool (overlayfs: an empty upper folder)
  dir clone   clone of a dir volume that has 1 MiB of its own data
  loop        create_volume on a loop pool (a 1 GiB sparse ext4 image, mkfs'd)
  btrfs       create_volume on a btrfs pool (a subvolume snapshot), on a btrfs made in a sparse
              image on a loop device; the one-time import of the template is shown apart
  cp -a       a full copy of the template, the baseline
Disk used is `du -s --block-size=1` of the new volume's folder (btrfs: the subvolume's exclusive
bytes, since du counts shared extents in full). Also timed: mount + unmount of a dir and a loop
volume. Medians; the page cache is warm (the template was just written). Run as root:
  .venv/bin/python bench/storage.py [--iterations 5] [--dir /var/tmp] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from jaula.linux import loop
from jaula.linux import mount as m
from jaula.storage.pool import Pool, open_pool

MiB = 1 << 20


def du(path: str) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_template(path: str) -> None:
    os.makedirs(os.path.join(path, "data"))
    for i in range(30):
        with open(os.path.join(path, "data", f"blob{i:02}"), "wb") as f:
            f.write(os.urandom(10 * MiB))
    os.sync()


def bench_pool(pool: Pool, template: str, n: int, size: int | None, disk: Callable[[str], int]) -> dict:
    times, used = [], []
    for i in range(n):
        name = f"v{i}"
        times.append(timed(lambda name=name: pool.create_volume(name, template, size=size)))
        used.append(disk(name))
    return {"ms": statistics.median(times) * 1000, "bytes": statistics.median(used)}


def bench_mount(pool: Pool, name: str, target: str, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        pool.mount(name, target)
        pool.unmount(name)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def btrfs_available() -> str | None:
    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read().split():
            return "no btrfs in this kernel"
    if shutil.which("mkfs.btrfs") is None:
        return "mkfs.btrfs missing (btrfs-progs)"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--dir", default="/var/tmp", help="where to work (needs ~1 GB free)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/storage.py: run as root (it mounts)")
    n = args.iterations
    rows: dict[str, dict] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="jaula-bench-storage-", dir=args.dir) as work:
        template = os.path.join(work, "template")
        make_template(template)
        tsize = du(template)
        target = os.path.join(work, "target")
        os.mkdir(target)
        btrfs_mnt = None
        try:
            pool = open_pool("dir", os.path.join(work, "dir"))
            rows["dir"] = bench_pool(pool, template, n, None, lambda v: du(pool.vdir(v)))
            with open(os.path.join(pool.vdir("v0"), "upper", "own"), "wb") as f:
                f.write(os.urandom(MiB))
            times = [timed(lambda i=i: pool.clone("v0", f"c{i}")) for i in range(n)]
            rows["dir clone"] = {"ms": statistics.median(times) * 1000, "bytes": du(pool.vdir("c0"))}
            rows["dir"]["mount_ms"] = bench_mount(pool, "v1", target, n)

            lpool = open_pool("loop", os.path.join(work, "loop"))
            rows["loop"] = bench_pool(lpool, template, n, 1 << 30, lambda v: du(lpool.vdir(v)))
            rows["loop"]["mount_ms"] = bench_mount(lpool, "v1", target, n)

            if why := btrfs_available():
                notes.append(f"btrfs skipped: {why}")
            else:
                image = os.path.join(work, "btrfs.img")
                with open(image, "wb") as f:
                    f.truncate(2 << 30)
                subprocess.run(["mkfs.btrfs", "-q", "-f", image], check=True, capture_output=True)
                btrfs_mnt = os.path.join(work, "btrfs")
                os.mkdir(btrfs_mnt)
                dev, fd = loop.attach(image)
                try:
                    m.mount(dev, btrfs_mnt, "btrfs")
                finally:
                    os.close(fd)
                bpool = open_pool("btrfs", os.path.join(btrfs_mnt, "pool"))
                imp = timed(lambda: bpool.template_subvolume(os.path.realpath(template)))
                notes.append(f"btrfs: the one-time import of the template into the pool took {imp * 1000:.0f} ms")
                rows["btrfs"] = bench_pool(bpool, template, n, None, lambda v: bpool.usage(v))

            copies = []
            for i in range(max(1, min(n, 3))):
                dst = os.path.join(work, f"copy{i}")
                copies.append(timed(lambda dst=dst: subprocess.run(["cp", "-a", template, dst], check=True)))
            rows["cp -a"] = {"ms": statistics.median(copies) * 1000, "bytes": du(os.path.join(work, "copy0"))}
        finally:
            for p in (target, btrfs_mnt):
                if p and os.path.ismount(p):
                    m.umount2(p, m.MNT_DETACH)

    base = rows["cp -a"]
    if args.json:
        print(json.dumps({"template_bytes": tsize, "iterations": n, "rows": rows, "notes": notes}, indent=1))
        return 0
    print(f"template: {tsize / 1e6:.0f} MB in 30 files; {n} iterations, medians; warm page cache")
    print(f"{'method':<10} {'clone ms':>10} {'disk used':>12} {'time vs cp -a':>14} {'disk vs cp -a':>14} {'mount+umount ms':>16}")
    for name, r in rows.items():
        mount = f"{r['mount_ms']:.2f}" if "mount_ms" in r else ""
        print(f"{name:<10} {r['ms']:>10.2f} {r['bytes'] / 1024:>10.0f} K {r['ms'] / base['ms']:>14.4f} "
              f"{r['bytes'] / base['bytes']:>14.6f} {mount:>16}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
