"""The btrfs pool for real, on a btrfs made by the test in a sparse image on a loop device."""

# ruff: noqa: F811 - `area` is a fixture imported from pool_checks
from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest
from pool_checks import MiB, area, in_userns, make_template, tree  # noqa: F401

from jaula.errors import BadState, ConfigError
from jaula.linux import loop
from jaula.linux import mount as m
from jaula.storage.idmap import IdMap
from jaula.storage.pool import open_pool

pytestmark = pytest.mark.root


def btrfs_missing() -> str | None:
    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read().split():
            return "the kernel has no btrfs filesystem (CONFIG_BTRFS_FS; modprobe btrfs)"
    for tool in ("mkfs.btrfs", "btrfs"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install btrfs-progs)"
    return None


@pytest.fixture
def fs(area):
    """A fresh 512 MiB btrfs mounted under the test's folder (sparse: it takes almost no disk)."""
    if why := btrfs_missing():
        pytest.skip(why)
    image = area / "btrfs.img"
    with open(image, "wb") as f:
        f.truncate(512 * MiB)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    mnt = area / "btrfs"
    mnt.mkdir()
    dev, fd = loop.attach(str(image))
    try:
        m.mount(dev, str(mnt), "btrfs")
    finally:
        os.close(fd)
    yield mnt
    m.umount2(str(mnt))


def subvolumes(mnt) -> list[str]:
    out = subprocess.run(["btrfs", "subvolume", "list", "-o", str(mnt)], capture_output=True, text=True, check=True)
    return sorted(line.split(" path ")[-1] for line in out.stdout.splitlines())


def test_btrfs_pool_flow(fs, area):
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    with pytest.raises(ConfigError, match="not on a btrfs"):
        open_pool("btrfs", str(area / "elsewhere"))
    pool = open_pool("btrfs", str(fs / "pool"))
    pool.create_volume("a", template)
    pool.create_volume("b", template)  # the template is imported once
    assert len([n for n in os.listdir(fs / "pool/templates") if not n.endswith(".json")]) == 1
    pool.mount("a", str(target))
    try:
        assert pool.mounted_at("a") == str(target)
        with open(target / "etc/hostname", "w") as f:
            f.write("a\n")
        os.unlink(target / "etc/passwd")
        kept = tree(str(target))
        pool.snapshot("a", "s1")  # atomic while mounted
        with open(target / "etc/hostname", "w") as f:
            f.write("changed\n")
        with pytest.raises(BadState):
            pool.restore("a", "s1")
    finally:
        pool.unmount("a")
    pool.restore("a", "s1")
    pool.clone("a", "c")
    pool.mount("c", str(target))
    try:
        assert tree(str(target)) == kept
        with open(target / "etc/hostname", "w") as f:
            f.write("c\n")
    finally:
        pool.unmount("c")
    pool.mount("a", str(target))
    try:
        assert tree(str(target)) == kept  # the clone's write stayed in the clone
    finally:
        pool.unmount("a")
    tar = str(area / "a.tar")
    pool.export("a", tar)
    pool.import_("d", tar)
    pool.mount("d", str(target))
    try:
        assert tree(str(target)) == kept
    finally:
        pool.unmount("d")
    with pytest.raises(ConfigError, match="does not fit"):  # a tree backup is no overlay layer
        open_pool("dir", str(area / "dirpool")).import_("x", tar)
    assert pool.snapshots("a") == ["s1"]
    assert pool.usage("b") < MiB
    for name in ("a", "b", "c", "d"):
        pool.delete_volume(name)
    assert subvolumes(fs) == [p for p in subvolumes(fs) if p.startswith("pool/templates/")]
    assert len(subvolumes(fs)) == 1


def test_btrfs_quota_and_idmap(fs, area):
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    pool = open_pool("btrfs", str(fs / "pool"))
    pool.create_volume("q", template, size=32 * MiB)
    pool.mount("q", str(target))
    try:
        block, written, err = os.urandom(MiB), 0, None
        with open(target / "fill", "wb") as f:
            try:
                while written < 128 * MiB:
                    written += f.write(block)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                err = e.errno
        assert err == errno.EDQUOT and written <= 40 * MiB, (written, err)
        os.unlink(target / "fill")
    finally:
        pool.unmount("q")
    pool.resize("q", 256 * MiB)
    n = 250000
    pool.mount("q", str(target), idmap=IdMap(n, n, 65536))
    try:
        assert os.stat(target / "etc/hostname").st_uid == n
        got = in_userns(n, n, str(target), lambda: (open("new", "w").close(), os.stat("new").st_uid,
                                                     os.stat("etc/passwd").st_uid)[1:])
        assert got == [0, 0]
    finally:
        pool.unmount("q")
    # btrfs volumes are idmapped whole: files are stored as seen inside
    assert os.lstat(os.path.join(pool.vdir("q"), "root", "new")).st_uid == 0
    pool.delete_volume("q")
