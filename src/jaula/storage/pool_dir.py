"""The `dir` pool: each volume an overlayfs upper folder over its template. An instant clone.

  volumes/<name>/upper, work          the instance's layer and overlayfs's work folder
  volumes/<name>/snapshots/<s>/upper  a snapshot: a copy of the upper layer (reflinked when the
                                      host filesystem can)
No quota: a volume can fill the host filesystem (use `loop` or `btrfs` for a hard limit).
"""

from __future__ import annotations

import os
import shutil

from jaula.errors import ConfigError
from jaula.storage.fsutil import disk_usage
from jaula.storage.overlay import OverlayPool, copy_tree, make_upper
from jaula.storage.pool import Volume


class DirPool(OverlayPool):
    kind = "dir"
    has_quota = False

    def _check_size(self, size: int | None) -> int | None:
        if size is not None:
            raise ConfigError("dir pools have no per-volume disk quota: leave size out, or use a loop or btrfs pool")
        return None

    def _attach(self, vdir: str) -> str:
        return vdir

    def _detach(self, vdir: str) -> None:
        pass

    def _new_layer(self, vdir: str, vol: Volume, upper: bool) -> None:
        if upper:
            make_upper(os.path.join(vdir, "upper"), vol.template, vol.idmap)
        os.mkdir(os.path.join(vdir, "work"), 0o700)

    def _usage(self, vdir: str, vol: Volume) -> int:
        return disk_usage(os.path.join(vdir, "upper"))

    def _resize(self, vdir: str, vol: Volume, size: int, mounted: bool) -> None:
        raise ConfigError("dir pools have no per-volume disk quota")

    def _clone(self, src_vdir: str, vol: Volume, dst_vdir: str, mounted: bool) -> None:
        copy_tree(os.path.join(src_vdir, "upper"), os.path.join(dst_vdir, "upper"))
        os.mkdir(os.path.join(dst_vdir, "work"), 0o700)

    def _snapshot(self, vdir: str, vol: Volume, sdir: str, mounted: bool) -> None:
        copy_tree(os.path.join(vdir, "upper"), os.path.join(sdir, "upper"))

    def _restore(self, vdir: str, vol: Volume, sdir: str, meta: dict) -> None:
        new, old = os.path.join(vdir, ".upper-new"), os.path.join(vdir, ".upper-old")
        for leftover in (new, old):
            if os.path.lexists(leftover):
                shutil.rmtree(leftover)
        try:
            copy_tree(os.path.join(sdir, "upper"), new)
        except BaseException:  # cut short (a cancel kills the cp): the volume is as it was
            shutil.rmtree(new, ignore_errors=True)
            raise
        os.rename(os.path.join(vdir, "upper"), old)
        os.rename(new, os.path.join(vdir, "upper"))
        shutil.rmtree(old)
        work = os.path.join(vdir, "work")  # overlayfs's scratch space: start it afresh
        shutil.rmtree(work)
        os.mkdir(work, 0o700)

