#!/usr/bin/python3.11
"""Time jaula-runtime beside crun and runc on the same bundle, in the same run, interleaved.

Measured per runtime, each iteration with a fresh container id, runtimes taken in turn
(A B C, then B C A, ...) so that drifts of the host hit them alike:
  run     `run` of busybox `true` in the foreground (the whole lifecycle; a `delete --force`
          after it is not timed, in case the runtime left state behind)
  create  `create` (the init waits on the exec fifo), then `start`, then, once the container
          has exited (waited for, not timed), `delete`
  memory  max RSS of the `create` process (wait4's ru_maxrss, its reaped helpers included) and
          VmHWM of the long-lived init while the container is in the created state
Medians in ms and MiB, with the ratios jaula/crun and jaula/runc. Run as root:
  .venv/bin/python bench/runtime.py [--iterations 30] [--json]
To time a change, add the launcher of a checkout before it as jaula-base (same run, interleaved):
  .venv/bin/python bench/runtime.py --runtimes jaula,jaula-base,crun,runc --jaula-base /tmp/old/jaula-runtime
"""

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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.bundle import assets_missing, make_bundle  # noqa: E402

LAUNCHER = REPO / ".venv" / "bin" / "jaula-runtime"
RUSAGE = REPO / "build" / "rusage"
UNIFIED = Path("/sys/fs/cgroup/unified")
TIMEOUT_S = 30.0
METRICS = ("run", "create", "start", "delete", "create_maxrss", "init_hwm")
UNITS = {"create_maxrss": "MiB", "init_hwm": "MiB"}

_libc = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    """A runtime failed one step; the message says which and why."""


@dataclass
class Runtime:
    name: str
    path: str
    global_args: list[str]
    root: Path
    bundle: Path
    samples: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    note: str = ""
    error: str = ""

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", str(self.root), *self.global_args, *args]


# --- processes -----------------------------------------------------------------------------------

def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError


def spawn(argv: list[str], errfile: Path) -> tuple[int, float, float | None]:
    """Run argv to its end: (exit code, wall seconds, max RSS in KiB or None).

    Through build/rusage when built: forked from that tiny static program, the runtime's ru_maxrss
    is its own, not the bench interpreter's pages inherited at fork (see bench/rusage.c).
    Output goes to errfile, not to pipes: after `create` the container holds the runtime's stdio."""
    helper = RUSAGE.is_file()
    report = errfile.with_suffix(".rusage")
    cmd = [str(RUSAGE), str(report), *argv] if helper else argv
    with open(errfile, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise BenchError(f"{' '.join(argv)}: still running after {TIMEOUT_S:.0f} s, killed") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if not helper:
        return proc.returncode, elapsed, None
    try:
        wall_ns, maxrss, _ = report.read_text().split()
    except (OSError, ValueError):
        return proc.returncode, elapsed, None  # the helper itself failed: its message is in errfile
    return proc.returncode, int(wall_ns) / 1e9, float(maxrss)


def check(rt: Runtime, step: str, argv: list[str], errfile: Path) -> tuple[float, float | None]:
    rc, elapsed, maxrss = spawn(argv, errfile)
    if rc != 0:
        text = errfile.read_text(errors="replace").strip().splitlines()
        raise BenchError(f"{step} exited {rc}: {' | '.join(text[-3:]) or '(no message)'}")
    return elapsed, maxrss


def wait_exit(pid: int) -> None:
    """Wait for the container's init to end. We are a child subreaper, so once the runtime has
    exited the init is normally our child; if not, watch /proc."""
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        deadline = time.monotonic() + TIMEOUT_S
        while os.path.exists(f"/proc/{pid}") and _state(pid) not in ("Z", "X"):
            if time.monotonic() > deadline:
                raise BenchError(f"container init {pid} still running {TIMEOUT_S:.0f} s after start") from None
            time.sleep(0.001)
    except TimeoutError:
        raise BenchError(f"container init {pid} still running {TIMEOUT_S:.0f} s after start") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def reap_orphans() -> None:
    """Reap helpers of a runtime that were re-parented to us (we are a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --- one iteration -------------------------------------------------------------------------------

def cycle_run(rt: Runtime, cid: str, work: Path) -> None:
    elapsed, _ = check(rt, "run", rt.argv("run", "--bundle", str(rt.bundle), cid), work / "err")
    rt.samples["run"].append(elapsed * 1e3)
    if (rt.root / cid).exists():
        spawn(rt.argv("delete", "--force", cid), work / "err")


def cycle_create_start_delete(rt: Runtime, cid: str, work: Path) -> None:
    pidfile = work / f"{rt.name}.pid"
    pidfile.unlink(missing_ok=True)
    try:
        elapsed, maxrss = check(rt, "create", rt.argv("create", "--bundle", str(rt.bundle),
                                                      "--pid-file", str(pidfile), cid), work / "err")
        rt.samples["create"].append(elapsed * 1e3)
        if maxrss is not None:
            rt.samples["create_maxrss"].append(maxrss / 1024)
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError) as err:
            raise BenchError(f"create wrote no usable --pid-file: {err}") from None
        rt.samples["init_hwm"].append(vm_hwm_kib(pid) / 1024)
        elapsed, _ = check(rt, "start", rt.argv("start", cid), work / "err")
        rt.samples["start"].append(elapsed * 1e3)
        wait_exit(pid)
        elapsed, _ = check(rt, "delete", rt.argv("delete", cid), work / "err")
        rt.samples["delete"].append(elapsed * 1e3)
    finally:
        if (rt.root / cid).exists():
            spawn(rt.argv("delete", "--force", cid), work / "err")
        reap_orphans()


# --- host preparation ----------------------------------------------------------------------------

def unified_has_controllers() -> bool:
    """A hybrid host whose cgroup2 hierarchy holds controllers: crun 1.8 refuses to run there."""
    try:
        return bool((UNIFIED / "cgroup.controllers").read_text().split())
    except OSError:
        return False


def hide_unified() -> None:
    """Unmount /sys/fs/cgroup/unified in a mount namespace of our own (children inherit it), so
    every runtime sees a cgroup v1 host. The host's mounts are untouched."""
    CLONE_NEWNS, MS_REC, MS_SLAVE, MNT_DETACH = 0x20000, 0x4000, 0x80000, 2
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if _libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rslave /")
    if _libc.umount2(bytes(UNIFIED), MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), f"umount {UNIFIED}")


def version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.splitlines()[0] if out else "?"


def prepare(names: list[str], work: Path, jaula: Path, jaula_base: Path | None = None) -> tuple[list[Runtime], list[str]]:
    runtimes, skipped = [], []
    for name in names:
        if name == "jaula-base" and jaula_base is None:
            skipped.append("jaula-base: give --jaula-base PATH")
            continue
        path = str(jaula) if name == "jaula" else str(jaula_base) if name == "jaula-base" else shutil.which(name)
        if not path or not os.access(path, os.X_OK):
            skipped.append(f"{name}: not installed")
            continue
        base = work / name
        bundle = make_bundle(base / "bundle", ["/bin/true"])
        rt = Runtime(name=name, path=path, global_args=[], root=base / "state", bundle=bundle)
        if name == "jaula-base":
            rt.note = f"{path} (another jaula-runtime, e.g. a checkout before a change)"
        elif name != "jaula":
            rt.note = version(path)
        runtimes.append(rt)
    return runtimes, skipped


def smoke(rt: Runtime, work: Path) -> str | None:
    """One untimed lifecycle of each kind; the error text if the runtime cannot run here."""
    attempts = [[]]
    if rt.name == "crun":  # crun 1.8 may refuse a hybrid cgroup host; then try without cgroups
        attempts.append(["--cgroup-manager=disabled"])
    error = ""
    for extra in attempts:
        rt.global_args = extra
        try:
            cycle_run(rt, f"smoke-{rt.name}-1", work)
            cycle_create_start_delete(rt, f"smoke-{rt.name}-2", work)
        except BenchError as err:
            error = str(err)
            continue
        finally:
            rt.samples = {m: [] for m in METRICS}
        if extra:
            rt.note += f"; used {' '.join(extra)} (no cgroups), default failed: {error}"
        return None
    return error


# --- report --------------------------------------------------------------------------------------

def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    figures = {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1],
               "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}
    return {**{k: round(v, 3) for k, v in figures.items()}, "n": len(ordered)}


def report(runtimes: list[Runtime], skipped: list[str], meta: dict[str, object], as_json: bool) -> None:
    results = {rt.name: {m: summary(rt.samples[m]) for m in METRICS} for rt in runtimes if not rt.error}
    ratios: dict[str, dict[str, float]] = {}
    for ours in ("jaula", "jaula-base"):
        for other in ("crun", "runc", "jaula-base"):
            if ours in results and other in results and ours != other:
                ratios[f"{ours}/{other}"] = {
                    m: round(results[ours][m]["median"] / results[other][m]["median"], 3)
                    for m in METRICS if results[ours][m] and results[other][m] and results[other][m]["median"]}
    failed = [f"{rt.name}: {rt.error}" for rt in runtimes if rt.error]
    if as_json:
        print(json.dumps({"meta": meta, "results": results, "ratios": ratios, "skipped": skipped + failed,
                          "notes": {rt.name: rt.note for rt in runtimes if rt.note}}, indent=2))
        return
    print(f"# {meta['host']}; {meta['iterations']} iterations (+{meta['warmup']} warm-up), medians")
    for line in meta["notes"]:  # type: ignore[attr-defined]
        print(f"# {line}")
    for rt in runtimes:
        if rt.note:
            print(f"# {rt.name}: {rt.note}")
    headers = [f"{m} ({UNITS.get(m, 'ms')})" for m in METRICS]
    width = max(len(h) for h in headers) + 2
    print(f"{'runtime':<18}" + "".join(f"{h:>{width}}" for h in headers))
    for name, res in results.items():
        cells = [f"{res[m]['median']:.1f}" if res[m] else "-" for m in METRICS]
        print(f"{name:<18}" + "".join(f"{c:>{width}}" for c in cells))
    for name, ratio in ratios.items():
        print(f"{name:<18}" + "".join(f"{ratio[m]:.2f}x".rjust(width) if m in ratio else "-".rjust(width)
                                      for m in METRICS))
    for line in skipped + failed:
        print(f"skipped {line}")


# --- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--iterations", "-n", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    parser.add_argument("--runtimes", default="jaula,crun,runc", help="comma-separated: jaula, crun, runc, jaula-base")
    parser.add_argument("--jaula", type=Path, default=LAUNCHER, help=f"jaula-runtime to time (default {LAUNCHER})")
    parser.add_argument("--jaula-base", type=Path, help="a second jaula-runtime to time as 'jaula-base' (add it to "
                        "--runtimes), e.g. a launcher of a checkout before a change: both in the same interleaved run")
    parser.add_argument("--host-view", choices=("auto", "as-is", "v1-only"), default="auto",
                        help="v1-only hides /sys/fs/cgroup/unified from every runtime (private mount "
                             "namespace); auto does so when crun is asked for and the host is hybrid "
                             "with cgroup2 controllers, which crun 1.8 refuses")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    opts = parser.parse_args(argv)

    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    if why := assets_missing():
        print(f"bench: {why}", file=sys.stderr)
        return 1
    names = [n.strip() for n in opts.runtimes.split(",") if n.strip()]
    notes: list[str] = []
    if opts.host_view == "v1-only" or (opts.host_view == "auto" and "crun" in names and unified_has_controllers()):
        controllers = (UNIFIED / "cgroup.controllers").read_text().split() if UNIFIED.is_dir() else []
        hide_unified()
        notes.append(f"host view: {UNIFIED} (cgroup2, controllers: {' '.join(controllers) or 'none'}) hidden "
                     "in the bench's own mount namespace, for every runtime alike (crun 1.8 refuses hybrid hosts)")
    PR_SET_CHILD_SUBREAPER = 36
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGALRM, _alarm)

    work = Path(tempfile.mkdtemp(prefix="jaula-bench.", dir="/tmp"))
    runtimes: list[Runtime] = []
    try:
        runtimes, skipped = prepare(names, work, opts.jaula, opts.jaula_base)
        active = []
        for rt in runtimes:
            if error := smoke(rt, work):
                rt.error = error
            else:
                active.append(rt)
        total = opts.warmup + opts.iterations
        for i in range(total):
            order = active[i % len(active):] + active[:i % len(active)] if active else []
            for kind in (cycle_run, cycle_create_start_delete):
                for rt in order:
                    if rt.error:
                        continue
                    try:
                        kind(rt, f"bench-{rt.name}-{i}-{kind.__name__[6:9]}", work)
                    except BenchError as err:
                        rt.error = f"iteration {i}: {err}"
            if i + 1 == opts.warmup:
                for rt in active:
                    rt.samples = {m: [] for m in METRICS}
        meta = {"host": f"{platform.node()} {platform.release()} {os.cpu_count()} cpus",
                "iterations": opts.iterations, "warmup": opts.warmup, "notes": notes,
                "bundle": "busybox rootfs, default config (tests/support/bundle.py), process /bin/true"}
        report(runtimes, skipped, meta, opts.json)
    finally:
        for rt in runtimes:
            for cid_dir in rt.root.glob("*") if rt.root.is_dir() else []:
                spawn(rt.argv("delete", "--force", cid_dir.name), work / "err")
        reap_orphans()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
