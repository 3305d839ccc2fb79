"""jaulad under stress (issue 4, item 9), over a private root and socket (the `daemon` fixture of
test_jaulad.py), driven through jaula.client:

- `kill -9` of jaulad while 20 client threads create and start instances, then a restart: every
  row left is running with a live, adopted pid, or stopped and startable; a create cut before its
  volume was made leaves no row; nothing without a row is left (volume, runtime state, bundle,
  mount, cgroup, process). Then all are stopped and deleted, and nothing at all is left.
- the orphan sweep at start, on leftovers made by hand: a row without a volume, a volume without
  a row, a half-built volume folder, a bundle without a row, a runtime state cut before its
  state.json (with its cgroup), a stopped row with a stale pid.
- the storm also with jaulad's spawner killed with it, so the request it serves is cut midway.
- create/start/stop/delete cycles with nothing leaked: mounts, cgroups, runtime state, rows,
  jaulad's fds (within a small margin) and its RSS (small growth).

Both also check, once everything is deleted (tests/e2e/leaks.py): no namespace of an instance held
by jaulad or a process under it or a mount, no loop device on the root, no host veth of an instance's NIC, and no
database row naming an instance.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from jaula.client import Client
from tests.e2e import leaks
from tests.e2e.test_jaulad import Daemon, daemon  # noqa: F401 (the fixture)
from tests.integration.pool_checks import mounts_under
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root

CONCURRENT = 20
CYCLES = 100


def _client(d: Daemon) -> Client:
    return Client(str(d.socket), timeout=120)


def _cgroup_of(d: Daemon, name: str) -> set[str]:
    from jaula.oci import state

    c = state.load(d.root / "instances" / "runtime", name)
    return set(c.data["cgroupPaths"].values())


def _leftovers(d: Daemon, names: set[str]) -> list[str]:
    """What is still there of instances `names` (which have no row)."""
    inst = d.root / "instances"
    vols = d.root / "pools" / "default" / "volumes"
    left = []
    for name in sorted(names):
        for what in (inst / "runtime" / name, inst / "bundles" / name, inst / "logs" / name, vols / name):
            if what.exists():
                left.append(str(what))
    left += [f"half-made volume {n}" for n in os.listdir(vols) if n.startswith((".new-", ".del-"))] if vols.is_dir() else []
    return left


def _cgroup_children(parents: set[str], names: set[str]) -> list[str]:
    return [os.path.join(p, n) for p in parents for n in names if os.path.exists(os.path.join(p, n))]


def _note(c: Client, name: str, pid: int, ns: set[str], veths: set[str]) -> None:
    """A running instance's namespaces and host veths, for the leak check at the end."""
    ns |= leaks.namespaces(pid)
    veths |= {n["host_name"] for n in c.nics(name) if n.get("host_name")}


def _host_leaks(d: Daemon, names: set[str], ns: set[str], veths: set[str]) -> list[str]:
    assert d.proc is not None
    return (leaks.held_namespaces(ns, leaks.tree(d.proc.pid), d.top) + leaks.loop_devices(d.top) + leaks.interfaces(veths)
            + leaks.rows_naming(d.root / "jaula.db", names))


@pytest.mark.parametrize("with_spawner", [False, True], ids=["jaulad", "jaulad+spawner"])
def test_kill_9_during_concurrent_creates_and_starts(daemon: Daemon, with_spawner: bool) -> None:  # noqa: F811
    """`with_spawner`: its spawner is killed too, so the request it serves is cut midway."""
    d = daemon
    d.start()
    with _client(d) as c:  # the template is built before the storm
        c.create("busybox", "warm")
        c.start("warm")
        cgroup_parents = {os.path.dirname(p) for p in _cgroup_of(d, "warm")}
        c.delete("warm", force=True)

    names = {f"c{i}" for i in range(CONCURRENT)}
    seen_pids: set[int] = set()
    seen_ns: set[str] = set()
    veths: set[str] = set()
    errors: list[str] = []

    def worker(name: str) -> None:
        try:
            with _client(d) as c:
                c.create("busybox", name)
                pid = int(c.start(name)["metadata"]["pid"])
                seen_pids.add(pid)
                _note(c, name, pid, seen_ns, veths)
        except Exception as exc:  # noqa: BLE001 (jaulad is killed under it)
            errors.append(f"{name}: {type(exc).__name__}")

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in sorted(names)]
    for t in threads:
        t.start()
    # kill while they are in flight: once a few are running
    deadline = time.monotonic() + 30
    with _client(d) as c:
        while sum(i["status"] == "running" for i in c.list()) < 3:
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.02)
    if with_spawner:
        spawner = int(re.findall(r"spawner pid (\d+)", d.logs())[-1])
        os.kill(spawner, signal.SIGKILL)
    d.kill(signal.SIGKILL)
    for t in threads:
        t.join(60)
    assert errors, "every create and start ended before the kill: it cut nothing"

    d.start()
    with _client(d) as c:
        rows = {i["name"]: i for i in c.list()}
        assert set(rows) <= names
        for name, row in rows.items():
            if row["status"] == "running":  # adopted: that very process
                assert row["pid"] and pid_alive(row["pid"]), row
                d.pids.add(row["pid"])
                _note(c, name, row["pid"], seen_ns, veths)
            else:
                assert row["status"] == "stopped", row
                assert row["pid"] is None, row
                assert not (d.root / "instances" / "runtime" / name).exists(), f"{name}: {d.logs()}"
                st = c.start(name)  # startable
                assert pid_alive(st["metadata"]["pid"]), st
                d.pids.add(st["metadata"]["pid"])
                _note(c, name, st["metadata"]["pid"], seen_ns, veths)
            d.cgroups |= _cgroup_of(d, name)
        gone = names - set(rows)
        assert not _leftovers(d, gone), f"{_leftovers(d, gone)}\n{d.logs()}"
        assert not _cgroup_children(cgroup_parents, gone)
        assert not [p for p in seen_pids - d.pids if pid_alive(p)], "a process of an instance without a row"

        for name in rows:
            c.stop(name, force=True, timeout=0)
            c.delete(name)
        assert c.list() == []

    assert not _leftovers(d, names)
    assert not _cgroup_children(cgroup_parents, names)
    assert not mounts_under(str(d.root / "instances")) and not mounts_under(str(d.root / "pools"))
    d.pids |= seen_pids
    deadline = time.monotonic() + 5
    while (left := d.leaks() + _host_leaks(d, names, seen_ns, veths)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
    assert seen_ns and veths, "nothing noted: the leak check checked nothing"


def test_sweep_at_start_cleans_what_a_cut_create_left(daemon: Daemon) -> None:  # noqa: F811
    from jaula.daemon.db import Database
    from jaula.daemon.models import InstanceRow

    d = daemon
    d.start()
    with _client(d) as c:
        c.create("busybox", "kept")
        c.create("busybox", "orphan")
    d.kill(signal.SIGKILL)
    # what a kill -9 can leave: a row whose volume never came, a volume whose row was reverted,
    # a half-built volume folder, a stopped row with a pid
    db = Database(d.root / "jaula.db")
    try:
        db.create_instance(InstanceRow(name="norow", template="busybox", idmap_size=65536))
        db.delete_instance("orphan")
        db.update_instance("kept", pid=os.getpid())
    finally:
        db.close()
    vols = d.root / "pools" / "default" / "volumes"
    (vols / ".new-half" / "rootfs").mkdir(parents=True)
    (d.root / "instances" / "bundles" / "ghost" / "rootfs").mkdir(parents=True)
    # a runtime state cut before its state.json was saved: the cgroup made, no process yet
    # (jaulad's cgroup is this test's; its instances go under its root's own parent)
    from jaula.cgroups.base import open_cgroup
    from jaula.daemon.identity import cgroup_parent

    (d.root / "instances" / "runtime" / "halfrun").mkdir(parents=True)
    cg = open_cgroup(f"{cgroup_parent(d.root)}/halfrun", "halfrun")
    cg.create()
    try:
        d.start()
        assert not cg.exists(), d.logs()
    finally:
        if cg.exists():
            cg.remove()

    with _client(d) as c:
        rows = {i["name"]: i for i in c.list()}
        assert set(rows) == {"kept"}, rows
        # its create left its root mounted for its first start: the sweep unmounts it, the start mounts it again
        assert "sweep: root of kept (created, not running) unmounted" in d.logs()
        assert rows["kept"]["status"] == "stopped" and rows["kept"]["pid"] is None
        assert not _leftovers(d, {"orphan", "norow", "ghost", "halfrun"}), d.logs()
        c.start("kept")
        c.stop("kept", force=True, timeout=0)
        c.delete("kept")
    assert not _leftovers(d, {"kept"})
    assert not mounts_under(str(d.top))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_cycles_leak_nothing(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    assert d.proc is not None
    pid = d.proc.pid
    cgroups: set[str] = set()
    seen_ns: set[str] = set()
    veths: set[str] = set()

    def cycle(c: Client, name: str) -> None:
        c.create("busybox", name)
        _note(c, name, int(c.start(name)["metadata"]["pid"]), seen_ns, veths)
        cgroups.update(_cgroup_of(d, name))
        c.stop(name, force=True, timeout=0)
        c.delete(name)

    with _client(d) as c:
        for i in range(3):  # warm up: template, imports, pools, caches
            cycle(c, f"w{i}")
        fds, rss = _fds(pid), _rss_kib(pid)
        names = {f"y{i}" for i in range(CYCLES)}
        for name in sorted(names):
            cycle(c, name)
        assert c.list() == []
        fds_after, rss_after = _fds(pid), _rss_kib(pid)
        ops = c.operations()
        assert all(o["status"] == "success" for o in ops), [o for o in ops if o["status"] != "success"]

    assert fds_after <= fds + 4, f"jaulad's fds went from {fds} to {fds_after}: {os.listdir(f'/proc/{pid}/fd')}"
    assert rss_after - rss < 16 * 1024, f"jaulad's RSS grew from {rss} KiB to {rss_after} KiB"
    assert not _leftovers(d, names)
    assert not [p for p in cgroups if os.path.exists(p)]
    assert not mounts_under(str(d.top))
    assert seen_ns and veths, "nothing noted: the leak check checked nothing"
    left = _host_leaks(d, names | {f"w{i}" for i in range(3)}, seen_ns, veths)
    assert not left, f"left behind: {left}"
