"""The overlayfs root shared by the `dir` and `loop` pools: template below, the volume's upper layer above.

How the idmapped lower layer reaches overlayfs: the template tree is cloned detached
(open_tree OPEN_TREE_CLONE), idmapped with mount_setattr(MOUNT_ATTR_IDMAP) through a throwaway
user namespace holding the instance's maps, and given to overlayfs by fd with
fsconfig(FSCONFIG_SET_FD, "lowerdir+") (Linux 6.13+), so it is never attached anywhere. Older
kernels (idmapped layers work since 5.19) refuse that key; there the detached mount is attached
on a private staging folder of the volume, overlayfs is mounted with lowerdir=<staging> and the
staging mount is detached at once: overlayfs keeps its own private clone of every layer.

The upper layer is not idmapped: overlayfs creates files in it with the caller's host ids, so a
file made by root inside an instance whose namespace maps 0 to N lands owned by N on disk, and a
copied-up template file gets the owner shown through the idmapped lower (N too). The upper's
root folder takes the template root's owner, shifted, since overlayfs shows the merged root with
the upper root's attributes.
"""

from __future__ import annotations

import errno
import os
import shutil
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import ClassVar

from jaula.errors import BadState, NotFound, SyscallError
from jaula.linux import mount as m
from jaula.linux.fsmount import FsContext
from jaula.storage.fsutil import run
from jaula.storage.idmap import IdMap, idmapped_tree, kept_fd, shift_tree
from jaula.storage.pool import Pool, Volume

# index=off and metacopy=off keep an upper layer self-contained (no file handles of the lower
# layer recorded in it), so it can be copied, snapshotted and exported; redirect_dir=on lets a
# folder of the template be renamed inside an instance (else rename(2) gives EXDEV).
OVERLAY_OPTIONS = (("index", "off"), ("metacopy", "off"), ("redirect_dir", "on"))
STAGING = ".lower"

_fd_layers: bool | None = None  # does this kernel take overlayfs layers by fd? (probed once)


# Idmapped clones of template trees, kept by (template root, its device and inode, id range), the
# most recently used last: with layers given by fd, overlayfs makes its own private clone of a
# layer, so one detached clone serves every mount of that template and range (a restart, or a new
# instance given a freed range). Making one and dissolving it cost ~0.15 ms of each start. A
# template rebuilt or replaced is a new folder (another inode): its old clone is not used again and
# goes when pushed out. Bounded: an fd each (close-on-exec, closed by every init before it runs).
_lower: dict[tuple[str, int, int, IdMap], int] = {}
LOWERS_KEPT = 64


def _kept_lower(lower: str, idmap: IdMap) -> int:
    """A detached clone of `lower` seen through `idmap`, kept by this module (do not close it)."""
    st = os.stat(lower)
    return kept_fd(_lower, (lower, st.st_dev, st.st_ino, idmap), lambda: idmapped_tree(lower, idmap), LOWERS_KEPT)


def forget_lowers() -> None:
    """Close every kept idmapped clone (a test's or a process's cleanup)."""
    while _lower:
        os.close(_lower.popitem()[1])


def mount_overlay(lower: str, upper: str, work: str, target: str, idmap: IdMap | None, source: str,
                  staging: str) -> None:
    """Mount overlayfs at `target`; with `idmap`, the lower layer is seen through it (module doc)."""
    global _fd_layers
    if idmap is not None and _fd_layers:  # layers by fd work here: the kept clone, not consumed
        _mount_by_fd(_kept_lower(lower, idmap), upper, work, target, source)
        return
    with ExitStack() as stack:
        if idmap is not None:
            lower_fd = idmapped_tree(lower, idmap)
        else:
            lower_fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        stack.callback(os.close, lower_fd)
        if _fd_layers is not False:
            try:
                _mount_by_fd(lower_fd, upper, work, target, source)
                _fd_layers = True
                return
            except SyscallError as e:
                if _fd_layers or e.errno != errno.EINVAL or "lowerdir+" not in str(e):
                    raise
                _fd_layers = False
        _mount_by_staging(lower_fd, lower, upper, work, target, staging, idmap is not None, source)


def _mount_by_fd(lower_fd: int, upper: str, work: str, target: str, source: str) -> None:
    with FsContext("overlay") as ctx:
        ctx.set("source", source)
        ctx.set_fd("lowerdir+", lower_fd, "template")
        for key, path in (("upperdir", upper), ("workdir", work)):
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                ctx.set_fd(key, fd, path)
            finally:
                os.close(fd)
        for key, value in OVERLAY_OPTIONS:
            ctx.set(key, value)
        mnt = ctx.mount()
    try:
        m.move_mount(mnt, target)
    finally:
        os.close(mnt)


def _mount_by_staging(lower_fd: int, lower: str, upper: str, work: str, target: str, staging: str,
                      idmapped: bool, source: str) -> None:
    layer = lower
    if idmapped:
        os.makedirs(staging, mode=0o700, exist_ok=True)
        m.move_mount(lower_fd, staging)
        layer = staging
    try:
        opts = ",".join([f"lowerdir={layer}", f"upperdir={upper}", f"workdir={work}"]
                        + [f"{k}={v}" for k, v in OVERLAY_OPTIONS])
        m.mount(source, target, "overlay", 0, opts)
    finally:
        if idmapped:
            m.umount2(staging, m.MNT_DETACH)


def copy_tree(src: str, dst: str) -> None:
    """Copy a layer with owners, modes, times, xattrs (trusted.overlay.*), whiteouts and holes."""
    run(["cp", "-a", "--reflink=auto", "--sparse=always", src, dst])


def make_upper(upper: str, template: str, idmap: IdMap | None) -> None:
    """The upper layer's root, owned and moded as the template's root (shifted by `idmap`)."""
    st = os.stat(template)
    os.mkdir(upper)
    uid = idmap.to_host(st.st_uid) if idmap else st.st_uid
    gid = idmap.to_host(st.st_gid, gid=True) if idmap else st.st_gid
    os.chown(upper, uid, gid)
    os.chmod(upper, st.st_mode & 0o7777)


class OverlayPool(Pool):
    """A pool whose volumes are overlayfs upper layers; subclasses say where the layer lives."""

    mount_fstypes: ClassVar[tuple[str, ...]] = ("overlay",)
    export_layout: ClassVar[str] = "overlay-upper"

    @abstractmethod
    def _attach(self, vdir: str) -> str:
        """Make the folder holding upper/ and work/ reachable; return it."""

    @abstractmethod
    def _detach(self, vdir: str) -> None:
        """Undo `_attach`."""

    @contextmanager
    def _layer(self, vdir: str, vol: Volume, mounted: bool) -> Iterator[tuple[str, str]]:
        if mounted:
            yield self._layer_dir(vdir), "upper"
            return
        layer = self._attach(vdir)
        try:
            yield layer, "upper"
        finally:
            self._detach(vdir)

    def _layer_dir(self, vdir: str) -> str:
        return vdir

    def _mount_source(self, name: str) -> str:
        return f"jaula-{self.kind}:{name}"

    def _mount(self, vdir: str, vol: Volume, target: str, idmap: IdMap | None) -> None:
        if not os.path.isdir(vol.template):
            raise NotFound(f"the template root {vol.template!r} of volume {vol.name!r} is gone")
        with ExitStack() as undo:
            layer = self._attach(vdir)
            undo.callback(self._detach, vdir)
            upper, work = os.path.join(layer, "upper"), os.path.join(layer, "work")
            if idmap != vol.idmap:  # the layer's owners follow the instance's id range
                shift_tree(upper, vol.idmap, idmap)
                vol.idmap = idmap
                self._save(vdir, vol)
            mount_overlay(vol.template, upper, work, target, idmap, self._mount_source(vol.name),
                          os.path.join(vdir, STAGING))
            undo.pop_all()

    def _unmount(self, vdir: str, vol: Volume, target: str) -> None:
        try:
            m.umount2(target)
        except SyscallError as e:
            if e.errno == errno.EBUSY:
                raise BadState(f"cannot unmount volume {vol.name!r} from {target!r}: it is busy "
                               "(a process has a file or its cwd there)") from None
            raise
        self._detach(vdir)

    def _import(self, vdir: str, vol: Volume, tar_path: str) -> None:
        from jaula.storage import backup

        self._new_layer(vdir, vol, upper=False)
        layer = self._attach(vdir)
        try:
            upper = os.path.join(layer, "upper")
            if os.path.isdir(upper):
                shutil.rmtree(upper)
            backup.extract(tar_path, layer, "upper")
        finally:
            self._detach(vdir)

    def _create(self, vdir: str, vol: Volume) -> None:
        self._new_layer(vdir, vol, upper=True)

    def shift_layer(self, name: str, idmap: IdMap | None) -> None:
        """Pool.shift_layer: the walk runs without the pool's lock (the volume is new, unmounted:
        nothing else uses it), then the range is recorded under it."""
        vol = self._meta(name)
        with self._locked():
            vol = self._meta(name)
            self._unmounted(name, "shift")
        if idmap == vol.idmap:
            return
        vdir = self.vdir(name)
        layer = self._attach(vdir)
        try:
            shift_tree(os.path.join(layer, "upper"), vol.idmap, idmap)
        finally:
            self._detach(vdir)
        with self._locked():
            vol = self._meta(name)
            vol.idmap = idmap
            self._save(vdir, vol)

    @abstractmethod
    def _new_layer(self, vdir: str, vol: Volume, upper: bool) -> None:
        """Make an empty layer (work/, and upper/ when `upper`) in new volume folder `vdir`."""
