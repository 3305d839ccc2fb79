"""The container driver's snapshots, copies and backups for real (container_storage.py): a
running busybox instance snapshotted and copied (frozen for the moment, then running on), restore
of its root, a copy from a snapshot, an export whose owners are the ones seen inside and its
import for an instance with another id range (with its snapshots too), and archives that try
to escape refused before anything is extracted. Nothing is left: no mount, volume, cgroup or process.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from jaula.errors import BadState, ConfigError, Exists, NotFound
from jaula.instances.model import Instance
from tests.integration import test_instances_container as base
from tests.integration.test_instances_container import Host, booted

pytestmark = pytest.mark.root
store, host = base.store, base.host  # the container driver's tests' fixtures


def _upper(h: Host, inst: Instance) -> Path:
    return Path(h.pool.vdir(inst.name)) / "upper"


def _like(h: Host, inst: Instance, n: int, made: bool = True) -> Instance:
    """A new instance (not created) of the same template, with its own id range; `made`: the
    test makes its root (the fixture deletes it after)."""
    new = Instance.new(f"{inst.name}-c{n}", "bb", idmap_base=inst.idmap_base + 65536 * 50 * n)
    if made:
        h.instances.append(new)
    return new


def test_snapshot_copy_restore_of_a_running_instance(host: Host) -> None:
    h = host
    inst = h.new()
    h.start(inst)
    booted(h, inst)
    assert h.sh(inst, "echo one > /root/f && chown 1000:1001 /root/f")[0] == 0
    got = h.driver.snapshot(inst, "s1")
    assert got["live"] is False and got["size"] > 0
    assert h.driver.state(inst).status == "running"  # thawed after the copy
    assert h.sh(inst, "echo two > /root/f")[0] == 0

    copy = _like(h, inst, 1)  # from the running root
    h.driver.copy(copy, inst.name)
    f = _upper(h, copy) / "root/f"
    assert f.read_text() == "two\n"
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (copy.idmap_base + 1000, copy.idmap_base + 1001)
    assert (_upper(h, copy) / "etc/hostname").read_text() == copy.name + "\n"

    old = _like(h, inst, 2)  # from the snapshot
    h.driver.copy(old, inst.name, "s1")
    assert (_upper(h, old) / "root/f").read_text() == "one\n"
    h.start(old)
    assert h.sh(old, "cat /root/f; stat -c %u:%g /root/f; cat /etc/hostname")[1].split() == ["one", "1000:1001", old.name]
    h.driver.stop(old, force=True)

    h.driver.freeze(inst)  # a frozen instance is snapshotted as it is, and stays frozen
    h.driver.snapshot(inst, "s2")
    assert h.driver.state(inst).status == "frozen"
    h.driver.unfreeze(inst)
    with pytest.raises(BadState, match="stop it first"):
        h.driver.restore(inst, "s1")
    h.driver.stop(inst, force=True)
    h.driver.restore(inst, "s1")
    h.start(inst)
    assert h.sh(inst, "cat /root/f")[1] == "one\n"
    h.driver.stop(inst, force=True)
    h.driver.delete_snapshot(inst, "s1")
    assert h.pool.snapshots(inst.name) == ["s2"]
    with pytest.raises(NotFound, match="no snapshot 's1'"):
        h.driver.restore(inst, "s1")
    with pytest.raises(ConfigError, match="Snapshot name"):
        h.driver.snapshot(inst, "../x")


def test_export_has_the_owners_seen_inside_and_imports_with_another_range(host: Host, tmp_path: Path) -> None:
    h = host
    inst = h.new()
    h.start(inst)
    booted(h, inst)
    assert h.sh(inst, "echo kept > /root/f && chown 1000:1001 /root/f && chmod 4750 /root/f && rm /bin/vi")[0] == 0
    path = str(tmp_path / "b.tar.gz")
    h.driver.export(inst, path, {"name": inst.name, "note": "x"})
    assert h.driver.state(inst).status == "running"
    with pytest.raises(Exists, match="exists already"):
        h.driver.export(inst, path, {})
    h.driver.stop(inst, force=True)
    with tarfile.open(path) as tar:
        meta = json.load(tar.extractfile("backup.json"))  # type: ignore[arg-type]
        m = tar.getmember("upper/root/f")
        assert (m.uid, m.gid, m.mode & 0o7777) == (1000, 1001, 0o4750)  # un-shifted: as seen inside
    assert meta["instance"] == {"name": inst.name, "note": "x"} and meta["format"] == "jaula-volume"

    new = _like(h, inst, 3)
    h.driver.import_(new, path)
    f = _upper(h, new) / "root/f"
    assert os.stat(f).st_uid == new.idmap_base + 1000 and f.read_text() == "kept\n"
    h.start(new)
    out = h.sh(new, "cat /root/f; stat -c %u:%g:%a /root/f; cat /etc/hostname; test -e /bin/vi || echo novi")[1]
    assert out.split() == ["kept", "1000:1001:4750", new.name, "novi"]  # the whiteout came too
    h.driver.stop(new, force=True)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        meta = json.dumps({"format": "jaula-volume", "version": 1, "layout": "overlay-upper", "kind": "dir",
                           "name": "x", "template": "/nowhere", "size": None}).encode()
        info = tarfile.TarInfo("backup.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    return str(path)


def _m(name: str, kind: bytes = tarfile.DIRTYPE, **kw: object) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.mode = 0o755
    for k, v in kw.items():
        setattr(m, k, v)
    return m


@pytest.mark.parametrize("members, why", [
    ([(_m("upper"), None), (_m("upper/etc", tarfile.SYMTYPE, linkname="/etc"), None),
      (_m("upper/etc/passwd", tarfile.REGTYPE, size=1), b"x")], "below the symbolic link 'upper/etc'"),
    ([(_m("upper"), None), (_m("upper/../../x", tarfile.REGTYPE, size=1), b"x")], "'..' component"),
    ([(_m("upper"), None), (_m("upper/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None)], "block device 8:0"),
    ([(_m("upper"), None), (_m("upper/mem", tarfile.CHRTYPE, devmajor=1, devminor=1), None)], "character device 1:1"),
    ([(_m("other/f", tarfile.REGTYPE, size=1), b"x")], "outside upper/"),
    ([(_m("upper"), None), (_m("upper/h", tarfile.LNKTYPE, linkname="etc/shadow"), None)], "not an earlier member"),
])
def test_archives_that_escape_are_refused_before_anything_is_made(host: Host, tmp_path: Path,
                                                                   members: list, why: str) -> None:
    h = host
    inst = h.new()
    new = _like(h, inst, 4, made=False)
    with pytest.raises(ConfigError, match="refused") as exc:
        h.driver.import_(new, _tar(tmp_path / "evil.tar", members))
    assert any(why in p for p in exc.value.problems), exc.value.problems
    assert [v.name for v in h.pool.volumes()] == [inst.name]
    assert not os.path.exists("/x")


def test_export_and_import_with_snapshots(host: Host, tmp_path: Path) -> None:
    h = host
    inst = h.new()
    h.start(inst)
    booted(h, inst)
    assert h.sh(inst, "echo one > /root/f && chown 1000:1000 /root/f")[0] == 0
    h.driver.snapshot(inst, "s1")
    assert h.sh(inst, "echo two > /root/f && rm /bin/vi")[0] == 0
    h.driver.snapshot(inst, "s2")
    assert h.sh(inst, "echo three > /root/f")[0] == 0
    path = str(tmp_path / "b.tar.xz")
    with pytest.raises(ConfigError, match="no snapshot 'nope'"):
        h.driver.export(inst, path, {}, ["nope"])
    h.driver.export(inst, path, {}, ["s1", "s2"])
    assert h.driver.state(inst).status == "running"
    h.driver.stop(inst, force=True)
    with tarfile.open(path) as tar:
        assert {n for n in tar.getnames() if n.startswith("snapshots/")} == {"snapshots/s1.tar", "snapshots/s2.tar"}
    assert sorted(os.listdir(tmp_path)) == ["b.tar.xz"]  # no scratch files
    assert [v.name for v in h.pool.volumes()] == [inst.name]  # nor scratch volumes

    new = _like(h, inst, 5)
    with pytest.raises(ConfigError, match="holds no snapshot 's9'"):
        h.driver.import_(new, path, ["s9"])
    assert [v.name for v in h.pool.volumes()] == [inst.name]
    h.driver.import_(new, path, ["s1", "s2"])
    assert h.pool.snapshots(new.name) == ["s1", "s2"]
    assert not [n for n in os.listdir(h.pool.volumes_dir) if n.startswith(".")]  # no scratch folder
    h.start(new)
    assert h.sh(new, "cat /root/f")[1] == "three\n"
    h.driver.stop(new, force=True)
    for snap, text, vi in (("s1", "one", "vi"), ("s2", "two", "novi")):
        h.driver.restore(new, snap)
        h.start(new)
        out = h.sh(new, "cat /root/f; stat -c %u /root/f; test -e /bin/vi && echo vi || echo novi; cat /etc/hostname")[1]
        assert out.split() == [text, "1000", vi, new.name], snap  # restored, it still names itself
        h.driver.stop(new, force=True)


def test_copy_takes_the_sources_snapshots(host: Host) -> None:
    h = host
    inst = h.new()
    h.start(inst)
    booted(h, inst)
    assert h.sh(inst, "echo one > /root/f && chown 1000:1000 /root/f")[0] == 0
    h.driver.snapshot(inst, "s1")
    assert h.sh(inst, "echo two > /root/f")[0] == 0
    copy = _like(h, inst, 6)
    with pytest.raises(ConfigError, match="no snapshot 'nope'"):
        h.driver.copy(copy, inst.name, snapshots=["nope"])
    h.driver.copy(copy, inst.name, snapshots=["s1"])  # from the running source
    h.driver.stop(inst, force=True)
    assert h.pool.snapshots(copy.name) == ["s1"] and h.pool.snapshots(inst.name) == ["s1"]
    assert [v.name for v in h.pool.volumes()] == sorted([inst.name, copy.name])  # no scratch volume left
    h.driver.restore(copy, "s1")
    h.start(copy)
    assert h.sh(copy, "cat /root/f; stat -c %u /root/f; cat /etc/hostname")[1].split() == ["one", "1000", copy.name]
    f = _upper(h, copy) / "root/f"
    assert os.stat(f).st_uid == copy.idmap_base + 1000  # shifted to the copy's own range
    h.driver.stop(copy, force=True)
