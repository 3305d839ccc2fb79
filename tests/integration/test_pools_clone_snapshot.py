"""`Pool.clone(src, dst, snapshot)`: a new volume from a snapshot of another, for real on the
`dir`, `loop` and `btrfs` pools: it holds what the snapshot held (deletions included), not what the
source holds now, keeps the snapshot's id range, and a failure leaves no volume."""

# ruff: noqa: F811 - `area` is a fixture imported from pool_checks
from __future__ import annotations

import os

import pytest
from pool_checks import MiB, area, make_template, tree  # noqa: F401

from jaula.errors import Exists, NotFound
from jaula.storage.idmap import IdMap
from jaula.storage.pool import open_pool
from tests.integration import test_pools_btrfs

pytestmark = pytest.mark.root
SIZE = {"dir": None, "loop": 64 * MiB, "btrfs": 64 * MiB}
fs = test_pools_btrfs.fs  # a btrfs on a loop device (skips where the kernel or tools lack it)


@pytest.mark.parametrize("kind", ["dir", "loop", "btrfs"])
def test_clone_of_a_snapshot(area, kind, request):
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    where = request.getfixturevalue("fs") if kind == "btrfs" else area
    pool = open_pool(kind, str(where / "pool"))
    ids = IdMap(2000000, 2000000, 65536)
    pool.create_volume("a", template, size=SIZE[kind])
    pool.mount("a", str(target), idmap=ids)
    (target / "var/lib/app/data").write_text("v2\n")
    os.unlink(target / "etc/hostname")
    pool.unmount("a")
    pool.snapshot("a", "s1")
    pool.mount("a", str(target), idmap=ids)
    kept = tree(str(target))
    (target / "var/lib/app/data").write_text("v3\n")
    pool.unmount("a")

    vol = pool.clone("a", "b", "s1")
    # the snapshot's id range: overlay layers are stored shifted, btrfs trees as seen inside
    assert vol.idmap == (None if kind == "btrfs" else ids) and pool.snapshots("b") == []
    pool.mount("b", str(target), idmap=ids)
    try:
        assert tree(str(target)) == kept
        assert not (target / "etc/hostname").exists()
    finally:
        pool.unmount("b")

    with pytest.raises(NotFound, match="no snapshot 's9'"):
        pool.clone("a", "c", "s9")
    with pytest.raises(Exists, match="already exists"):
        pool.clone("a", "b", "s1")
    assert [v.name for v in pool.volumes()] == ["a", "b"]
    assert sorted(os.listdir(pool.volumes_dir)) == ["a", "b"]
    for name in ("a", "b"):
        pool.delete_volume(name)


@pytest.mark.parametrize("kind", ["dir", "loop", "btrfs"])
def test_import_of_a_backup_as_a_snapshot(area, kind, request):
    """`Pool.import_snapshot`: another volume's export becomes a snapshot; restored, it shows what
    the exported volume held, with the owners seen inside whatever range each is mounted with."""
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    where = request.getfixturevalue("fs") if kind == "btrfs" else area
    pool = open_pool(kind, str(where / "pool"))
    pool.create_volume("a", template, size=SIZE[kind])
    pool.mount("a", str(target), idmap=IdMap(2000000, 2000000, 65536))
    (target / "var/lib/app/data").write_text("from a\n")
    os.chown(target / "var/lib/app/data", 2001000, 2001000)  # uid 1000 inside
    os.unlink(target / "etc/hostname")
    pool.unmount("a")
    pool.mount("a", str(target))  # unshifted: as seen inside
    kept = tree(str(target))
    pool.unmount("a")
    backup = str(area / "a.tar")
    pool.export("a", backup)

    pool.create_volume("c", template, size=SIZE[kind])
    pool.import_snapshot("c", "imp", backup)
    assert pool.snapshots("c") == ["imp"]
    with pytest.raises(Exists, match="already has a snapshot 'imp'"):
        pool.import_snapshot("c", "imp", backup)
    pool.restore("c", "imp")
    pool.mount("c", str(target))
    try:
        assert tree(str(target)) == kept and (target / "var/lib/app/data").stat().st_uid == 1000
    finally:
        pool.unmount("c")
    assert sorted(os.listdir(pool.volumes_dir)) == ["a", "c"]  # no scratch folder left
    for name in ("a", "c"):
        pool.delete_volume(name)


@pytest.mark.parametrize("kind", ["dir", "loop", "btrfs"])
def test_snapshot_from_another_volume(area, kind, request):
    """`Pool.snapshot_from`: what one volume holds becomes a snapshot of another over the same
    template, in its id range (restored and mounted, the owners are right)."""
    from jaula.errors import BadState, ConfigError

    template = make_template(str(area / "template"))
    other_template = make_template(str(area / "template2"))
    target = area / "root"
    target.mkdir()
    where = request.getfixturevalue("fs") if kind == "btrfs" else area
    pool = open_pool(kind, str(where / "pool"))
    ids = IdMap(2000000, 2000000, 65536)
    pool.create_volume("a", template, size=SIZE[kind])
    pool.mount("a", str(target), idmap=ids)
    (target / "var/lib/app/data").write_text("from a\n")
    os.chown(target / "var/lib/app/data", 2001000, 2001000)
    kept = tree(str(target))
    with pytest.raises(BadState, match="mounted"):
        pool.create_volume("b", template, size=SIZE[kind])
        pool.snapshot_from("b", "x", "a")
    pool.unmount("a")
    pool.create_volume("o", other_template, size=SIZE[kind])
    with pytest.raises(ConfigError, match="cannot be a snapshot of it"):
        pool.snapshot_from("o", "x", "a")

    pool.snapshot_from("b", "froma", "a")
    assert pool.snapshots("b") == ["froma"] and pool.snapshots("a") == []
    pool.restore("b", "froma")
    pool.mount("b", str(target), idmap=ids)
    try:
        assert tree(str(target)) == kept
    finally:
        pool.unmount("b")
    assert sorted(os.listdir(pool.volumes_dir)) == ["a", "b", "o"]
    for name in ("a", "b", "o"):
        pool.delete_volume(name)
