"""What a system instance's pty console adds to its start: the container driver's `start` of one
busybox system instance, interleaved with and without the console keeper (a real keeper process,
as jaulad runs it), paired medians. Run as root:

    .venv/bin/python bench/console_start.py [-n 40]

With the keeper, the start also makes the pty in the instance (jaula.oci's init: /dev/ptmx,
the slave bound on /dev/console), receives its master from the runtime and hands it, the log's
fd and a pidfd of the init to the keeper; without, the init's output goes straight to its log.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=40, help="pairs of starts")
    ns = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    from jaula.instances import console_pty
    from jaula.instances.container import ContainerDriver
    from jaula.instances.model import Instance
    from jaula.storage import TemplateStore
    from jaula.storage.pool import open_pool

    top = Path(tempfile.mkdtemp(prefix="jaula-console-bench-"))
    top.chmod(0o711)
    keeper = None
    try:
        store = TemplateStore(root=top / "templates", cache=top / "cache")
        store.build("bb", "busybox")
        sock = str(top / console_pty.SOCKET_NAME)
        keeper = subprocess.Popen([sys.executable, "-m", "jaula.daemon.console_keeper", "--root", str(top)],
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                console_pty.connect(sock).close()
                break
            except OSError:
                assert time.monotonic() < deadline and keeper.poll() is None, "the keeper did not start"
                time.sleep(0.01)
        drv = ContainerDriver(str(top / "run"), open_pool("dir", str(top / "pool")), store, cgroup_parent="jaula-cbench",
                              console_keeper=sock)  # as jaulad's spawner builds it (its imports made once)
        inst = Instance.new("cbench", "bb", idmap_base=1 << 22, config={"nic.eth0.type": "none"})
        drv.create(inst)
        times: dict[bool, list[float]] = {True: [], False: []}
        try:
            for i in range(ns.n * 2 + 2):
                with_console = i % 2 == 0
                drv.console_keeper = sock if with_console else None
                t0 = time.perf_counter()
                drv.start(inst)
                dt = (time.perf_counter() - t0) * 1000
                drv.stop(inst, force=True)
                if i >= 2:  # warm-up
                    times[with_console].append(dt)
        finally:
            drv.delete(inst)
        pairs = [a - b for a, b in zip(times[True], times[False])]
        print(f"# {ns.n} pairs, load {os.getloadavg()[0]:.1f} ({os.cpu_count()} cpus); driver start, medians")
        print(f"with the console keeper (pty console)   {statistics.median(times[True]):.2f} ms")
        print(f"without (output straight into the log)  {statistics.median(times[False]):.2f} ms")
        print(f"paired median difference                {statistics.median(pairs):+.2f} ms")
        return 0
    finally:
        if keeper is not None:
            keeper.terminate()
            keeper.wait(10)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
