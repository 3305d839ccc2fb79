"""Storage pools: where instances' root trees live, one interface over several backends.

A pool is a directory holding volumes; a volume is an instance's own copy-on-write layer over
a template's root tree. Backends (`open_pool(kind, path)`):
  dir    overlayfs: the template is the lower layer, the volume an upper directory (pool_dir.py)
  loop   overlayfs whose upper layer lives in a per-volume sparse ext4 image: a hard disk quota
         that can grow, like OpenVZ's ploop (pool_loop.py)
  btrfs  a subvolume snapshot of the template, imported once into the pool (pool_btrfs.py)

Layout, the same for every backend:
  <pool>/pool.json                     {"kind": ...}
  <pool>/volumes/<name>/volume.json    the volume's metadata (`Volume`)
  <pool>/volumes/<name>/mount.json     where it is mounted, while it is
  <pool>/volumes/<name>/snapshots/<snap>/snapshot.json
Every public method validates its names first, holds the pool's lock (flock on <pool>/.lock),
and undoes what it made when it fails (ExitStack), so a failure leaks no mount, loop device
or directory. New volumes and snapshots are built under a ".new-" name and renamed into place.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from jaula.errors import BadState, ConfigError, Exists, NotFound
from jaula.record import Record
from jaula.storage.fsutil import mount_points, read_json, write_json
from jaula.storage.idmap import IdMap

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
KINDS = ("dir", "loop", "btrfs")
NEW = ".new-"


class Volume(Record):
    """An instance's root layer. `idmap`: the id range its own layer's owners are stored in
    (None: unshifted, as inside the instance); `size`: its quota in bytes (None: none)."""

    name: str
    kind: str
    template: str
    size: int | None = None
    created: float = 0.0
    idmap: IdMap | None = None

    def to_json(self) -> dict:
        d = {f: getattr(self, f) for f in self._fields}
        d["idmap"] = self.idmap.as_json() if self.idmap else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> Volume:
        d = dict(d)
        d["idmap"] = IdMap.from_json(d.get("idmap"))
        return cls(**{k: v for k, v in d.items() if k in cls._fields})


def check_name(name: object, what: str = "volume") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"bad {what} name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return name


def check_size(size: object, minimum: int = 0) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ConfigError(f"bad size {size!r}: give a positive number of bytes")
    if size < minimum:
        raise ConfigError(f"size {size} is too small: at least {minimum} bytes ({minimum >> 20} MiB)")
    return size


def check_template(path: object) -> str:
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ConfigError(f"bad template root {path!r}: give an absolute path")
    if not os.path.isdir(path):
        raise NotFound(f"template root {path!r} is not a directory")
    return os.path.realpath(path)


class Pool(ABC):
    """A storage pool. Subclasses implement the `_` hooks; callers use the public methods."""

    kind: ClassVar[str]
    #: filesystem types a volume's mount at its target has
    mount_fstypes: ClassVar[tuple[str, ...]]
    #: the layout of exported volumes (backup.py)
    export_layout: ClassVar[str]

    #: whether volumes have a size (a disk quota)
    has_quota: ClassVar[bool] = True
    #: the options `open_pool` takes for this backend
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str, **opts: object):
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ConfigError(f"bad pool path {path!r}: give an absolute path")
        if unknown := sorted(set(opts) - set(self.options)):
            raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for a "
                              f"{self.kind} pool (it takes: {', '.join(self.options) or 'none'})")
        self.path = os.path.realpath(path)
        self.opts = opts
        self.volumes_dir = os.path.join(self.path, "volumes")

    # --- set-up ---------------------------------------------------------------------------------
    def init(self) -> None:
        """Make the pool's folders (idempotent); refuse a folder that holds another kind of pool."""
        os.makedirs(self.volumes_dir, mode=0o711, exist_ok=True)
        meta = os.path.join(self.path, "pool.json")
        if os.path.exists(meta):
            kind = read_json(meta).get("kind")
            if kind != self.kind:
                raise ConfigError(f"pool {self.path!r} is a {kind!r} pool, not {self.kind!r}")
        else:
            write_json(meta, {"kind": self.kind, "created": time.time()})

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # --- paths and metadata ---------------------------------------------------------------------
    def vdir(self, name: str) -> str:
        return os.path.join(self.volumes_dir, name)

    def _meta(self, name: str) -> Volume:
        check_name(name)
        try:
            return Volume.from_json(read_json(os.path.join(self.vdir(name), "volume.json")))
        except FileNotFoundError:
            raise NotFound(f"no volume {name!r} in pool {self.path!r}") from None

    def _save(self, vdir: str, vol: Volume) -> None:
        write_json(os.path.join(vdir, "volume.json"), vol.to_json())

    def _absent(self, name: str) -> None:
        check_name(name)
        if os.path.lexists(self.vdir(name)):
            raise Exists(f"volume {name!r} already exists in pool {self.path!r}")

    def _snap_dir(self, name: str, snap: str) -> str:
        return os.path.join(self.vdir(name), "snapshots", snap)

    # --- queries --------------------------------------------------------------------------------
    def volume(self, name: str) -> Volume:
        return self._meta(name)

    def volumes(self) -> list[Volume]:
        names = sorted(n for n in os.listdir(self.volumes_dir) if not n.startswith("."))
        return [self._meta(n) for n in names if os.path.exists(os.path.join(self.vdir(n), "volume.json"))]

    def mounted_at(self, name: str) -> str | None:
        """Where volume `name` is mounted in this mount namespace, or None."""
        self._meta(name)
        return self._mounted_at(name)

    def _mounted_at(self, name: str) -> str | None:
        try:
            target = read_json(os.path.join(self.vdir(name), "mount.json"))["target"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # cut short by a host crash (not fsync'd): the mount it named is gone too
        fstype, source = mount_points().get(target, ("", ""))
        if fstype not in self.mount_fstypes:
            return None
        expected = self._mount_source(name)
        return target if expected is None or source == expected else None

    def _unmounted(self, name: str, doing: str) -> None:
        if (target := self._mounted_at(name)) is not None:
            raise BadState(f"cannot {doing} volume {name!r}: it is mounted at {target!r}; unmount it first")

    def snapshots(self, name: str) -> list[str]:
        """Snapshot names of volume `name`, oldest first."""
        self._meta(name)
        base = os.path.join(self.vdir(name), "snapshots")
        found = []
        for snap in os.listdir(base) if os.path.isdir(base) else []:
            if snap.startswith("."):
                continue
            try:
                found.append((read_json(os.path.join(base, snap, "snapshot.json"))["created"], snap))
            except FileNotFoundError:
                continue
        return [snap for _, snap in sorted(found)]

    def usage(self, name: str) -> int:
        """Bytes of host disk held by the volume's own data (its layer; snapshots not counted)."""
        vol = self._meta(name)
        return self._usage(self.vdir(name), vol)

    # --- volumes --------------------------------------------------------------------------------
    def create_volume(self, name: str, template_rootfs: str, size: int | None = None) -> Volume:
        """A new volume over template root `template_rootfs`, with a quota of `size` bytes."""
        self._absent(name)
        template = check_template(template_rootfs)
        size = self._check_size(size)
        with self._locked():
            self._absent(name)
            vol = Volume(name=name, kind=self.kind, template=template, size=size, created=time.time())
            return self._build(name, vol, lambda vdir: self._create(vdir, vol))

    def _build(self, name: str, vol: Volume, fill) -> Volume:
        """Make the volume folder under a temporary name, `fill` it, save metadata, rename into place."""
        tmp = os.path.join(self.volumes_dir, NEW + name)
        if os.path.lexists(tmp):  # left by a crash
            self._remove(tmp)
        os.mkdir(tmp, 0o711)
        try:
            fill(tmp)
            self._save(tmp, vol)
            os.rename(tmp, self.vdir(name))
        except BaseException:
            self._remove(tmp)
            raise
        return vol

    def delete_volume(self, name: str) -> None:
        self._meta(name)
        with self._locked():
            self._meta(name)
            self._unmounted(name, "delete")
            gone = os.path.join(self.volumes_dir, f".del-{name}-{os.getpid()}")
            os.rename(self.vdir(name), gone)  # from here on the name is free
            self._remove(gone)

    def _remove(self, vdir: str) -> None:
        """Delete a volume folder with whatever the backend keeps in it."""
        shutil.rmtree(vdir)

    def mount(self, name: str, target: str, idmap: IdMap | None = None) -> None:
        """Mount volume `name` as the root tree at `target` (a directory).

        With `idmap`, the tree shows template files owned by host id 0 as owned by
        `idmap.uid_base`, so a user namespace mapping 0 to that base sees them owned by root.
        """
        check_name(name)  # its metadata is read once, under the lock (a start's mount: ~0.05 ms a read)
        if idmap is not None and not isinstance(idmap, IdMap):
            raise ConfigError(f"bad idmap {idmap!r}: give an IdMap(uid_base, gid_base, size)")
        if idmap is not None:
            idmap.validate()
        if not isinstance(target, str) or not os.path.isabs(target) or not os.path.isdir(target):
            raise ConfigError(f"bad mount target {target!r}: give the absolute path of a directory")
        target = os.path.realpath(target)
        with self._locked():
            vol = self._meta(name)
            if (where := self._mounted_at(name)) is not None:
                raise BadState(f"volume {name!r} is already mounted at {where!r}")
            self._mount(self.vdir(name), vol, target, idmap)
            try:
                # Not fsync'd: the mount it records does not outlive the host, and a stale
                # record is ignored (_mounted_at checks the mount table); 0.5-1.8 ms a start.
                # "dev": the mount's device, for `mounted_here`
                write_json(os.path.join(self.vdir(name), "mount.json"),
                           {"target": target, "idmap": idmap.as_json() if idmap else None,
                            "dev": os.stat(target).st_dev}, durable=False)
            except BaseException:
                self._unmount(self.vdir(name), vol, target)
                raise

    def mounted_here(self, name: str, target: str, idmap: IdMap | None) -> bool:
        """Whether volume `name` is mounted at `target` through `idmap`, as `mount` left it: its
        record says so and `target` is on the device the mount had (unmounted, or detached by
        jaulad's sweep, `target` is a folder of the filesystem below, another device). One read
        and one stat, where `mounted_at` reads the mount table, which grows with every instance."""
        check_name(name)
        try:
            rec = read_json(os.path.join(self.vdir(name), "mount.json"))
            if rec["target"] != target and rec["target"] != os.path.realpath(target):
                return False
            if IdMap.from_json(rec.get("idmap")) != idmap:
                return False
            return "dev" in rec and os.stat(target).st_dev == rec["dev"]
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            return False

    def unmount(self, name: str) -> None:
        """Unmount volume `name`; nothing to do when it is not mounted."""
        vol = self._meta(name)
        with self._locked():
            state = os.path.join(self.vdir(name), "mount.json")
            target = self._mounted_at(name)
            if target is not None:
                self._unmount(self.vdir(name), vol, target)
            else:
                self._stale(self.vdir(name))
            if os.path.exists(state):
                os.unlink(state)

    def resize(self, name: str, size: int) -> None:
        """Change volume `name`'s quota to `size` bytes (grow only on `loop`), mounted or not."""
        vol = self._meta(name)
        if not self.has_quota:
            raise ConfigError(f"{self.kind} pools have no per-volume disk quota: use a loop or btrfs pool")
        size = self._check_size(check_size(size))
        with self._locked():
            vol = self._meta(name)
            self._resize(self.vdir(name), vol, size, self._mounted_at(name) is not None)
            vol.size = size
            self._save(self.vdir(name), vol)

    def clone(self, src: str, dst: str, snapshot: str | None = None) -> Volume:
        """A new volume `dst` holding what `src` holds now, or what its snapshot `snapshot` held
        (its snapshots are not copied). The copy runs without the pool's lock (`_outside`)."""
        vol = self._meta(src) if snapshot is None else self._snap(src, snapshot)[0]
        self._absent(dst)
        with self._locked():
            vol = self._meta(src)
            self._absent(dst)
            new = vol.replace(name=dst, created=time.time())
            if snapshot is not None:  # an empty volume, then the snapshot's content restored into it
                sdir = self._snap(src, snapshot)[1]
                meta = read_json(os.path.join(sdir, "snapshot.json"))

                def fill(vdir: str) -> None:
                    self._create(vdir, new)
                    self._restore(vdir, new, sdir, meta)
                    new.idmap = IdMap.from_json(meta.get("idmap"))
            else:
                mounted = self._mounted_at(src) is not None

                def fill(vdir: str) -> None:
                    self._clone(self.vdir(src), vol, vdir, mounted)
            tmp = self._reserve(dst)
        return self._outside(dst, new, tmp, fill)

    def _reserve(self, name: str) -> str:
        """A new folder for volume `name` to be built in, its name this build's own (a `.new-`
        name: jaulad's start sweeps one a crash left). The caller holds the lock."""
        tmp = os.path.join(self.volumes_dir, f"{NEW}{name}.{os.getpid()}.{os.urandom(4).hex()}")
        os.mkdir(tmp, 0o711)
        return tmp

    def _outside(self, name: str, vol: Volume, tmp: str, fill) -> Volume:
        """Fill reserved folder `tmp` without the pool's lock (a long copy or extraction: the
        other volumes' mounts, instances' starts, go on meanwhile), then, under it again, save
        the metadata and rename it to `name`; on failure `tmp` goes."""
        try:
            fill(tmp)
            self._save(tmp, vol)
            with self._locked():
                self._absent(name)
                os.rename(tmp, self.vdir(name))
        except BaseException:
            self._remove(tmp)
            raise
        return vol

    def shift_layer(self, name: str, idmap: IdMap | None) -> None:
        """Store unmounted volume `name`'s own layer in `idmap`'s id range now, as its next mount
        with `idmap` would (a long walk on a copied or imported root: done here, outside the
        mount); nothing for a backend that does not store its layer shifted."""
        self._meta(name)
        with self._locked():
            self._unmounted(name, "shift")

    # --- snapshots ------------------------------------------------------------------------------
    def snapshot(self, name: str, snap: str) -> None:
        """Keep the volume's present content as snapshot `snap`.

        A mounted volume may be snapshotted: loop volumes are frozen for the copy (consistent),
        dir volumes are copied as they are (as a crash would leave them), btrfs is atomic.
        """
        self._meta(name)
        check_name(snap, "snapshot")
        with self._locked():
            vol = self._meta(name)
            mounted = self._mounted_at(name) is not None

        def fill(tmp: str) -> IdMap | None:
            self._snapshot(self.vdir(name), vol, tmp, mounted)
            return vol.idmap

        self._new_snapshot(vol, snap, fill)

    def _snap(self, name: str, snap: str) -> tuple[Volume, str]:
        vol = self._meta(name)
        check_name(snap, "snapshot")
        sdir = self._snap_dir(name, snap)
        if not os.path.exists(os.path.join(sdir, "snapshot.json")):
            raise NotFound(f"volume {name!r} has no snapshot {snap!r}")
        return vol, sdir

    def restore(self, name: str, snap: str) -> None:
        """Bring volume `name` back to snapshot `snap` (kept); the volume must be unmounted."""
        self._snap(name, snap)
        with self._locked():
            vol, sdir = self._snap(name, snap)
            self._unmounted(name, "restore")
            meta = read_json(os.path.join(sdir, "snapshot.json"))
            self._restore(self.vdir(name), vol, sdir, meta)
            vol.idmap = IdMap.from_json(meta.get("idmap"))
            self._save(self.vdir(name), vol)

    def delete_snapshot(self, name: str, snap: str) -> None:
        self._snap(name, snap)
        with self._locked():
            _, sdir = self._snap(name, snap)
            gone = os.path.join(os.path.dirname(sdir), f".del-{snap}-{os.getpid()}")
            os.rename(sdir, gone)
            self._remove_snapshot(gone)

    def _remove_snapshot(self, sdir: str) -> None:
        shutil.rmtree(sdir)

    # --- backup ---------------------------------------------------------------------------------
    def export(self, name: str, tar_path: str, extra: dict | None = None,
               more: tuple[tuple[str, str], ...] = ()) -> None:
        """Write volume `name` (its own layer and metadata, no snapshots) to tarball `tar_path`.

        See backup.py for the format. Owners are written as seen inside the instance. `extra`:
        more keys for backup.json (a caller's own record, such as the daemon's instance);
        `more`: (folder, name) of further trees the caller adds after the layer.
        """
        from jaula.storage import backup

        vol = self._meta(name)
        if not isinstance(tar_path, str) or not os.path.isdir(os.path.dirname(os.path.abspath(tar_path))):
            raise ConfigError(f"bad export path {tar_path!r}: its folder must exist")
        with self._locked():  # the lock for the metadata only: the tar runs without it
            vol = self._meta(name)
            mounted = self._mounted_at(name) is not None
        with self._layer(self.vdir(name), vol, mounted) as (parent, arcname):
            meta = {**(extra or {}), **backup.meta_of(vol, self.export_layout)}
            backup.write(tar_path, meta, parent, arcname, vol.idmap, more)

    def import_(self, name: str, tar_path: str, template_rootfs: str | None = None, size: int | None = None) -> Volume:
        """A new volume `name` from tarball `tar_path` made by `export` (of a pool of a compatible kind).

        `template_rootfs` replaces the template path recorded in the tarball, `size` its size.
        The extraction runs without the pool's lock (`_outside`).
        """
        from jaula.storage import backup

        self._absent(name)
        meta = backup.read_meta(tar_path, self.export_layout)
        template = check_template(template_rootfs if template_rootfs is not None else meta["template"])
        if size is None and self.has_quota:  # the size it had, where this pool has quotas
            size = meta.get("size")
        size = self._check_size(size)
        with self._locked():
            self._absent(name)
            vol = Volume(name=name, kind=self.kind, template=template, size=size, created=time.time())
            tmp = self._reserve(name)
        return self._outside(name, vol, tmp, lambda vdir: self._import(vdir, vol, tar_path))

    def import_snapshot(self, name: str, snap: str, tar_path: str) -> None:
        """Add snapshot `snap` to volume `name` from tarball `tar_path` made by `export` (of any
        volume over the same template): imported into a scratch folder, then snapshotted from it
        by the backend's own copy. Its layer is stored unshifted (as seen inside)."""
        from jaula.storage import backup

        self._meta(name)
        check_name(snap, "snapshot")
        backup.read_meta(tar_path, self.export_layout)
        with self._locked():
            vol = self._meta(name)
            scratch = os.path.join(self.volumes_dir, f"{NEW}{name}.{snap}")  # swept as half-made if we die
            if os.path.lexists(scratch):
                self._remove(scratch)
            layer = vol.replace(idmap=None)
            os.mkdir(scratch, 0o711)

        def fill(tmp: str) -> IdMap | None:
            self._import(scratch, layer, tar_path)
            self._snapshot(scratch, layer, tmp, False)
            return None
        try:
            self._new_snapshot(vol, snap, fill)
        finally:
            self._remove(scratch)

    def snapshot_from(self, name: str, snap: str, other: str) -> None:
        """Add snapshot `snap` to volume `name` holding what volume `other` (unmounted, over the
        same template) holds now, in its id range: how a copy takes its source's snapshots."""
        self._meta(name)
        check_name(snap, "snapshot")
        self._meta(other)
        with self._locked():
            vol, src = self._meta(name), self._meta(other)
            self._unmounted(other, "snapshot from")
            if src.template != vol.template:
                raise ConfigError(f"volume {other!r} is over template {src.template!r}, not {vol.template!r} "
                                  f"as {name!r}: it cannot be a snapshot of it")

        def fill(tmp: str) -> IdMap | None:
            self._snapshot(self.vdir(other), src, tmp, False)
            return src.idmap
        self._new_snapshot(vol, snap, fill)

    def _new_snapshot(self, vol: Volume, snap: str, fill) -> None:
        """Make snapshot `snap` of `vol` in a ".new-" folder by `fill(folder)` (-> the id range
        its layer is stored in), then rename it into place. The caller does not hold the lock:
        it is taken to reserve the folder and to rename it, not while `fill` copies (other
        volumes' mounts go on meanwhile). The folder's name holds this process's pid: one a dead
        process left is removed at the next reservation."""
        final = self._snap_dir(vol.name, snap)
        with self._locked():
            if os.path.lexists(final):
                raise Exists(f"volume {vol.name!r} already has a snapshot {snap!r}")
            folder = os.path.dirname(final)
            os.makedirs(folder, mode=0o711, exist_ok=True)
            for left in os.listdir(folder):
                if left.startswith(NEW) and not _alive(left):
                    self._remove_snapshot(os.path.join(folder, left))
            tmp = os.path.join(folder, f"{NEW}{snap}.{os.getpid()}.{os.urandom(4).hex()}")
            os.mkdir(tmp, 0o711)
        try:
            idmap = fill(tmp)
            write_json(os.path.join(tmp, "snapshot.json"), {"name": snap, "created": time.time(), "size": vol.size,
                                                            "idmap": idmap.as_json() if idmap else None})
            with self._locked():
                if os.path.lexists(final):
                    raise Exists(f"volume {vol.name!r} already has a snapshot {snap!r}")
                os.rename(tmp, final)
        except BaseException:
            self._remove_snapshot(tmp)
            raise

    # --- backend hooks --------------------------------------------------------------------------
    def _check_size(self, size: int | None) -> int | None:
        """The volume size to record: None when the backend has no quota."""
        return None if size is None else check_size(size)

    def _mount_source(self, name: str) -> str | None:
        """The source its mount shows in mountinfo, where the backend names it (else not checked)."""
        return None

    def _stale(self, vdir: str) -> None:
        """Undo what a mount left when its target was unmounted behind our back."""

    @abstractmethod
    def _create(self, vdir: str, vol: Volume) -> None: ...

    @abstractmethod
    def _mount(self, vdir: str, vol: Volume, target: str, idmap: IdMap | None) -> None:
        """Mount; when the layer's ids are shifted to `idmap` first, save `vol` before mounting."""

    @abstractmethod
    def _unmount(self, vdir: str, vol: Volume, target: str) -> None: ...

    @abstractmethod
    def _usage(self, vdir: str, vol: Volume) -> int: ...

    @abstractmethod
    def _resize(self, vdir: str, vol: Volume, size: int, mounted: bool) -> None: ...

    @abstractmethod
    def _clone(self, src_vdir: str, vol: Volume, dst_vdir: str, mounted: bool) -> None: ...

    @abstractmethod
    def _snapshot(self, vdir: str, vol: Volume, sdir: str, mounted: bool) -> None: ...

    @abstractmethod
    def _restore(self, vdir: str, vol: Volume, sdir: str, meta: dict) -> None:
        """Replace the volume's content by snapshot `sdir`'s; may set fields of `vol` from `meta`."""

    @abstractmethod
    def _layer(self, vdir: str, vol: Volume, mounted: bool):
        """Context manager: (parent folder, name) of the tree to export, reachable meanwhile."""

    @abstractmethod
    def _import(self, vdir: str, vol: Volume, tar_path: str) -> None: ...


def _alive(folder: str) -> bool:
    """Whether the process that named half-made folder `.new-NAME.PID.RANDOM` still runs (a
    name without a pid, from an older jaula: no)."""
    parts = folder.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_pool(kind: str, path: str, **opts: object) -> Pool:
    """The pool of backend `kind` at `path`, made if new. Options: see each backend's class."""
    if kind == "dir":
        from jaula.storage.pool_dir import DirPool as cls
    elif kind == "loop":
        from jaula.storage.pool_loop import LoopPool as cls
    elif kind == "btrfs":
        from jaula.storage.pool_btrfs import BtrfsPool as cls
    else:
        raise ConfigError(f"unknown pool kind {kind!r}: use one of {', '.join(KINDS)}")
    pool = cls(path, **opts)
    pool.init()
    return pool
