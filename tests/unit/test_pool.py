"""Pool logic without mounts: names, id maps, metadata, backup checks, kernel ABI numbers."""

from __future__ import annotations

import ctypes
import io
import json
import os
import tarfile

import pytest

from jaula.errors import ConfigError, Exists, NotFound
from jaula.linux import btrfs, loop
from jaula.storage import backup
from jaula.storage.fsutil import disk_usage, unescape
from jaula.storage.idmap import IdMap, shift_tree
from jaula.storage.pool import Volume, check_name, open_pool


@pytest.mark.parametrize("name", ["a", "web-1", "db_2.old", "A" * 64, "0"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", ".x", "-x", "a/b", "a b", "é", "A" * 65, None, 3, "a\n"])
def test_bad_names_say_what_to_do(name):
    with pytest.raises(ConfigError, match="letters, digits"):
        check_name(name, "snapshot")


def test_idmap_shifts_within_its_range_only():
    im = IdMap(100000, 200000, 1000)
    assert (im.to_host(0), im.to_host(999), im.to_host(1000)) == (100000, 100999, 1000)
    assert im.to_host(5, gid=True) == 200005
    assert (im.to_container(100005), im.to_container(5), im.to_container(200005, gid=True)) == (5, 5, 5)
    assert IdMap.from_json(im.as_json()) == im and IdMap.from_json(None) is None
    assert hash(im) == hash(IdMap(100000, 200000, 1000))


@pytest.mark.parametrize("bad", [IdMap(-1, 0, 10), IdMap(0, 0, 0), IdMap(2**32 - 10, 0, 100), IdMap("1", 0, 5)])
def test_bad_idmaps_are_refused(bad):
    with pytest.raises(ConfigError, match="idmap"):
        bad.validate()


def test_volume_metadata_round_trips_through_json():
    vol = Volume(name="v", kind="loop", template="/t", size=1 << 30, created=1.5, idmap=IdMap(1, 2, 3))
    assert Volume.from_json(json.loads(json.dumps(vol.to_json()))) == vol


def test_mountinfo_escapes():
    assert unescape(r"/a\040b\011c") == "/a b\tc"


def test_disk_usage_counts_hard_links_once(tmp_path):
    (tmp_path / "f").write_bytes(os.urandom(1 << 20))
    os.link(tmp_path / "f", tmp_path / "g")
    assert (1 << 20) <= disk_usage(str(tmp_path)) < (1 << 20) + 64 * 1024


def test_open_pool_checks_kind_and_path(tmp_path):
    with pytest.raises(ConfigError, match="unknown pool kind 'zfs'"):
        open_pool("zfs", str(tmp_path))
    with pytest.raises(ConfigError, match="absolute"):
        open_pool("dir", "relative")
    with pytest.raises(ConfigError, match="unknown option quota for a dir pool .it takes: none"):
        open_pool("dir", str(tmp_path / "p"), quota=5)
    with pytest.raises(ConfigError, match="at least 33554432 bytes"):
        open_pool("loop", str(tmp_path / "l"), default_size=1 << 20).create_volume("v", str(tmp_path))
    pool = open_pool("dir", str(tmp_path / "p"))
    assert json.loads((tmp_path / "p/pool.json").read_text())["kind"] == "dir"
    with pytest.raises(ConfigError, match="is a 'dir' pool, not 'loop'"):
        open_pool("loop", pool.path)


def test_dir_pool_without_mounting(tmp_path):
    """create, clone, snapshot, restore and usage of a dir pool touch no mount at all."""
    tpl = tmp_path / "tpl"
    (tpl / "etc").mkdir(parents=True)
    pool = open_pool("dir", str(tmp_path / "p"))
    vol = pool.create_volume("a", str(tpl))
    assert vol.idmap is None and vol.size is None
    upper = tmp_path / "p/volumes/a/upper"
    assert os.stat(upper).st_mode & 0o7777 == os.stat(tpl).st_mode & 0o7777
    (upper / "f").write_text("1")
    pool.snapshot("a", "s")
    (upper / "f").write_text("2")
    pool.clone("a", "b")
    pool.restore("a", "s")
    assert (upper / "f").read_text() == "1"
    assert (tmp_path / "p/volumes/b/upper/f").read_text() == "2"
    with pytest.raises(Exists):
        pool.snapshot("a", "s")
    with pytest.raises(NotFound, match="no snapshot 'zz'"):
        pool.delete_snapshot("a", "zz")
    assert pool.usage("b") > 0
    assert [v.name for v in pool.volumes()] == ["a", "b"]
    pool.delete_volume("a")
    assert sorted(os.listdir(tmp_path / "p/volumes")) == ["b"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_shift_tree_moves_owners_and_keeps_setuid(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/f").write_text("x")
    os.chown(tmp_path / "d/f", 5, 7)
    os.chmod(tmp_path / "d/f", 0o4755)
    os.symlink("f", tmp_path / "d/l")
    os.chown(tmp_path / "d", 100000, 100000)
    os.chown(tmp_path / "d/l", 70000, 70000, follow_symlinks=False)  # outside the range: kept
    old, new = IdMap(100000, 100000, 65536), IdMap(300000, 400000, 65536)
    shift_tree(str(tmp_path / "d"), None, old)  # 5 -> 100005; 100000 is outside the range [0, 65536)
    assert os.stat(tmp_path / "d/f").st_uid == 100005 and os.stat(tmp_path / "d/f").st_gid == 100007
    shift_tree(str(tmp_path / "d"), old, new)
    st = os.stat(tmp_path / "d/f")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (300005, 400007, 0o4755)
    assert os.stat(tmp_path / "d").st_uid == 300000
    assert os.lstat(tmp_path / "d/l").st_uid == 70000
    assert shift_tree(str(tmp_path / "d"), new, new) == 0


def _tar(path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return str(path)


def test_backup_metadata_is_checked(tmp_path):
    good = {"format": "jaula-volume", "version": 1, "layout": "overlay-upper", "kind": "dir",
            "template": "/t", "size": None}
    meta = json.dumps(good).encode()
    assert backup.read_meta(_tar(tmp_path / "ok.tar", {"backup.json": meta}), "overlay-upper")["kind"] == "dir"
    with pytest.raises(ConfigError, match="first member is not backup.json"):
        backup.read_meta(_tar(tmp_path / "a.tar", {"upper/x": b"", "backup.json": meta}), "overlay-upper")
    with pytest.raises(ConfigError, match="does not fit this pool, which takes 'tree'"):
        backup.read_meta(str(tmp_path / "ok.tar"), "tree")
    bad = json.dumps(dict(good, version=9, size=-1, template=None)).encode()
    with pytest.raises(ConfigError) as e:
        backup.read_meta(_tar(tmp_path / "b.tar", {"backup.json": bad}), "overlay-upper")
    assert len(e.value.problems) == 3
    with pytest.raises(ConfigError, match="not a jaula volume backup"):
        backup.read_meta(_tar(tmp_path / "c.tar", {"backup.json": b'{"format": "x"}'}), "overlay-upper")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ConfigError, match="cannot read backup"):
        backup.read_meta(str(tmp_path / "junk.tar"), "overlay-upper")


def test_kernel_abi_numbers():
    # linux/loop.h and linux/btrfs.h on x86_64 and arm64
    assert ctypes.sizeof(loop.LoopInfo64) == 232 and ctypes.sizeof(loop.LoopConfig) == 304
    assert ctypes.sizeof(btrfs.VolArgs) == ctypes.sizeof(btrfs.VolArgsV2) == 4096
    assert btrfs.BTRFS_IOC_SNAP_CREATE_V2 == 0x50009417
    assert btrfs.BTRFS_IOC_SUBVOL_CREATE_V2 == 0x50009418
    assert btrfs.BTRFS_IOC_SNAP_DESTROY == 0x5000940F
    assert btrfs.BTRFS_IOC_SUBVOL_GETFLAGS == 0x80089419
    assert btrfs.BTRFS_IOC_SUBVOL_SETFLAGS == 0x4008941A
