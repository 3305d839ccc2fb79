"""The `btrfs` pool: each volume a writable snapshot of its template's subvolume. An instant clone.

A template is copied once into the pool as a read-only subvolume (reflinked when it already
lives on the same btrfs); volumes, clones and snapshots are then subvolume snapshots, O(1) and
atomic even while mounted. A volume with a size gets a qgroup limit on its exclusive bytes
(quotas are enabled on the filesystem the first time one is asked for).
  templates/<key>                       the template's subvolume (key: hash of its host path)
  volumes/<name>/root                   the volume's subvolume: the instance's whole tree
  volumes/<name>/snapshots/<s>/root     read-only snapshots
With an idmap, the whole subvolume is mounted idmapped: files are stored unshifted (as seen
inside), so the volume keeps no trace of the id range it ran with. A template imported once is
not refreshed when its source folder changes later.
"""

from __future__ import annotations

import errno
import hashlib
import os

from jaula.errors import BadState, ConfigError, JaulaError, SyscallError
from jaula.linux import btrfs
from jaula.linux import mount as m
from jaula.storage.fsutil import run, write_json
from jaula.storage.idmap import IdMap, idmapped_tree
from jaula.storage.pool import NEW, Pool, Volume

ROOT = "root"


class BtrfsPool(Pool):
    kind = "btrfs"
    mount_fstypes = ("btrfs",)
    export_layout = "tree"

    def init(self) -> None:
        os.makedirs(self.path, mode=0o711, exist_ok=True)
        if not btrfs.is_btrfs(self.path):
            raise ConfigError(f"btrfs pool {self.path!r} is not on a btrfs filesystem")
        super().init()
        os.makedirs(os.path.join(self.path, "templates"), mode=0o711, exist_ok=True)

    # --- templates ------------------------------------------------------------------------------
    def template_subvolume(self, template: str) -> str:
        """The pool's read-only subvolume copy of template root `template`, made on first use."""
        key = hashlib.sha256(os.fsencode(template)).hexdigest()[:16]
        path = os.path.join(self.path, "templates", key)
        if os.path.isdir(path):
            return path
        tmp = os.path.join(self.path, "templates", NEW + key)
        if os.path.lexists(tmp):
            _delete_tree(tmp)
        btrfs.create_subvolume(tmp)
        try:
            run(["cp", "-a", "--reflink=auto", os.path.join(template, "."), tmp])
            btrfs.set_read_only(tmp, True)
            write_json(path + ".json", {"source": template})
            os.rename(tmp, path)
        except BaseException:
            _delete_tree(tmp)
            raise
        return path

    # --- quotas ---------------------------------------------------------------------------------
    def _limit(self, subvol: str, size: int | None) -> None:
        if size is None:
            return
        run(["btrfs", "quota", "enable", self.path])  # a no-op when they are on
        run(["btrfs", "qgroup", "limit", "-e", str(size), subvol])

    def _quotas_on(self) -> bool:
        try:
            run(["btrfs", "qgroup", "show", self.path])
            return True
        except JaulaError:  # ERROR: can't list qgroups: quotas not enabled
            return False

    # --- hooks ----------------------------------------------------------------------------------
    def _create(self, vdir: str, vol: Volume) -> None:
        tpl = self.template_subvolume(vol.template)
        root = os.path.join(vdir, ROOT)
        btrfs.snapshot(tpl, root)
        self._limit(root, vol.size)

    def _mount(self, vdir: str, vol: Volume, target: str, idmap: IdMap | None) -> None:
        root = os.path.join(vdir, ROOT)
        if idmap is None:
            m.mount(root, target, None, m.MS_BIND)
            return
        fd = idmapped_tree(root, idmap)
        try:
            m.move_mount(fd, target)
        finally:
            os.close(fd)

    def _unmount(self, vdir: str, vol: Volume, target: str) -> None:
        try:
            m.umount2(target)
        except SyscallError as e:
            if e.errno == errno.EBUSY:
                raise BadState(f"cannot unmount volume {vol.name!r} from {target!r}: it is busy") from None
            raise

    def _usage(self, vdir: str, vol: Volume) -> int:
        """The subvolume's exclusive bytes: what it does not share with its template or snapshots."""
        root = os.path.join(vdir, ROOT)
        run(["btrfs", "filesystem", "sync", root])
        if self._quotas_on():
            for line in run(["btrfs", "qgroup", "show", "--raw", "-f", root]).splitlines():
                cols = line.split()
                if cols and cols[0].startswith("0/"):
                    return int(cols[2])
        out = run(["btrfs", "filesystem", "du", "-s", "--raw", root]).splitlines()
        return int(out[-1].split()[1])

    def _resize(self, vdir: str, vol: Volume, size: int, mounted: bool) -> None:
        self._limit(os.path.join(vdir, ROOT), size)

    def _clone(self, src_vdir: str, vol: Volume, dst_vdir: str, mounted: bool) -> None:
        root = os.path.join(dst_vdir, ROOT)
        btrfs.snapshot(os.path.join(src_vdir, ROOT), root)
        self._limit(root, vol.size)

    def _snapshot(self, vdir: str, vol: Volume, sdir: str, mounted: bool) -> None:
        btrfs.snapshot(os.path.join(vdir, ROOT), os.path.join(sdir, ROOT), read_only=True)

    def _restore(self, vdir: str, vol: Volume, sdir: str, meta: dict) -> None:
        new, old = os.path.join(vdir, ".root-new"), os.path.join(vdir, ".root-old")
        for leftover in (new, old):
            if os.path.lexists(leftover):
                _delete_tree(leftover)
        btrfs.snapshot(os.path.join(sdir, ROOT), new)
        try:
            self._limit(new, vol.size)
        except BaseException:
            _delete_tree(new)
            raise
        os.rename(os.path.join(vdir, ROOT), old)
        os.rename(new, os.path.join(vdir, ROOT))
        _delete_tree(old)

    def _layer(self, vdir: str, vol: Volume, mounted: bool):
        return _Here(vdir, ROOT)

    def _import(self, vdir: str, vol: Volume, tar_path: str) -> None:
        from jaula.storage import backup

        root = os.path.join(vdir, ROOT)
        btrfs.create_subvolume(root)
        backup.extract(tar_path, vdir, ROOT)
        self._limit(root, vol.size)

    def _remove(self, vdir: str) -> None:
        _delete_tree(vdir)

    def _remove_snapshot(self, sdir: str) -> None:
        _delete_tree(sdir)


class _Here:
    """A context manager giving (parent, name) of a tree that is always reachable."""

    def __init__(self, parent: str, name: str):
        self.value = (parent, name)

    def __enter__(self) -> tuple[str, str]:
        return self.value

    def __exit__(self, *exc: object) -> None:
        pass


def _delete_tree(path: str) -> None:
    """Delete `path`: a subvolume with the btrfs ioctl (all of it at once), a folder entry by entry.

    The pool never nests a subvolume inside another, so a subvolume can always go whole.
    """
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    elif btrfs.is_subvolume(path):
        btrfs.delete_subvolume(path)
    else:
        with os.scandir(path) as it:
            children = [e.path for e in it]
        for child in children:
            _delete_tree(child)
        os.rmdir(path)
