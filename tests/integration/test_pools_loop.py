"""The loop pool's hard disk quota, for real: ENOSPC at the image's size, growth online and offline."""

# ruff: noqa: F811 - `area` is a fixture imported from pool_checks
from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest
from pool_checks import MiB, area, make_template  # noqa: F401

from jaula.errors import BadState, ConfigError
from jaula.storage import pool_loop
from jaula.storage.pool import open_pool
from jaula.storage.pool_loop import has_cap_sys_resource

pytestmark = pytest.mark.root


def fill(path: str, limit: int) -> tuple[int, int | None]:
    """Write 1 MiB blocks to `path` until `limit` bytes or an error; (bytes written, errno)."""
    block = os.urandom(MiB)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while written < limit:
            try:
                written += os.write(fd, block)
            except OSError as e:
                return written, e.errno
        try:
            os.fsync(fd)
        except OSError as e:
            return written, e.errno
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return written, None


def test_quota_stops_writes_with_enospc_and_grows_online(area):
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    pool = open_pool("loop", str(area / "pool"))
    pool.create_volume("q", template, size=64 * MiB)
    assert pool.usage("q") < 8 * MiB  # sparse: mkfs wrote almost nothing
    pool.mount("q", str(target))
    try:
        written, err = fill(str(target / "fill"), 200 * MiB)
        assert err == errno.ENOSPC, f"wrote {written >> 20} MiB without ENOSPC ({err})"
        assert 40 * MiB < written <= 64 * MiB
        assert pool.usage("q") <= 64 * MiB + MiB
        if has_cap_sys_resource():
            pool.resize("q", 128 * MiB)  # mounted: truncate, LOOP_SET_CAPACITY, online resize2fs
            more, err = fill(str(target / "more"), 48 * MiB)
            assert (more, err) == (48 * MiB, None)
            st = os.statvfs(target)
            assert st.f_blocks * st.f_frsize > 100 * MiB
        else:  # this host's root lacks the capability: refused before any change, with the way out
            with pytest.raises(BadState, match="CAP_SYS_RESOURCE.*resize it offline"):
                pool.resize("q", 128 * MiB)
            assert os.path.getsize(os.path.join(pool.vdir("q"), "disk.img")) == 64 * MiB
            print("\nonline growth not tested: this host's root lacks CAP_SYS_RESOURCE")
    finally:
        pool.unmount("q")
    if not has_cap_sys_resource():
        pool.resize("q", 128 * MiB)
    assert pool.volume("q").size == 128 * MiB
    pool.mount("q", str(target))
    try:
        if not os.path.exists(target / "more"):  # grown offline: the room is there now
            assert fill(str(target / "more"), 48 * MiB) == (48 * MiB, None)
        assert os.path.getsize(target / "more") == 48 * MiB
    finally:
        pool.unmount("q")
    pool.resize("q", 192 * MiB)  # offline: e2fsck + resize2fs on the image
    pool.mount("q", str(target))
    try:
        st = os.statvfs(target)
        assert st.f_blocks * st.f_frsize > 160 * MiB
        held = pool.usage("q")
        os.unlink(target / "fill")
        subprocess.run(["sync", "-f", str(target)], check=True)  # ext4 mounted with discard: the
        # freed blocks are punched out of the image after the journal commit, asynchronously
        deadline = time.monotonic() + 10
        while pool.usage("q") >= held - 40 * MiB and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.usage("q") < held - 40 * MiB
        more, err = fill(str(target / "more2"), 96 * MiB)
        assert (more, err) == (96 * MiB, None)
    finally:
        pool.unmount("q")
    with pytest.raises(ConfigError, match="only grow"):
        pool.resize("q", 64 * MiB)
    assert pool.volume("q").size == 192 * MiB


def test_snapshot_keeps_the_size_it_had(area):
    template = make_template(str(area / "template"))
    pool = open_pool("loop", str(area / "pool"), default_size=48 * MiB)
    assert pool.create_volume("s", template).size == 48 * MiB
    pool.snapshot("s", "small")
    pool.resize("s", 96 * MiB)
    pool.restore("s", "small")
    assert pool.volume("s").size == 48 * MiB
    assert os.path.getsize(os.path.join(pool.vdir("s"), "disk.img")) == 48 * MiB


def test_an_image_held_by_another_mount_namespace_is_not_mounted_twice(area, monkeypatch):
    """A mount namespace made while the volume was mounted keeps its ext4 alive after unmount;
    mounting the image again then would put two superblocks on it: refused until it goes."""
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    pool = open_pool("loop", str(area / "pool"))
    pool.create_volume("h", template, size=48 * MiB)
    pool.mount("h", str(target))
    with open(target / "written", "w") as f:
        f.write("kept\n")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # holds a copy of every mount, the volume's included, until told to go
        try:
            from jaula.linux import ns as nsys

            nsys.unshare(nsys.CLONE_NEWNS)
            os.write(ready_w, b"1")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        pool.unmount("h")
        monkeypatch.setattr(pool_loop, "RELEASE_WAIT_S", 0.2)
        with pytest.raises(BadState, match="still in use .* a mount namespace made while it was mounted"):
            pool.mount("h", str(target))
        assert pool.mounted_at("h") is None
    finally:
        os.write(go_w, b"1")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    monkeypatch.setattr(pool_loop, "RELEASE_WAIT_S", 10.0)
    pool.mount("h", str(target))  # the namespace is gone, and its superblock flushed the file
    try:
        assert (target / "written").read_text() == "kept\n"
    finally:
        pool.unmount("h")
