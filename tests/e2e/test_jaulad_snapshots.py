"""Snapshots, copy, export and import end to end: a real jaulad over a private root, driven by the
`jaula` CLI. A file is written into a running busybox instance's root through its mount on the
host (owned by uid 1000 inside), snapshotted, changed, copied from the running instance and from
the snapshot (or with its snapshots), restored (refused while running without --stop), exported (downloaded) and imported
(uploaded) under a new name with another id range: content, owner (as seen inside) and host name as they should be.
What a jaulad killed mid-export leaves (a scratch volume, a half-imported snapshot) goes at its
next start. Bad names and missing snapshots give clear errors with their exit codes; after the
deletes no mount, volume, snapshot row, cgroup or process is left."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from jaula.errors import ExitCode
from tests.e2e import test_jaulad as base
from tests.e2e.test_jaulad import JAULA, Daemon

pytestmark = pytest.mark.root
daemon = base.daemon  # the fixture: a jaulad over a temporary root


def _fails(d: Daemon, *args: str) -> tuple[int, str]:
    r = subprocess.run([*JAULA, "--socket", str(d.socket), *args], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0, f"jaula {' '.join(args)} should have failed: {r.stdout}"
    return r.returncode, r.stdout + r.stderr


def _volume(d: Daemon, name: str) -> Path:
    return d.root / "pools/default/volumes" / name


def _base(d: Daemon, name: str) -> int:
    """The host id that is root inside instance `name` (its volume is stored shifted to it)."""
    return json.loads((_volume(d, name) / "volume.json").read_text())["idmap"][0]  # [uid base, gid base, size]


def _rootfs(d: Daemon, name: str) -> Path:
    """The running instance's root tree, as mounted on the host."""
    return d.root / "instances/bundles" / name / "rootfs"


def _write(d: Daemon, name: str, text: str) -> None:
    f = _rootfs(d, name) / "root/f"
    f.write_text(text)
    os.chown(f, _base(d, name) + 1000, _base(d, name) + 1000)


def test_snapshot_copy_restore_export_import(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    d.start()
    d.jaula("launch", "busybox", "e1", "-c", "user.note=first")
    d.note("e1")
    _write(d, "e1", "one\n")
    assert "Snapshot s1 of e1 created" in d.jaula("snapshot", "create", "e1", "s1")
    assert "Snapshot snap0 of e1 created" in d.jaula("snapshot", "create", "e1")
    listed = json.loads(d.jaula("snapshot", "list", "e1", "--format", "json"))
    assert [s["name"] for s in listed] == ["s1", "snap0"] and listed[0]["config"]["user.note"] == "first"
    assert "s1" in d.jaula("snapshot", "list", "e1")
    assert d.instances()["e1"]["status"] == "running"  # thawed after the snapshot
    _write(d, "e1", "two\n")
    d.jaula("config", "set", "e1", "user.note=second")

    # copies: from the running root, and from the snapshot; stopped, with their own ids and name
    d.jaula("copy", "e1", "c1")
    d.jaula("copy", "e1", "c2", "--snapshot", "s1")
    for name, text, note in (("c1", "two\n", "second"), ("c2", "one\n", "first")):
        inst = d.instances()[name]
        assert inst["status"] == "stopped" and inst["config"]["user.note"] == note, inst
        f = _volume(d, name) / "upper/root/f"
        assert f.read_text() == text and os.stat(f).st_uid == _base(d, name) + 1000
        assert (_volume(d, name) / "upper/etc/hostname").read_text() == f"{name}\n"
    assert len({_base(d, n) for n in ("e1", "c1", "c2")}) == 3
    assert "with its snapshots" in d.jaula("copy", "e1", "c3", "--snapshots")
    assert [k["name"] for k in json.loads(d.jaula("snapshot", "list", "c3", "--format", "json"))] == ["s1", "snap0"]
    d.jaula("snapshot", "restore", "c3", "s1")
    assert (_volume(d, "c3") / "upper/root/f").read_text() == "one\n"
    assert (_volume(d, "c3") / "upper/etc/hostname").read_text() == "c3\n"

    # restore: refused while running, then with --stop: stopped, restored, started again
    code, out = _fails(d, "snapshot", "restore", "e1", "s1")
    assert code == ExitCode.BAD_STATE and "--stop" in out
    assert "started again" in d.jaula("snapshot", "restore", "--stop", "e1", "s1")
    d.note("e1")
    assert (_rootfs(d, "e1") / "root/f").read_text() == "one\n"
    assert "user.note=first" in d.jaula("config", "show", "e1").split()

    # export (downloaded), then import (uploaded) under a new name: content and owner as inside,
    # its own host name; its snapshots with it
    backup = tmp_path / "e1.tar.gz"
    assert "exported" in d.jaula("export", "e1", str(backup), "--snapshots")
    assert backup.is_file() and os.listdir(d.root / "backups") == []  # downloaded, then gone from jaulad
    code, out = _fails(d, "export", "e1", str(backup))
    assert code == ExitCode.EXISTS and "exists already" in out
    d.jaula("import", str(backup), "e9")
    d.jaula("start", "e9")
    d.note("e9")
    f = _rootfs(d, "e9") / "root/f"
    assert f.read_text() == "one\n" and os.stat(f).st_uid == _base(d, "e9") + 1000
    assert (_rootfs(d, "e9") / "etc/hostname").read_text() == "e9\n"
    assert d.instances()["e9"]["config"]["user.note"] == "first"
    kept = json.loads(d.jaula("snapshot", "list", "e9", "--format", "json"))
    assert [k["name"] for k in kept] == ["s1", "snap0"] and kept[0]["config"]["user.note"] == "first"
    d.jaula("stop", "e9")
    d.jaula("snapshot", "restore", "e9", "snap0")  # the snapshot taken before "two" was written
    assert (_volume(d, "e9") / "upper/root/f").read_text() == "one\n"
    assert (_volume(d, "e9") / "upper/etc/hostname").read_text() == "e9\n"  # its own, not e1's
    d.jaula("start", "e9")
    d.note("e9")

    # what a jaulad killed during an export or a snapshot import leaves goes at the next start
    d.kill(signal.SIGKILL)
    from jaula.storage import TemplateStore
    from jaula.storage.pool import open_pool

    pool = open_pool("dir", str(d.root / "pools/default"))
    pool.create_volume("x-export-0123456789abcdef", str(TemplateStore(root=d.root / "templates").get("busybox").rootfs))
    (_volume(d, ".new-e9.s1")).mkdir()
    d.start()
    assert sorted(os.listdir(d.root / "pools/default/volumes")) == ["c1", "c2", "c3", "e1", "e9"]
    d.note("e1")  # adopted, still running
    d.note("e9")

    # clear errors
    for args, code, words in (
        (("snapshot", "create", "e1", "Bad_Name"), ExitCode.INVALID_CONFIG, "uppercase"),
        (("snapshot", "create", "e1", "s1"), ExitCode.EXISTS, "already has a snapshot 's1'"),
        (("snapshot", "restore", "e1", "nope"), ExitCode.NOT_FOUND, "has no snapshot 'nope'"),
        (("snapshot", "delete", "e1", "nope"), ExitCode.NOT_FOUND, "has no snapshot 'nope'"),
        (("snapshot", "list", "nope"), ExitCode.NOT_FOUND, "Instance 'nope' not found"),
        (("copy", "e1", "c3", "--snapshot", "nope"), ExitCode.NOT_FOUND, "has no snapshot 'nope'"),
        (("copy", "e1", "c1"), ExitCode.EXISTS, "already exists"),
        (("import", str(tmp_path / "none.tar")), ExitCode.USAGE, "does not exist"),
        (("export", "e1", str(tmp_path / "e1.zip")), ExitCode.USAGE, "end the name with .tar.gz"),
        (("import", str(backup)), ExitCode.EXISTS, "already exists"),  # named e1 in the file
    ):
        got, out = _fails(d, *args)
        assert got == code and words in out, (args, got, out)

    # deletes: snapshots, then every instance; nothing is left
    d.jaula("snapshot", "delete", "e1", "s1", "snap0")
    assert json.loads(d.jaula("snapshot", "list", "e1", "--format", "json")) == []
    assert not any((_volume(d, "e1") / "snapshots").iterdir())
    d.jaula("snapshot", "create", "e1", "last")  # goes with its instance
    for name in ("e1", "e9"):
        d.jaula("stop", name)
    d.jaula("delete", "e1", "e9", "c1", "c2", "c3")
    assert d.instances() == {}
    assert os.listdir(d.root / "pools/default/volumes") == [] and os.listdir(d.root / "backups") == []
    with sqlite3.connect(f"file:{d.root / 'jaula.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM instance_snapshots").fetchone()[0] == 0
    d.kill(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while (left := d.leaks()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
