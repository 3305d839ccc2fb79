"""What security.syscalls.intercept.sysinfo costs: (1) the container driver's start of one busybox
system instance with the NOTIFY rule and the listener hand-off against one without, interleaved,
both with a real console keeper, paired medians; (2) one sysinfo(2) answered by the keeper
against the kernel's, from a process in a 256 MiB memory cgroup (v1); (3) the keeper's memory
with M app instances holding a listener each against none. Run as root:

    .venv/bin/python bench/sysinfo.py [-n 20] [-m 20] [-c 2000]
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

CALLER = r"""
import ctypes, os, sys, time
from jaula.linux import proc
from jaula.oci import seccomp
from jaula.oci.seccomp_profile import default_profile, notify_sysinfo

mem, agent, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(f"{mem}/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
buf = ctypes.create_string_buffer(112)
libc = ctypes.CDLL(None, use_errno=True)
def loop():
    t0 = time.perf_counter()
    for _ in range(n):
        libc.sysinfo(buf)
    return (time.perf_counter() - t0) / n * 1e6
prof = default_profile()
proc.set_no_new_privs()
if agent != "-":
    notify_sysinfo(prof, agent, "bench")
    fd = seccomp.install(seccomp.Seccomp.from_json(prof))
    seccomp.send_to_listener(agent, fd, {"id": "bench", "pid": os.getpid(), "status": "creating"}, "bench")
    os.close(fd)
else:
    seccomp.install(seccomp.Seccomp.from_json(prof))
print(f"{loop():.1f}")
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="pairs of starts")
    ap.add_argument("-m", type=int, default=20, help="instances for the keeper's memory")
    ap.add_argument("-c", type=int, default=2000, help="sysinfo calls per timing")
    ns = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    from jaula.instances import console_pty
    from jaula.instances.container import ContainerDriver
    from jaula.instances.model import Instance
    from jaula.storage import TemplateStore
    from jaula.storage.pool import open_pool

    top = Path(tempfile.mkdtemp(prefix="jaula-sysinfo-bench-"))
    top.chmod(0o711)
    keeper = None
    cg = None
    try:
        store = TemplateStore(root=top / "templates", cache=top / "cache")
        store.build("bb", "busybox")
        sock = str(top / console_pty.SOCKET_NAME)
        agent = str(top / console_pty.AGENT_SOCKET)
        keeper = subprocess.Popen([sys.executable, "-m", "jaula.daemon.console_keeper", "--root", str(top)],
                                  stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                console_pty.connect(sock).close()
                break
            except OSError:
                assert time.monotonic() < deadline and keeper.poll() is None, "the keeper did not start"
                time.sleep(0.01)
        drv = ContainerDriver(str(top / "run"), open_pool("dir", str(top / "pool")), store, cgroup_parent="jaula-sbench",
                              console_keeper=sock)
        on = Instance.new("son", "bb", idmap_base=1 << 22, config={"nic.eth0.type": "none", "limits.memory": "256MiB"})
        off = Instance.new("soff", "bb", idmap_base=(1 << 22) + 65536,
                           config={"nic.eth0.type": "none", "limits.memory": "256MiB",
                                   "security.syscalls.intercept.sysinfo": False})
        drv.create(on)
        drv.create(off)
        times: dict[bool, list[float]] = {True: [], False: []}
        try:
            for i in range(ns.n * 2 + 2):
                inst = on if i % 2 == 0 else off
                t0 = time.perf_counter()
                drv.start(inst)
                dt = (time.perf_counter() - t0) * 1000
                drv.stop(inst, force=True)
                if i >= 2:
                    times[inst is on].append(dt)
            pairs = [a - b for a, b in zip(times[True], times[False])]
            print(f"# {ns.n} pairs, load {os.getloadavg()[0]:.1f} ({os.cpu_count()} cpus); driver start, medians")
            print(f"with the sysinfo rule and listener      {statistics.median(times[True]):.2f} ms")
            print(f"without                                 {statistics.median(times[False]):.2f} ms")
            print(f"paired median difference                {statistics.median(pairs):+.2f} ms")
            # an exec'd process hands its listener on too: the driver's exec of `true`, both running
            drv.start(on)
            drv.start(off)
            ex: dict[bool, list[float]] = {True: [], False: []}
            for i in range(ns.n * 2 + 2):
                inst = on if i % 2 == 0 else off
                t0 = time.perf_counter()
                code = drv.exec(inst, ["/bin/true"])
                dt = (time.perf_counter() - t0) * 1000
                assert code == 0
                if i >= 2:
                    ex[inst is on].append(dt)
            drv.stop(on, force=True)
            drv.stop(off, force=True)
            pairs = [a - b for a, b in zip(ex[True], ex[False])]
            print(f"# driver exec of /bin/true, {ns.n} pairs, load {os.getloadavg()[0]:.1f}, medians")
            print(f"with the listener hand-off              {statistics.median(ex[True]):.2f} ms")
            print(f"without                                 {statistics.median(ex[False]):.2f} ms")
            print(f"paired median difference                {statistics.median(pairs):+.2f} ms")
        finally:
            drv.delete(on)
            drv.delete(off)

        # (2) one call: the keeper's answer against the kernel's
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mine = {c: p for _, cs, p in (ln.split(":", 2) for ln in lines) for c in cs.split(",")}
        cg = f"/sys/fs/cgroup/memory{mine['memory'].rstrip('/')}/jaula-sysinfo-bench-{os.getpid()}"
        os.mkdir(cg)
        Path(cg, "memory.limit_in_bytes").write_text(str(256 << 20))
        repo = str(Path(__file__).resolve().parents[1])
        us = {}
        for label, path in (("kernel (filter, no rule)", "-"), ("the keeper (NOTIFY)", agent)):
            r = subprocess.run([sys.executable, "-c", CALLER, cg, path, str(ns.c)], capture_output=True, text=True,
                               cwd=repo, check=True, timeout=300)
            us[label] = float(r.stdout.strip())
        print(f"# one sysinfo(2), mean of {ns.c}, load {os.getloadavg()[0]:.1f}")
        for label, v in us.items():
            print(f"answered by {label:26s} {v:8.1f} us")

        # (3) the keeper's memory with M listeners
        time.sleep(0.5)
        before = rss_kib(keeper.pid)
        apps = [Instance.new(f"sm{i}", "bb", idmap_base=(1 << 23) + i * 65536, mode="app", command=["/bin/sleep", "600"],
                             config={"nic.eth0.type": "none", "limits.memory": "64MiB"}) for i in range(ns.m)]
        try:
            for a in apps:
                drv.create(a)
                drv.start(a)
            held = console_pty.request(sock, "AGENT")[1].split()[0]
            after = rss_kib(keeper.pid)
            print(f"# the keeper's RSS: {before} KiB idle, {after} KiB holding {held} listeners "
                  f"({(after - before) / max(1, ns.m):.1f} KiB an instance)")
        finally:
            for a in apps:
                try:
                    drv.stop(a, force=True)
                    drv.delete(a)
                except Exception as e:  # noqa: BLE001
                    print(f"cleanup {a.name}: {e}", file=sys.stderr)
        return 0
    finally:
        if cg is not None:
            deadline = time.monotonic() + 10
            while Path(cg, "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.rmdir(cg)
        if keeper is not None:
            keeper.terminate()
            keeper.wait(10)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
