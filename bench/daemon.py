#!/usr/bin/python3.11
"""Time starts through a real jaulad beside `crun run` / `runc run`, and host memory per idle instance.

Measured on 2026-11-26 (vm, Linux 6.18.44, 2 cpus, 24 GiB; hybrid cgroup v1 host; crun 1.8.1,
runc 1.1.5; jaulad in the repo's .venv), `-n 20 --instances 200`, medians in ms:
    jaula app     create 18.1  start 32.0  create+start 50.0   (start: API call -> /bin/true exec'd)
    jaula system  create 16.3  start 33.5  create+start 51.5   (start: API call -> busybox init exec'd)
    crun          run 19.6     create 8.4   start 4.3   create+start 13.9
    runc          run 34.1     create 32.6  start 7.0   create+start 38.9
    jaula start / crun run: app 1.64x, system 1.71x   (goal "faster than crun run": NOT met)
    jaula start / runc run: app 0.94x, system 0.98x;  jaula create+start / crun run 2.6x
  (three other runs the same day: jaula start 28-31 ms, crun run 20-22 ms, runc run 35-37 ms.)
  Host memory per idle busybox system instance, 200 running: jaula processes (jaulad 55 MiB RSS,
  spawner 22 MiB RSS) grew 4.7 KiB RSS per instance; kernel memory not charged to the instances
  (Slab+KernelStack+PageTables growth 772 KiB minus kmem charged to them 349 KiB) 423 KiB; total
  outside the instances ~428 KiB per instance: goal < 1 MiB met. The instances' own cgroups hold
  459 KiB each. With --instances 1000 (all 1000 running at once, 124 s to launch, 60 s to tear
  down): 11 KiB RSS + 647 KiB uncharged kernel = 658 KiB per instance.
  jaulad bugs seen by this bench (reported under "anomaly", not fatal): a start failing with
  "ProtocolError: expected PID, got CREATE_RUNTIME" (2 of 1000, 1 of 200 in other runs), which
  leaves the instance's cgroups behind after its delete (the bench removes them); and a /bin/true
  app instance still "running" 5 s after its start while its pid is gone (exit not reported).

Again on 2026-11-26 later (NIC-less instances, see --nic; other engineers' tests loading the host, load 5-6),
`-n 15..20 --instances 0 --compare-src` five runs: jaula start app 35-53 ms, system 38-55 ms, crun run 19-27 ms,
runc run 32-42 ms: app 1.56-2.13x crun run, system 1.51-2.09x (NOT met); the steps (--timing) in docs/jaulad.md.

After the start's cuts (seccomp compiled once, user namespaces kept per id range, no fsync of
mount.json, the trampoline once, the init cloned into its cgroup2 folder and user namespace
without the intermediate: docs/jaulad.md), three runs of `-n 20 --instances 0` at load 1.6-2.1:
jaula start app 20.3-25.4 ms, system 20.8-26.1 ms, crun run 16.0-24.1 ms, runc run 26.8-33.2 ms:
app 1.06-1.27x crun run, system 1.08-1.30x (still NOT met; 0.73-0.79x runc run). `-m 200`: 769 KiB
outside the instances per idle instance (met).

After the sysinfo intercept (every profile then named its instance in listenerMetadata, so the
compiled seccomp program was never reused: fixed) and two more cuts (docs/jaulad.md), three runs of
`-n 20 -m 0` at load 2.4-3.6: jaula start app 24.7-32.4 ms, system 25.5-36.2 ms, crun run
19.7-23.9 ms, runc run 38.4-57.0 ms: app 1.17-1.63x crun run, system 1.21-1.58x (NOT met;
0.57-0.74x runc run); three more at load 1.1-1.5: app 22.6-25.1 ms, system 23.3-24.4, crun run
18.0-21.3: app 1.18-1.26x, system 1.13-1.29x (NOT met). `-m 200`: 823 KiB outside the instances
per idle instance (met). `--base-config KEY=VALUE` with `--compare-src` the same src/: an
interleaved A/B of one setting (security.syscalls.intercept.sysinfo=false: app -1.19 ms paired).

Fourth session (2026-11-26, after the hop cuts, the driver's preparation, the zygote and the late
cgroup: docs/jaulad.md, docs/spawner.md), quiet host (load 0.6-1.5), `-n 30 -m 200`:
    jaula app     create 6.46  start 16.2   create+start 22.47
    jaula system  create 6.11  start 16.48  create+start 22.91
    crun          run 18.64    create 8.06  start 4.25   create+start 12.34
    runc          run 33.15
    jaula start / crun run: app 0.87x, system 0.88x   (goal "faster than crun run": met)
  A start right after create finds the root create mounted; a start of a stopped instance mounts
  it (pool.mount 0.57-0.72 ms more). With `--nic` (eth0 on the default network, load 2.9): start
  app 18.98, system 19.48, crun run 25.1: 0.76x/0.78x. Memory, `-m 1000 --skip-latency` (all 1000
  running at once): launch 86.4 s, teardown 54.2 s, 40.9 KiB RSS + 709.5 KiB uncharged kernel =
  750.4 KiB outside the instances per instance (met). The RSS growth of a fresh jaulad's first
  instances is mostly one-time (the spawner's first-start imports, ~14 MiB; the zygote, ~11.5 MiB):
  with `--skip-latency -m 200 --compare-src` (the memory bench then runs on both) the tree before
  this session grew 119 KiB RSS per instance, this one 175 (the difference: the zygote).

What is measured (run as root: `.venv/bin/python bench/daemon.py [-n 20] [--instances 50] [--json]`,
`--nic` to give the jaula instances eth0 on the default network (default: none, as the runtimes'
bundles), `--timing FILE` for each step's median along the start, `--compare-src DIR` for a second
jaulad run from another checkout's src/, interleaved; the memory bench then runs on it too):

1. Start latency, warm. The bench starts its own jaulad (`--root`, `--socket` in a temporary
   folder), builds the templates first (`busybox`, and `bench-true`: the same busybox tree whose
   command is /bin/true), then per iteration, jaula and the OCI runtimes taken in turn (interleaved,
   the order rotating each iteration):
   - jaula app:    `POST /1.0/instances` (mode app, template bench-true) and its operation waited
                   on = `create`; then `PUT .../state?wait=-1 {"action": "start"}` (one request:
                   jaulad answers once the operation ended; a jaulad without `wait`, e.g. an older
                   --compare-src, answers at once and the client then long-polls the operation's
                   /wait) = `start`. The start operation ends once the instance's init has exec'd its
                   program (jaula's start waits on the exec fifo, docs/instances.md): so `start` is
                   API call -> /bin/true exec'd, seen by jaula.client over the UNIX socket. Then
                   (untimed) wait for the exit to be seen, delete.
   - jaula system: the same with template busybox, mode system: API call -> busybox init exec'd
                   as the instance's pid 1. Then (untimed) stop --force, delete.
   - crun / runc:  on a bundle of the same busybox rootfs running /bin/true (tests/support/bundle.py):
                   `run` = the whole `run` in the foreground (create, start, /bin/true, exit, delete);
                   `create`, `start` = the separate commands (start returns once the exec happened).
   Medians in ms; ratios jaula/crun, jaula/runc of `start` (API call -> exec'd) against `run` and
   against create+start of the runtime.
2. Host memory per idle instance: M busybox system instances created and started (idle: busybox
   init), then measured: (a) RSS and PSS of every jaula process not inside an instance (jaulad
   and all its descendants in the host pid namespace: the spawner, any helper), before and
   after, the growth divided by M;
   (b) roughly, the kernel and everything else not charged to the instances' memory cgroups:
   growth of the host's (MemTotal - MemAvailable) minus the sum of the instances' memory cgroup
   usage, divided by M (noisy: page cache and other host activity count); (c) the kernel's own
   memory not charged to the instances: growth of Slab + KernelStack + PageTables (/proc/meminfo)
   minus the sum of the instances' memory.kmem.usage_in_bytes (cgroup v1), divided by M.
   Goal: < 1 MiB per idle instance for `outside` = (a, RSS) + (c). Then every instance is stopped and deleted and the bench checks
   that no process, mount or cgroup of them is left.

On a hybrid cgroup host whose cgroup2 hierarchy holds controllers, crun 1.8 refuses to run; as in
bench/runtime.py, /sys/fs/cgroup/unified is then hidden in the bench's own mount namespace (for
crun and runc alike), *after* jaulad was started (jaulad sees the host as it is). Everything the
bench makes (jaulad, instances, bundles, state) goes at the end, also on failure or ^C.
"""

# ruff: noqa: BLE001, S110  (a bench: any failure is reported, cleanup goes on)
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import runtime as rtb

from jaula.instances import start_timing
from jaula.instances.start_timing import mark
from tests.support.bundle import assets_missing

JAULAD = REPO / ".venv" / "bin" / "jaulad"
_libc = ctypes.CDLL(None, use_errno=True)
TAG = f"bd{os.getpid()}"  # in every instance name: the cgroup check below touches only ours
ANOMALIES: list[str] = []  # what jaulad got wrong during the bench (reported, not fatal)


class Interrupted(Exception):
    pass


def _on_term(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


# --- jaulad ---------------------------------------------------------------------------------------

class Daemon:
    def __init__(self, top: Path, src: Path | None = None) -> None:
        """`src`: another checkout's src/ to run jaulad from (--compare-src), else this one's."""
        self.top = top
        self.src = src
        self.root = top / "root"
        self.socket = top / "jaula.sock"
        self.log_path = top / "jaulad.log"
        self.proc: subprocess.Popen | None = None
        self.client: Any = None
        self.pids: set[int] = set()
        self.cgroups: set[str] = set()
        self.names: set[str] = set()  # every instance the bench asked for, started or not

    def start(self) -> None:
        from jaula.client import Client

        cmd = [str(JAULAD)] if JAULAD.is_file() and self.src is None else [sys.executable, "-m", "jaula.daemon.main"]
        env = dict(os.environ)
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
            env.pop(start_timing.ENV, None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*cmd, "--root", str(self.root), "--socket", str(self.socket)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while True:
            if self.socket.exists():
                try:
                    c = Client(str(self.socket), timeout=120)
                    c.server()
                    self.client = c
                    return
                except Exception:
                    c.close()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jaulad did not answer:\n{self.logs()}")
            time.sleep(0.05)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def note(self, name: str) -> dict[str, Any]:
        """The instance's pid and cgroups, kept for the leak check."""
        from jaula.oci import state

        inst = self.client.get(name)
        if inst.get("pid"):
            self.pids.add(int(inst["pid"]))
        try:
            c = state.load(str(self.root / "instances" / "runtime"), name)
            self.cgroups |= set(c.data.get("cgroupPaths", {}).values())
        except Exception:
            pass
        return inst

    def remove_all(self) -> list[str]:
        """Delete every instance (forced); the problems met."""
        problems = []
        if self.client is None:
            return problems
        try:
            names = [i["name"] for i in self.client.list()]
        except Exception as exc:
            return [f"list: {exc}"]
        for name in names:
            try:
                self.note(name)
                self.client.delete(name, force=True)
            except Exception as exc:
                problems.append(f"delete {name}: {exc}")
        return problems

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def leaks(self) -> list[str]:
        from tests.integration.pool_checks import mounts_under
        from tests.support.containers import pid_alive

        left = [f"mount {m}" for m in mounts_under(str(self.top))]
        left += [f"cgroup {d}" for d in sorted(self.cgroups) if os.path.exists(d)]
        left += [f"process {p}" for p in sorted(self.pids) if pid_alive(p)]
        return left

    def stray_cgroups(self) -> list[str]:
        """Cgroups named after the bench's instances still there once all were deleted (a start
        that failed half-way leaves them: seen with 'ProtocolError: expected PID, got
        CREATE_RUNTIME'). Searched under every hierarchy's `jaula/` folder, wherever it is."""
        found = []
        for top in Path("/sys/fs/cgroup").iterdir():
            for dirpath, dirnames, _ in os.walk(top):
                if os.path.basename(dirpath) == "jaula":
                    found += [os.path.join(dirpath, n) for n in dirnames if n in self.names]
                    dirnames[:] = []
                elif dirpath.count("/") - str(top).count("/") >= 3:
                    dirnames[:] = []
        return sorted(set(found) - set(self.cgroups) | {c for c in self.cgroups if os.path.exists(c)})


def build_templates(root: Path) -> None:
    """busybox (as jaulad builds it on first use) and bench-true: the same tree, command /bin/true."""
    from jaula.storage import TemplateStore
    from jaula.storage.builders import busybox

    store = TemplateStore(root=root / "templates", cache=root / "cache")
    if not store.exists("busybox"):
        store.build("busybox", "busybox")
    if not store.exists("bench-true"):
        def bench_true(ctx: Any) -> Any:
            return busybox.build(ctx).replace(cmd=["/bin/true"])
        store.build("bench-true", bench_true)


def wait_status(client: Any, name: str, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get(name)["status"] != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not {want} after {timeout} s")
        time.sleep(0.002)


#: the instances' config in the latency bench: no NIC by default, like crun's and runc's bundles
#: (`--nic`: eth0 on the default network, jaulad's default for a new instance)
NO_NIC = {"nic.eth0.type": "none"}


def jaula_cycle(d: Daemon, mode: str, name: str, samples: dict[str, list[float]],
                config: dict[str, str] | None = None) -> None:
    c = d.client
    d.names.add(name)
    template = "bench-true" if mode == "app" else "busybox"
    t0 = time.perf_counter()
    c.create(template, name, mode=mode, config=config)
    t1 = time.perf_counter()
    mark(name, "cl.call")
    st = c.start(name)
    mark(name, "cl.done")
    t2 = time.perf_counter()
    samples["create"].append((t1 - t0) * 1e3)
    samples["start"].append((t2 - t1) * 1e3)
    samples["create+start"].append((t2 - t0) * 1e3)
    del st
    inst = d.note(name)
    if mode == "app":
        try:
            wait_status(c, name, "stopped", timeout=5)
            c.delete(name)
        except RuntimeError:  # jaulad did not see the exit: note it, and go on
            from tests.support.containers import pid_alive

            pid = inst.get("pid")
            ANOMALIES.append(f"{name}: app instance still '{c.get(name)['status']}' 5 s after start; its pid "
                             f"{pid} is {'alive' if pid and pid_alive(int(pid)) else 'gone'}")
            print(f"# {ANOMALIES[-1]}", file=sys.stderr)
            c.delete(name, force=True)
    else:
        c.stop(name, force=True)
        c.delete(name)


def steps(path: str, warmup: int) -> dict[str, dict[str, float | None]]:
    """The median time from each start mark to the next (the one before it in that start), per
    mode, from the bench's `cl.call` to its `cl.done`; warm-up iterations left out."""
    marks: dict[str, list[tuple[int, str]]] = {}
    for line in Path(path).read_text().splitlines():
        t, _pid, name, step = line.split()
        marks.setdefault(name, []).append((int(t), step))
    out: dict[str, dict[str, list[float]]] = {}
    for name, ms in marks.items():
        tail = name[len(TAG):]
        if not name.startswith(TAG) or tail[:1] not in ("a", "s") or not tail[1:].isdigit() or int(tail[1:]) < warmup:
            continue
        ms.sort()
        begin = next((i for i, (_, s) in enumerate(ms) if s == "cl.call"), None)
        if begin is None:
            continue
        end = next((i for i, (_, s) in enumerate(ms) if s == "cl.done" and i > begin), None)
        row = out.setdefault("app" if name[len(TAG)] == "a" else "system", {})
        for (t0, _), (t1, s) in zip(ms[begin:end], ms[begin + 1:end + 1]):
            row.setdefault(s, []).append((t1 - t0) / 1e6)
    return {k: {s: med(v) for s, v in row.items()} for k, row in out.items()}


# --- memory ---------------------------------------------------------------------------------------

def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def jaula_processes(root_pid: int) -> dict[int, str]:
    """jaulad (`root_pid`) and its descendants in the host pid namespace (the spawner, any helper),
    not the processes inside instances (their own pid namespace): pid -> command."""
    ours = os.readlink("/proc/self/ns/pid")
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != ours:
                continue  # inside an instance
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[pid] = cmd.strip()[:80]
    return found


def meminfo_kib() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    return out


def host_used_kib() -> int:
    m = meminfo_kib()
    return m["MemTotal"] - m["MemAvailable"]


def cgroup_usage_bytes(path: str) -> int:
    for f in ("memory.usage_in_bytes", "memory.current"):
        try:
            return int(Path(path, f).read_text())
        except OSError:
            continue
    return 0


def cgroup_kmem_bytes(path: str) -> int:
    try:
        return int(Path(path, "memory.kmem.usage_in_bytes").read_text())
    except (OSError, ValueError):
        return 0


KERNEL_KEYS = ("Slab", "KernelStack", "PageTables")


def snapshot(root_pid: int) -> dict[str, Any]:
    procs = jaula_processes(root_pid)
    return {"procs": {p: {"cmd": c, "rss": _status_kib(p, "VmRSS"), "pss": _pss_kib(p)} for p, c in procs.items()},
            "rss": sum(_status_kib(p, "VmRSS") for p in procs), "pss": sum(_pss_kib(p) for p in procs),
            "used": host_used_kib(), "meminfo": meminfo_kib()}


BIG_NET = "benchbig"


def memory_bench(d: Daemon, m: int) -> dict[str, Any]:
    c = d.client
    time.sleep(1)
    before = snapshot(d.proc.pid)
    names: list[str] = []
    failures: list[str] = []
    config = None
    if m > 200:  # the default network's /24 holds 253 instances: theirs is a /20 (4093), as a host for 1000 would
        import random

        for _ in range(20):
            try:
                c.create_network(BIG_NET, config={"ipv4.address": f"10.{random.randint(64, 250)}.{random.choice(range(0, 256, 16))}.1/20"})
                break
            except Exception as exc:  # a subnet the host routes: another
                print(f"# network: {exc}", file=sys.stderr)
        config = {"nic.eth0.network": BIG_NET}
    t0 = time.perf_counter()
    i = 0
    while len(names) < m:
        name = f"{TAG}i{i}"
        d.names.add(name)
        i += 1
        try:
            c.create("busybox", name, config=config)
            c.start(name)
        except Exception as exc:  # a failed start is counted and reported, the instance removed
            failures.append(f"{name}: {exc}")
            print(f"# start of {name} failed: {exc}", file=sys.stderr)
            try:
                c.delete(name, force=True)
            except Exception:
                pass
            if len(failures) > max(5, m // 10):
                raise RuntimeError(f"{len(failures)} failed starts, the last: {exc}") from None
            continue
        names.append(name)
        if len(names) % 50 == 0:
            print(f"# {len(names)}/{m} idle instances running ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    launch_s = time.perf_counter() - t0
    time.sleep(3)  # let the inits settle (rcS done)
    cgroups = []
    for name in names:
        d.note(name)
        from jaula.oci import state
        try:
            paths = state.load(str(d.root / "instances" / "runtime"), name).data.get("cgroupPaths", {})
        except Exception:
            paths = {}
        if "memory" in paths:
            cgroups.append(paths["memory"])
        elif paths:
            cgroups.append(next(iter(paths.values())))
    running = sum(1 for i in c.list() if i["status"] == "running")
    after = snapshot(d.proc.pid)
    charged = sum(cgroup_usage_bytes(p) for p in cgroups) / 1024
    kmem = sum(cgroup_kmem_bytes(p) for p in cgroups) / 1024
    per_rss = (after["rss"] - before["rss"]) / m
    per_pss = (after["pss"] - before["pss"]) / m
    host_growth = after["used"] - before["used"]
    uncharged = (host_growth - charged) / m
    mi_b, mi_a = before["meminfo"], after["meminfo"]
    kernel = {k: round((mi_a.get(k, 0) - mi_b.get(k, 0)) / m, 1)
              for k in ("Slab", "SUnreclaim", "KernelStack", "PageTables", "Shmem", "Cached")}
    kernel_growth = sum(mi_a[k] - mi_b[k] for k in KERNEL_KEYS)
    kernel_uncharged = (kernel_growth - kmem) / m
    t1 = time.perf_counter()
    for name in names:
        c.stop(name, force=True)
        c.delete(name)
    teardown_s = time.perf_counter() - t1
    if config is not None:
        c.delete_network(BIG_NET)
    return {"instances": m, "running": running, "failed_starts": failures, "launch_s": round(launch_s, 1), "teardown_s": round(teardown_s, 1),
            "jaula_processes_after": {str(p): v | {"rss_before": before["procs"].get(p, {}).get("rss")}
                                      for p, v in after["procs"].items()},
            "jaula_rss_before_kib": before["rss"], "jaula_rss_after_kib": after["rss"],
            "jaula_pss_before_kib": before["pss"], "jaula_pss_after_kib": after["pss"],
            "jaula_rss_growth_per_instance_kib": round(per_rss, 1),
            "jaula_pss_growth_per_instance_kib": round(per_pss, 1),
            "instances_cgroup_charged_per_instance_kib": round(charged / m, 1),
            "host_used_growth_per_instance_kib": round(host_growth / m, 1),
            "not_charged_per_instance_kib": round(uncharged, 1),
            "meminfo_growth_per_instance_kib": kernel,
            "instances_cgroup_kmem_per_instance_kib": round(kmem / m, 1),
            "kernel_not_charged_per_instance_kib": round(kernel_uncharged, 1),
            "outside_per_instance_kib": round(max(per_rss, 0) + max(kernel_uncharged, 0), 1)}


# --- report ---------------------------------------------------------------------------------------

def med(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", "-n", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--instances", "-m", type=int, default=50, help="idle instances for the memory figure (0: skip)")
    p.add_argument("--runtimes", default="crun,runc")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--nic", action="store_true",
                   help="latency: the jaula instances get eth0 on the default network (default: no NIC, "
                        "as the runtimes' bundles)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--compare-src", metavar="DIR", type=Path,
                   help="another checkout's src/ (e.g. of `git worktree add /tmp/base HEAD`): a second "
                        "jaulad runs from it, interleaved with the rest ('jaula-base app', 'jaula-base system')")
    p.add_argument("--base-config", metavar="KEY=VALUE", action="append", default=[],
                   help="a setting of the jaula-base instances only (repeatable): with --compare-src the "
                        "same src/, an interleaved A/B of that setting (e.g. "
                        "security.syscalls.intercept.sysinfo=false)")
    p.add_argument("--timing", metavar="FILE",
                   help="jaulad, its spawner and the bench append marks along each start to FILE "
                        "($JAULA_START_TIMING); the steps' medians are printed")
    opts = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    if why := assets_missing():
        print(f"bench: {why}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    top = Path(tempfile.mkdtemp(prefix="jaula-bench-daemon.", dir="/tmp"))
    top.chmod(0o711)
    work = top / "oci"
    work.mkdir()
    d = Daemon(top)
    base = None
    if opts.compare_src is not None:
        (top / "base").mkdir(mode=0o711)
        base = Daemon(top / "base", src=opts.compare_src.resolve())
    host_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY)  # to look at the host's cgroups at the end
    runtimes: list[Any] = []
    result: dict[str, Any] = {"host": f"{platform.node()} {platform.release()} {os.cpu_count()} cpus, "
                                      f"{meminfo_kib()['MemTotal'] // 1024} MiB",
                              "iterations": opts.iterations, "notes": [],
                              "jaula_nic": "eth0 on the default network" if opts.nic else "none (nic.eth0.type=none)"}
    failed = False
    try:
        (d.root).mkdir(mode=0o711)
        if opts.timing:
            os.environ[start_timing.ENV] = start_timing._path = os.path.abspath(opts.timing)
        t = time.perf_counter()
        build_templates(d.root)
        result["notes"].append(f"templates built in {time.perf_counter() - t:.1f} s (not timed below)")
        d.start()  # before hiding cgroup2: jaulad sees the host as it is
        if base is not None:
            (base.root).mkdir(mode=0o711)
            build_templates(base.root)
            base.start()
            result["notes"].append(f"jaula-base: jaulad from {base.src}")
        names = [n.strip() for n in opts.runtimes.split(",") if n.strip()]
        if not opts.skip_latency:
            if "crun" in names and rtb.unified_has_controllers():
                rtb.hide_unified()
                result["notes"].append(f"{rtb.UNIFIED} hidden in the bench's mount namespace for crun and runc "
                                       "(crun 1.8 refuses hybrid hosts); jaulad started before, sees the host")
            _libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, for the runtimes' inits
            signal.signal(signal.SIGALRM, rtb._alarm)
            runtimes, skipped = rtb.prepare(names, work, Path("/nonexistent"))
            result["notes"] += [f"skipped {s}" for s in skipped]
            active = []
            for rt in runtimes:
                if err := rtb.smoke(rt, work):
                    result["notes"].append(f"skipped {rt.name}: {err}")
                else:
                    active.append(rt)
                    if rt.note:
                        result["notes"].append(f"{rt.name}: {rt.note}")
            kinds = ("app", "system", *(("base app", "base system") if base is not None else ()))
            jsamples = {k: {m: [] for m in ("create", "start", "create+start")} for k in kinds}
            players: list[Any] = [*kinds, *active]
            base_cfg = {**({} if opts.nic else NO_NIC), **dict(kv.split("=", 1) for kv in opts.base_config)} or None
            for i in range(opts.warmup + opts.iterations):
                k = i % len(players)
                for pl in players[k:] + players[:k]:
                    if isinstance(pl, str) and pl.startswith("base "):
                        mode = pl.split()[1]
                        jaula_cycle(base, mode, f"{TAG}x{mode[0]}{i}", jsamples[pl], base_cfg)
                    elif isinstance(pl, str):
                        jaula_cycle(d, pl, f"{TAG}{pl[0]}{i}", jsamples[pl], None if opts.nic else NO_NIC)
                    else:
                        rtb.cycle_run(pl, f"bench-{pl.name}-{i}-run", work)
                        rtb.cycle_create_start_delete(pl, f"bench-{pl.name}-{i}-csd", work)
                if i + 1 == opts.warmup:
                    jsamples = {k: {m: [] for m in ("create", "start", "create+start")} for k in kinds}
                    for rt in active:
                        rt.samples = {m: [] for m in rtb.METRICS}
            lat: dict[str, dict[str, float | None]] = {}
            for k, s in jsamples.items():
                lat[f"jaula {k}".replace("jaula base", "jaula-base")] = {m: med(v) for m, v in s.items()}
            for rt in active:
                cs = [a + b for a, b in zip(rt.samples["create"], rt.samples["start"])]
                lat[rt.name] = {"run": med(rt.samples["run"]), "create": med(rt.samples["create"]),
                                "start": med(rt.samples["start"]), "create+start": med(cs)}
            ratios = {}
            for k in [f"jaula {k}".replace("jaula base", "jaula-base") for k in kinds]:
                j = lat[k]
                for rt in active:
                    o = lat[rt.name]
                    ratios[f"{k} start / {rt.name} run"] = round(j["start"] / o["run"], 3)
                    ratios[f"{k} start / {rt.name} create+start"] = round(j["start"] / o["create+start"], 3)
                    ratios[f"{k} create+start / {rt.name} run"] = round(j["create+start"] / o["run"], 3)
            result["latency_ms_median"] = lat
            # every start, in iteration order (paired: iteration i of each player ran back to back)
            result["start_ms_samples"] = {**{k: [round(x, 2) for x in v["start"]] for k, v in jsamples.items()},
                                          **{f"{rt.name} run": [round(x, 2) for x in rt.samples["run"]] for rt in active}}
            if base is not None:
                for k in ("app", "system"):
                    pairs = [a - b for a, b in zip(jsamples[k]["start"], jsamples[f"base {k}"]["start"])]
                    lat[f"jaula {k} - jaula-base {k} (paired)"] = {"start": med(pairs)}
            if opts.timing:
                result["start_steps_ms_median"] = steps(opts.timing, opts.warmup)
            result["ratios"] = ratios
        if opts.instances > 0:
            if base is not None:  # the other checkout's first, its instances gone before ours come
                result["memory (jaula-base)"] = memory_bench(base, opts.instances)
            result["memory"] = memory_bench(d, opts.instances)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"bench: interrupted ({exc!r}); cleaning up", file=sys.stderr)
        failed = True
    except Exception as exc:
        print(f"bench: failed: {exc!r}\n{d.logs()}", file=sys.stderr)
        failed = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        problems = d.remove_all()
        d.stop()
        if base is not None:
            problems += base.remove_all()
            base.stop()
            d.pids |= base.pids
            d.cgroups |= base.cgroups
            d.names |= base.names
        for pid in d.pids:  # anything that outlived its delete
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for rt in runtimes:
            for cid_dir in rt.root.glob("*") if rt.root.is_dir() else []:
                rtb.spawn(rt.argv("delete", "--force", cid_dir.name), work / "err")
        rtb.reap_orphans()
        time.sleep(0.5)
        if _libc.setns(host_mnt, 0x20000) != 0:  # back to the host's mounts (cgroup2 visible again)
            print(f"bench: setns to the host's mount namespace: errno {ctypes.get_errno()}", file=sys.stderr)
        os.close(host_mnt)
        left = problems + d.leaks()
        stray = d.stray_cgroups()
        for path in stray:  # empty once their processes are gone: remove what jaulad left
            try:
                os.rmdir(path)
                ANOMALIES.append(f"cgroup {path} left by jaulad after the instance's delete; removed by the bench")
            except OSError as exc:
                left.append(f"cgroup {path} ({exc.strerror})")
        result["left_behind"] = left
        result["anomalies"] = ANOMALIES
        if not any(x.startswith("mount") for x in left):
            shutil.rmtree(top, ignore_errors=True)
        else:
            print(f"bench: mounts left under {top}; not removed", file=sys.stderr)
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"# {result['host']}; {opts.iterations} iterations (+{opts.warmup} warm-up), medians")
        print(f"# jaula instances' NIC: {result['jaula_nic']}")
        for n in result["notes"]:
            print(f"# {n}")
        for name, row in result.get("latency_ms_median", {}).items():
            print(f"{name:<14}" + "".join(f"  {k} {v} ms" for k, v in row.items() if v is not None))
        for k, v in result.get("ratios", {}).items():
            print(f"{k:<40} {v:.2f}x")
        for k, row in result.get("start_steps_ms_median", {}).items():
            print(f"steps {k}: " + "  ".join(f"{s} {v}" for s, v in row.items()))
        for key in [k for k in ("memory (jaula-base)", "memory") if k in result]:
            print(f"# {key}")
            mem = dict(result[key])
            procs = mem.pop("jaula_processes_after")
            for k, v in mem.items():
                print(f"memory {k}: {v}")
            for pid, v in procs.items():
                was = "(new)" if v.get("rss_before") is None else f"(was {v['rss_before']} KiB)"
                print(f"  pid {pid}: rss {v['rss']} KiB {was} pss {v['pss']} KiB  {v['cmd']}")
            print(f"memory goal < 1024 KiB per idle instance outside the instances: "
                  f"{'met' if mem['outside_per_instance_kib'] < 1024 else 'NOT met'} "
                  f"({mem['outside_per_instance_kib']} KiB)")
        for a in ANOMALIES:
            print(f"anomaly: {a}")
        print(f"left behind: {result['left_behind'] or 'nothing'}")
    return 1 if failed or result["left_behind"] else 0


if __name__ == "__main__":
    sys.exit(main())
