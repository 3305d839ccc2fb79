"""Pools for real, as root: the overlayfs backends (`dir`, `loop`) through the whole Pool interface.

btrfs has its own module (it needs a btrfs filesystem, made on a loop device), the loop pool's
quota too, and idmapped roots theirs.
"""

# ruff: noqa: F811 - `area` is a fixture imported from pool_checks
from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from pool_checks import MiB, area, du, make_template, mounts_under, read, tree  # noqa: F401

from jaula.errors import BadState, ConfigError, Exists, JaulaError, NotFound
from jaula.linux import loop
from jaula.linux import mount as m
from jaula.storage import overlay, pool_loop
from jaula.storage.pool import open_pool

pytestmark = pytest.mark.root
KINDS = ["dir", "loop"]
SIZE = {"dir": None, "loop": 64 * MiB}


@pytest.fixture(scope="module")
def big_template(tmp_path_factory):
    """A 300 MB template that really holds 300 MB: 30 files of 10 MB of random bytes."""
    root = tmp_path_factory.mktemp("big") / "rootfs"
    make_template(str(root))
    os.makedirs(root / "data")
    digests = {}
    for i in range(30):
        block = os.urandom(10 * MiB)
        (root / "data" / f"blob{i:02}").write_bytes(block)
        digests[f"data/blob{i:02}"] = hashlib.sha256(block).hexdigest()
    yield str(root), digests
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def env(area):
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    return area, template, str(target)


def pool_of(kind, area):
    return open_pool(kind, str(area / f"pool-{kind}"))


def test_clone_of_300mb_template_is_instant_and_takes_no_disk(area, big_template):
    template, digests = big_template
    assert du(template) >= 300 * 10**6
    pool = pool_of("dir", area)
    # Speed is measured by bench/storage.py, not asserted here: no copy means no disk used.
    pool.create_volume("big", template)
    used = du(pool.vdir("big"))
    assert used < 64 * 1024, f"the new volume takes {used} bytes: the template was copied"
    pool.clone("big", "big2")
    assert du(pool.vdir("big2")) < 64 * 1024
    target = area / "root"
    target.mkdir()
    pool.mount("big2", str(target))
    try:
        blob = "data/blob07"
        assert hashlib.sha256((target / blob).read_bytes()).hexdigest() == digests[blob]
        assert len(os.listdir(target / "data")) == 30
    finally:
        pool.unmount("big2")
    assert du(pool.vdir("big2")) < 64 * 1024  # reading copied nothing up


@pytest.mark.parametrize("kind", KINDS)
def test_volume_is_a_copy_on_write_layer(env, kind):
    area, template, target = env
    pool = pool_of(kind, area)
    vol = pool.create_volume("web", template, size=SIZE[kind])
    assert (vol.name, vol.kind, vol.template, vol.size) == ("web", kind, template, SIZE[kind])
    assert [v.name for v in pool.volumes()] == ["web"]
    before = tree(template)
    pool.mount("web", target)
    assert pool.mounted_at("web") == target
    assert read(f"{target}/etc/hostname") == "template\n"
    with open(f"{target}/etc/hostname", "w") as f:
        f.write("web\n")
    os.unlink(f"{target}/etc/passwd")
    subprocess.run(["rm", "-rf", f"{target}/opt/gone"], check=True)
    os.rename(f"{target}/var/lib/app", f"{target}/var/lib/app2")  # a template folder: redirect_dir
    os.makedirs(f"{target}/srv/new")
    pool.unmount("web")
    assert pool.mounted_at("web") is None
    assert mounts_under(str(area)) == []
    assert tree(template) == before, "the template changed"
    pool.mount("web", target)
    try:
        assert read(f"{target}/etc/hostname") == "web\n"
        assert not os.path.exists(f"{target}/etc/passwd")
        assert not os.path.exists(f"{target}/opt/gone")
        assert read(f"{target}/var/lib/app2/data") == "v1\n"
        assert not os.path.exists(f"{target}/var/lib/app")
        assert os.path.isdir(f"{target}/srv/new")
        assert os.stat(f"{target}/bin/tool").st_mode & 0o7777 == 0o4755
    finally:
        pool.unmount("web")
    assert pool.usage("web") > 0
    pool.delete_volume("web")
    assert pool.volumes() == []
    assert os.listdir(pool.volumes_dir) == []


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_and_restore_round_trip(env, kind):
    area, template, target = env
    pool = pool_of(kind, area)
    pool.create_volume("db", template, size=SIZE[kind])
    pool.mount("db", target)
    with open(f"{target}/var/lib/app/data", "w") as f:
        f.write("v2\n")
    os.unlink(f"{target}/etc/hostname")
    pool.snapshot("db", "before")  # while mounted (loop: frozen for the copy)
    pool.unmount("db")
    pool.mount("db", target)
    kept = tree(target)
    with open(f"{target}/var/lib/app/data", "w") as f:
        f.write("v3 broken\n")
    with open(f"{target}/etc/hostname", "w") as f:
        f.write("back\n")
    os.makedirs(f"{target}/junk")
    with pytest.raises(BadState, match="mounted"):
        pool.restore("db", "before")
    pool.unmount("db")
    pool.snapshot("db", "after")
    assert pool.snapshots("db") == ["before", "after"]
    pool.restore("db", "before")
    pool.mount("db", target)
    try:
        assert tree(target) == kept
    finally:
        pool.unmount("db")
    pool.restore("db", "after")
    pool.mount("db", target)
    try:
        assert read(f"{target}/var/lib/app/data") == "v3 broken\n"
        assert os.path.isdir(f"{target}/junk")
    finally:
        pool.unmount("db")
    pool.delete_snapshot("db", "before")
    assert pool.snapshots("db") == ["after"]
    with pytest.raises(NotFound):
        pool.restore("db", "before")
    pool.delete_volume("db")


@pytest.mark.parametrize("kind", KINDS)
def test_clones_are_independent(env, kind):
    area, template, target = env
    pool = pool_of(kind, area)
    pool.create_volume("a", template, size=SIZE[kind])
    pool.mount("a", target)
    with open(f"{target}/etc/hostname", "w") as f:
        f.write("a\n")
    pool.clone("a", "b")  # from a mounted volume
    with open(f"{target}/etc/hostname", "w") as f:
        f.write("a changed\n")
    pool.unmount("a")
    other = area / "other"
    other.mkdir()
    pool.mount("b", str(other))
    try:
        assert read(other / "etc/hostname") == "a\n"
        with open(other / "etc/hostname", "w") as f:
            f.write("b\n")
        os.unlink(other / "etc/passwd")
    finally:
        pool.unmount("b")
    pool.mount("a", target)
    try:
        assert read(f"{target}/etc/hostname") == "a changed\n"
        assert os.path.exists(f"{target}/etc/passwd")
    finally:
        pool.unmount("a")
    assert pool.volume("b").size == SIZE[kind]
    pool.delete_volume("a")
    pool.mount("b", target)  # a clone outlives its source
    try:
        assert read(f"{target}/etc/hostname") == "b\n"
    finally:
        pool.unmount("b")


@pytest.mark.parametrize("src_kind,dst_kind", [("dir", "dir"), ("loop", "loop"), ("dir", "loop"), ("loop", "dir")])
def test_export_import_round_trip(env, src_kind, dst_kind):
    area, template, target = env
    src = pool_of(src_kind, area)
    src.create_volume("app", template, size=SIZE[src_kind])
    src.mount("app", target)
    try:
        os.unlink(f"{target}/etc/passwd")                             # a whiteout
        subprocess.run(["rm", "-rf", f"{target}/opt/gone"], check=True)
        os.makedirs(f"{target}/opt/gone")                             # an opaque folder
        with open(f"{target}/opt/gone/new", "w") as f:
            f.write("new\n")
        with open(f"{target}/srv.bin", "wb") as f:                    # a sparse file
            f.seek(8 * MiB)
            f.write(b"end")
        os.chown(f"{target}/srv.bin", 1000, 1001)
        os.setxattr(f"{target}/srv.bin", "user.note", b"kept")
        os.symlink("/etc/hostname", f"{target}/link")
        os.link(f"{target}/srv.bin", f"{target}/hard")
        expected = tree(target)
    finally:
        src.unmount("app")
    tar = str(area / "app.tar.gz")
    src.export("app", tar)
    assert os.path.getsize(tar) < MiB
    listing = subprocess.run(["tar", "-tf", tar], capture_output=True, text=True, check=True).stdout.split()
    assert listing[0] == "backup.json" and "upper/etc/hostname" not in listing
    dst = src if src_kind == dst_kind else pool_of(dst_kind, area)
    vol = dst.import_("restored", tar, size=SIZE[dst_kind] if dst is not src else None)
    assert (vol.kind, vol.template, vol.size) == (dst_kind, template, SIZE[dst_kind])
    dst.mount("restored", target)
    try:
        assert tree(target) == expected
        assert os.getxattr(f"{target}/srv.bin", "user.note") == b"kept"
        assert os.stat(f"{target}/hard").st_ino == os.stat(f"{target}/srv.bin").st_ino
        assert os.stat(f"{target}/srv.bin").st_blocks * 512 < MiB  # still sparse
    finally:
        dst.unmount("restored")
    with pytest.raises(Exists):
        dst.import_("restored", tar)


def test_import_refuses_what_is_not_a_backup(env):
    area, template, _ = env
    pool = pool_of("dir", area)
    bogus = area / "bogus.tar"
    subprocess.run(["tar", "-cf", str(bogus), "-C", template, "etc"], check=True)
    with pytest.raises(ConfigError, match="not a jaula volume backup"):
        pool.import_("x", str(bogus))
    with pytest.raises(NotFound):
        pool.import_("x", str(area / "missing.tar"))
    assert pool.volumes() == []


@pytest.mark.parametrize("kind", KINDS)
def test_names_and_states_are_checked_first(env, kind):
    area, template, target = env
    pool = pool_of(kind, area)
    for bad in ("", "../x", "a/b", ".hidden", "x" * 65, "sp ace", None):
        with pytest.raises(ConfigError, match="bad volume name"):
            pool.create_volume(bad, template, size=SIZE[kind])
    with pytest.raises(ConfigError, match="absolute"):
        pool.create_volume("v", "relative/path")
    with pytest.raises(NotFound, match="not a directory"):
        pool.create_volume("v", str(area / "nowhere"))
    pool.create_volume("v", template, size=SIZE[kind])
    with pytest.raises(Exists):
        pool.create_volume("v", template, size=SIZE[kind])
    for call in (lambda: pool.mount("nope", target), lambda: pool.unmount("nope"), lambda: pool.usage("nope"),
                 lambda: pool.delete_volume("nope"), lambda: pool.snapshot("nope", "s"),
                 lambda: pool.clone("nope", "x"), lambda: pool.export("nope", str(area / "x.tar"))):
        with pytest.raises(NotFound, match="no volume 'nope'"):
            call()
    with pytest.raises(ConfigError, match="bad snapshot name"):
        pool.snapshot("v", "../s")
    with pytest.raises(ConfigError, match="mount target"):
        pool.mount("v", str(area / "no-such-dir"))
    pool.mount("v", target)
    try:
        with pytest.raises(BadState, match="already mounted"):
            pool.mount("v", str(area))
        with pytest.raises(BadState, match="unmount it first"):
            pool.delete_volume("v")
        with pytest.raises(Exists):
            pool.clone("v", "v")
    finally:
        pool.unmount("v")
    pool.unmount("v")  # a second unmount does nothing
    if kind == "dir":
        with pytest.raises(ConfigError, match="no per-volume disk quota"):
            pool.create_volume("w", template, size=MiB)
    else:
        with pytest.raises(ConfigError, match="too small"):
            pool.create_volume("w", template, size=MiB)
    with pytest.raises(ConfigError, match="is a '" + kind):
        open_pool("loop" if kind == "dir" else "dir", pool.path)
    assert [v.name for v in pool.volumes()] == ["v"]


@pytest.mark.parametrize("kind", KINDS)
def test_failures_roll_back(env, kind, monkeypatch):
    area, template, target = env
    pool = pool_of(kind, area)
    pool.create_volume("v", template, size=SIZE[kind])
    # mount fails after the loop device and the image's mount were made: both undone
    real = overlay.mount_overlay

    def broken(*args, **kw):
        raise JaulaError("injected failure")

    monkeypatch.setattr(overlay, "mount_overlay", broken)
    with pytest.raises(JaulaError, match="injected"):
        pool.mount("v", target)
    assert mounts_under(str(area)) == [] and not loop.devices_of(os.path.join(pool.vdir("v"), "disk.img"))
    assert pool.mounted_at("v") is None
    monkeypatch.setattr(overlay, "mount_overlay", real)
    # overlayfs itself refuses (an option it does not know): the kernel's words, nothing left
    monkeypatch.setattr(overlay, "OVERLAY_OPTIONS", overlay.OVERLAY_OPTIONS + (("no_such_option", "1"),))
    with pytest.raises(OSError, match="overlay"):
        pool.mount("v", target)
    assert mounts_under(str(area)) == [] and pool.mounted_at("v") is None
    monkeypatch.setattr(overlay, "OVERLAY_OPTIONS", overlay.OVERLAY_OPTIONS[:-1])
    # the template is gone: said so before anything is made
    os.rename(template, template + ".moved")
    with pytest.raises(NotFound, match="template root .* is gone"):
        pool.mount("v", target)
    assert mounts_under(str(area)) == []
    os.rename(template + ".moved", template)
    # the overlay was unmounted behind the pool's back: unmount still frees the image and device
    pool.mount("v", target)
    m.umount2(target)
    pool.unmount("v")
    assert mounts_under(str(area)) == [] and not loop.devices_of(os.path.join(pool.vdir("v"), "disk.img"))
    # a volume that fails half-made leaves no folder
    if kind == "loop":
        monkeypatch.setattr(pool_loop, "MKFS", ["false"])
    else:
        monkeypatch.setattr(os, "chown", lambda *a: (_ for _ in ()).throw(PermissionError(1, "injected")))
    with pytest.raises((JaulaError, OSError)):
        pool.create_volume("w", template, size=SIZE[kind])
    monkeypatch.undo()
    assert sorted(os.listdir(pool.volumes_dir)) == ["v"]
    pool.mount("v", target)
    pool.unmount("v")
