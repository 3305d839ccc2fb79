"""The `loop` pool: overlayfs whose upper layer lives in a per-volume sparse ext4 image.

The image's size is a hard disk quota (writes past it get ENOSPC) that can grow while the
instance runs (truncate, LOOP_SET_CAPACITY, online resize2fs), like OpenVZ's ploop; it takes
host disk only for what is written (ext4 is mounted with `discard`, so deleted blocks are
punched out of the image again).
  volumes/<name>/disk.img                 the image: /upper and /work inside
  volumes/<name>/mnt                      where the image is mounted while the volume is
  volumes/<name>/snapshots/<s>/disk.img   a snapshot: a sparse copy of the image, taken with the
                                          filesystem frozen (FIFREEZE) when mounted
Options: default_size (bytes, for volumes made without a size; 10 GiB).

An unmount here is not always the end of the image's filesystem: a mount namespace made while it
was mounted (any unshare(CLONE_NEWNS) on the host, a container's runtime included) holds a copy
of the mount, so the ext4 superblock, unflushed, lives on until that copy goes. Mounting the
image again meanwhile would put a second superblock over the same blocks. The loop device is
bound with autoclear, so it is released exactly when the last superblock is gone: the pool waits
for that (RELEASE_WAIT_S) before it mounts, copies or resizes an image, and refuses after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from jaula.errors import BadState, ConfigError, JaulaError
from jaula.linux import loop
from jaula.linux import mount as m
from jaula.linux.fsmount import frozen
from jaula.storage.fsutil import mount_points, run
from jaula.storage.overlay import OverlayPool, make_upper
from jaula.storage.pool import Volume, check_size

MiB = 1 << 20
MIN_SIZE = 32 * MiB
DEFAULT_SIZE = 10 << 30
# ext4 made for a sparse image: no reserved blocks, inode tables and journal zeroed lazily (so
# mkfs writes almost nothing), 4 KiB blocks whatever the size.
MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", "-L", "jaula-volume",
        "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]
MOUNT_DATA = "discard"
RELEASE_WAIT_S = 10.0


class LoopPool(OverlayPool):
    kind = "loop"
    options = ("default_size",)

    def _check_size(self, size: int | None) -> int:
        if size is None:
            size = self.opts.get("default_size", DEFAULT_SIZE)  # type: ignore[assignment]
        return check_size(size, MIN_SIZE)

    # --- the image ------------------------------------------------------------------------------
    def _image(self, vdir: str) -> str:
        return os.path.join(vdir, "disk.img")

    def _layer_dir(self, vdir: str) -> str:
        return os.path.join(vdir, "mnt")

    def _make_image(self, image: str, size: int, vol: Volume, upper: bool) -> None:
        with tempfile.TemporaryDirectory(prefix=".mkfs-", dir=os.path.dirname(image)) as stage:
            if upper:
                make_upper(os.path.join(stage, "upper"), vol.template, vol.idmap)
            os.mkdir(os.path.join(stage, "work"), 0o700)
            with open(image, "xb") as f:
                f.truncate(size)
            run(MKFS + ["-d", stage, image])  # mkfs copies the folders in, owners included

    def _new_layer(self, vdir: str, vol: Volume, upper: bool) -> None:
        assert vol.size is not None
        self._make_image(self._image(vdir), vol.size, vol, upper)
        os.mkdir(self._layer_dir(vdir), 0o700)

    def _released(self, vdir: str) -> None:
        """Wait until no loop device holds the image (its filesystem is shut down everywhere)."""
        image = self._image(vdir)
        deadline = time.monotonic() + RELEASE_WAIT_S
        while devs := loop.devices_of(image):
            if time.monotonic() > deadline:
                raise BadState(f"the image {image!r} is still in use ({', '.join(devs)}) although not mounted "
                               "here: a mount namespace made while it was mounted holds it; try again when "
                               "that namespace is gone")
            time.sleep(0.01)

    def _attach(self, vdir: str) -> str:
        """Bind the image to a loop device (autoclear) and mount its ext4 on mnt/."""
        mnt = self._layer_dir(vdir)
        if mount_points().get(mnt, ("",))[0] == "ext4":
            raise BadState(f"{mnt!r} is already mounted: another jaula process is using volume "
                           f"{os.path.basename(vdir)!r}, or one crashed (unmount it)")
        self._released(vdir)
        dev, fd = loop.attach(self._image(vdir))
        try:
            m.mount(dev, mnt, "ext4", 0, MOUNT_DATA)
        finally:
            os.close(fd)  # autoclear: the device goes when the filesystem is unmounted (or now)
        return mnt

    def _detach(self, vdir: str) -> None:
        m.umount2(self._layer_dir(vdir))

    def _device(self, vdir: str) -> str:
        devs = loop.devices_of(self._image(vdir))
        if len(devs) != 1:
            raise JaulaError(f"expected one loop device on {self._image(vdir)!r}, found {devs or 'none'}")
        return devs[0]

    # --- hooks ----------------------------------------------------------------------------------
    def _usage(self, vdir: str, vol: Volume) -> int:
        return os.stat(self._image(vdir)).st_blocks * 512

    def _resize(self, vdir: str, vol: Volume, size: int, mounted: bool) -> None:
        assert vol.size is not None
        if size < vol.size:
            raise ConfigError(f"cannot shrink volume {vol.name!r} from {vol.size} to {size} bytes: "
                              "loop volumes only grow")
        if size == vol.size:
            return
        if mounted and not has_cap_sys_resource():
            raise BadState(f"cannot grow volume {vol.name!r} while it is mounted: ext4's online resize needs "
                           "CAP_SYS_RESOURCE, which this process lacks; unmount it and resize it offline")
        image = self._image(vdir)
        dev = self._device(vdir) if mounted else None
        os.truncate(image, size)
        try:
            if dev:  # online: the loop device learns the new size, ext4 grows into it
                loop.set_capacity(dev)
                run(["resize2fs", dev])
            else:
                self._released(vdir)
                run(["e2fsck", "-f", "-p", image])
                run(["resize2fs", image])
        except BaseException:
            os.truncate(image, vol.size)  # the filesystem did not grow: give the space back
            if dev:
                loop.set_capacity(dev)
            raise

    def _copy_image(self, vdir: str, dest: str, mounted: bool) -> None:
        if mounted:
            with frozen(self._layer_dir(vdir)):
                _sparse_copy(self._image(vdir), dest)
        else:
            self._released(vdir)
            _sparse_copy(self._image(vdir), dest)

    def _clone(self, src_vdir: str, vol: Volume, dst_vdir: str, mounted: bool) -> None:
        self._copy_image(src_vdir, self._image(dst_vdir), mounted)
        os.mkdir(self._layer_dir(dst_vdir), 0o700)

    def _snapshot(self, vdir: str, vol: Volume, sdir: str, mounted: bool) -> None:
        self._copy_image(vdir, os.path.join(sdir, "disk.img"), mounted)

    def _restore(self, vdir: str, vol: Volume, sdir: str, meta: dict) -> None:
        self._released(vdir)
        new = os.path.join(vdir, ".disk.img-new")
        if os.path.exists(new):
            os.unlink(new)
        try:
            _sparse_copy(os.path.join(sdir, "disk.img"), new)
            os.rename(new, self._image(vdir))
        except BaseException:
            if os.path.exists(new):
                os.unlink(new)
            raise
        vol.size = os.stat(self._image(vdir)).st_size  # the image comes back with its size

    def _stale(self, vdir: str) -> None:
        mnt = self._layer_dir(vdir)
        if mount_points().get(mnt, ("",))[0] == "ext4":  # the image's mount (and so its loop device) outlived the overlay
            m.umount2(mnt)

    def _remove(self, vdir: str) -> None:
        self._stale(vdir)
        shutil.rmtree(vdir)


def has_cap_sys_resource() -> bool:
    """Whether this process may grow a mounted ext4 (EXT4_IOC_RESIZE_FS checks CAP_SYS_RESOURCE)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def _sparse_copy(src: str, dst: str) -> None:
    """Copy an image taking only the disk its data takes (holes stay holes; reflink when possible)."""
    run(["cp", "--sparse=always", "--reflink=auto", src, dst])
