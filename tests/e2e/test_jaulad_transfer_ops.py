"""Long copies, exports and imports on a real jaulad (the `daemon` fixture of test_jaulad.py),
made long by a big file (BIG bytes of data, not holes) in the source's root:
- another instance's start during a copy, an import or a snapshot is not held up by it: the
  start answers while the copy still runs (it ran in the single-threaded spawner, and the pool's
  lock was held for the whole cp or tar: the start waited for the copy's end);
- a running snapshot, restore, copy, export (to a path or for download; of a running instance,
  frozen for the moment of its root's clone: thawed) or import is cancelled by
  DELETE /1.0/operations/{id}, and by Ctrl-C of `jaula copy`: it ends `cancelled`, its cp or tar
  is killed, and nothing of it is left (no row, no volume, snapshot or half-built folder, no
  partial backup; a restored root as it was); the names are free again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jaula.client import Client
from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root

BIG = 768 << 20
MANY = 10000  # small files besides: per-file work (cp, tar, the owners' shift) as a real root has
NO_NIC = {"nic.eth0.type": "none"}


def _volumes(d: Daemon) -> Path:
    return d.root / "pools/default/volumes"


def _big(d: Daemon, name: str) -> None:
    """BIG bytes of data and MANY small files in stopped instance `name`'s own layer, owned by
    root inside."""
    vdir = _volumes(d) / name
    base = json.loads((vdir / "volume.json").read_text())["idmap"]
    f = vdir / "upper/big"
    block = os.urandom(1 << 20)
    with open(f, "wb") as out:
        out.writelines(block for _ in range(BIG >> 20))
    many = vdir / "upper/many"
    many.mkdir()
    for i in range(MANY):
        (many / str(i)).write_bytes(block[i % 1000 * 1024:][:1024])
    if base:
        for path in (f, many, *many.iterdir()):
            os.chown(path, base[0], base[1])


def _underway(d: Daemon, c: Client, op_id: str, found: object, what: str) -> dict:
    """Wait until operation `op_id` runs and `found()` (its cp or tar is at work); the operation."""
    deadline = time.monotonic() + 60
    while True:
        op = c.operation(op_id)
        assert op["status"] in ("pending", "running"), (what, op, d.logs()[-3000:])
        if op["status"] == "running" and found():  # type: ignore[operator]
            return op
        assert time.monotonic() < deadline, (what, op)
        time.sleep(0.02)


def _building(d: Daemon, name: str) -> object:
    return lambda: any(n.startswith(f".new-{name}.") for n in os.listdir(_volumes(d)))


def _snapshotting(d: Daemon, name: str, snap: str) -> object:
    snaps = _volumes(d) / name / "snapshots"
    return lambda: snaps.is_dir() and any(n.startswith(f".new-{snap}.") for n in os.listdir(snaps))


def _tools_on(d: Daemon) -> list[str]:
    """cp and tar processes working under the daemon's root or top folder."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) in (b"cp", b"tar", b"gzip") and str(d.top).encode() in b" ".join(argv):
            out.append(f"{pid} {b' '.join(argv).decode(errors='replace')}")
    return out


def _nothing_left(d: Daemon, names: set[str]) -> None:
    left = sorted(os.listdir(_volumes(d)))
    assert left == sorted(names), left
    assert not _tools_on(d), _tools_on(d)


def test_a_start_during_a_long_copy_import_or_snapshot_is_not_held_up(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    d = daemon
    d.start()
    with Client(str(d.socket), timeout=120) as c:
        c.create("busybox", "src", config=NO_NIC)
        c.create("busybox", "b1", config=NO_NIC)
        _big(d, "src")
        times = {}
        for what in ("copy", "import", "snapshot"):
            underway = _building(d, "n1")
            if what == "copy":
                t0 = time.monotonic()
                op = c.copy("src", "n1", wait=False)
            elif what == "snapshot":
                t0 = time.monotonic()
                op = c.create_snapshot("src", "s1", wait=False)
                underway = _snapshotting(d, "src", "s1")
            else:
                backup = tmp_path / "src.tar"
                c.export("src", str(backup))
                t0 = time.monotonic()
                op = c.import_(str(backup), "n2", wait=False)
                underway = _building(d, "n2")
            _underway(d, c, op["id"], underway, what)
            t1 = time.monotonic()
            c.start("b1")
            started = time.monotonic() - t1
            during = c.operation(op["id"])["status"]
            ended = c.wait_operation(op["id"])
            took = time.monotonic() - t0
            times[what] = (started, took)
            assert ended["status"] == "success", ended
            # the start answered while the copy still ran, in a fraction of its time
            assert during == "running" and started < took / 2, (what, started, took, during)
            d.note("b1")
            c.stop("b1", force=True)
        print("; ".join(f"start during a {k}: {v[0]:.3f} s ({k} {v[1]:.2f} s)" for k, v in times.items()))
        for name in ("n1", "n2"):  # whole, in their own id range, their own host name
            vdir = _volumes(d) / name
            base = json.loads((vdir / "volume.json").read_text())["idmap"][0]
            big = vdir / "upper/big"
            assert big.stat().st_size == BIG and big.stat().st_uid == base, name
            assert {p.stat().st_uid for p in (vdir / "upper/many").iterdir()} == {base}, name
            assert (vdir / "upper/etc/hostname").read_text() == f"{name}\n"
        assert not list(_volumes(d).glob(".new-*"))
        for name in ("n1", "n2", "b1", "src"):
            c.delete(name)
    d.kill(signal.SIGTERM)
    assert not d.leaks(), d.leaks()
    assert not _tools_on(d)


def test_cancel_a_running_copy_export_or_import(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    d = daemon
    d.start()
    with Client(str(d.socket), timeout=120) as c:
        c.create("busybox", "src", config=NO_NIC)
        _big(d, "src")
        backup = tmp_path / "src.tar"
        c.export("src", str(backup))
        out = tmp_path / "out"
        out.mkdir()

        def partial_export() -> bool:  # backup.write's partial file, in a .export- folder beside the target
            return bool(list(out.glob(".export-*/e.tar.gz")))

        backups = d.root / "backups"

        def downloading() -> bool:
            return backups.is_dir() and bool(list(backups.glob(".export-*/*.tar.gz")))

        c.create_snapshot("src", "s0")  # for the restore's case
        src = _volumes(d) / "src"
        cases = (
            ("snapshot", lambda: c.create_snapshot("src", "s1", wait=False), _snapshotting(d, "src", "s1")),
            ("restore", lambda: c.restore_snapshot("src", "s0", wait=False), lambda: (src / ".upper-new").is_dir()),
            ("copy", lambda: c.copy("src", "c1", wait=False), _building(d, "c1")),
            ("import", lambda: c.import_(str(backup), "i1", wait=False), _building(d, "i1")),
            ("export to a path", lambda: c.export("src", str(out / "e.tar.gz"), wait=False), partial_export),
            ("export for download", lambda: c.request("POST", "/1.0/instances/src/export",
                                                      json={"compression": "gzip"})["metadata"], downloading),
        )
        for what, begin, underway in cases:
            op = begin()
            op = _underway(d, c, op["id"], underway, what)
            assert op["may_cancel"] is True, (what, op)
            asked = c.cancel_operation(op["id"])
            assert asked["status"] in ("running", "cancelled"), (what, asked)
            t0 = time.monotonic()
            ended = c.wait_operation(op["id"], timeout=60, check=False)
            assert ended["status"] == "cancelled" and ended["err"] == "Cancelled by request", (what, ended)
            assert time.monotonic() - t0 < 5, what  # the tool was killed, not waited for
            assert set(d.instances()) == {"src"}, what
            _nothing_left(d, {"src"})
            assert os.listdir(out) == [], (what, os.listdir(out))
            assert not backups.is_dir() or os.listdir(backups) == [], (what, os.listdir(backups))
            assert [k["name"] for k in c.snapshots("src")] == ["s0"], what
            assert sorted(os.listdir(src / "snapshots")) == ["s0"], what
            assert not [n for n in os.listdir(src) if n.startswith((".upper-", ".new-"))], (what, os.listdir(src))
            assert (src / "upper/big").stat().st_size == BIG and (src / "upper/many/9").is_file(), what
        c.delete_snapshot("src", "s0")
        # the names are free again; the copy is whole
        c.copy("src", "c1")
        c.import_(str(backup), "i1")
        assert (_volumes(d) / "c1/upper/big").stat().st_size == BIG
        assert (_volumes(d) / "i1/upper/etc/hostname").read_text() == "i1\n"
        for name in ("c1", "i1"):
            c.delete(name)

        # a running instance's export, cancelled while it is frozen for the clone of its root:
        # thawed, running on, no scratch volume left
        c.start("src")
        d.note("src")
        op = c.export("src", str(out / "r.tar.gz"), wait=False)
        _underway(d, c, op["id"], lambda: any(n.startswith(".new-x-export-") for n in os.listdir(_volumes(d))),
                  "export of a running instance")
        c.cancel_operation(op["id"])
        ended = c.wait_operation(op["id"], timeout=60, check=False)
        assert ended["status"] == "cancelled", ended
        assert c.state("src")["status"] == "running" and c.get("src")["status"] == "running"
        _nothing_left(d, {"src"})
        assert os.listdir(out) == []
        c.stop("src", force=True)

        # Ctrl-C of `jaula copy`: the CLI cancels its operation
        cli = subprocess.Popen([*JAULA, "--socket", str(d.socket), "copy", "src", "c2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not [o for o in c.operations() if o["description"].startswith("Copying instance src")
                   and o["status"] == "running"] or not _building(d, "c2")():  # type: ignore[operator]
            assert time.monotonic() < deadline and cli.poll() is None, d.logs()[-3000:]
            time.sleep(0.02)
        time.sleep(0.3)  # the CLI polls the operation by now
        cli.send_signal(signal.SIGINT)
        said: list[str] = []
        assert cli.stderr is not None
        reader = threading.Thread(target=lambda: said.extend(cli.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        assert cli.wait(60) == 1, "".join(said)
        reader.join(10)
        err = "".join(said)
        assert "Cancelling copying src to c2" in err and "Cancelled by request" in err, err
        assert set(d.instances()) == {"src"}
        _nothing_left(d, {"src"})
        c.delete("src")
    d.kill(signal.SIGTERM)
    assert not d.leaks(), d.leaks()
