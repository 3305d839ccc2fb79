"""The container driver's snapshots, copies and backups (a mixin of `ContainerDriver`): the pool
does the work; the driver decides when an instance must hold still and personalizes new roots.

Consistency of a running instance's copy: on btrfs pools a snapshot is atomic, so it is taken
live; on the other pools (their copy is a file copy of the layer) the instance is frozen (the
cgroup freezer) for the moment of the copy, then thawed, so the copy is what a power cut at one
instant would leave, never a mix of two moments. A frozen instance stays frozen; a stopped one
is copied as it is. An export of a running instance freezes it only while its layer is cloned
to a scratch volume, which is then written out and deleted. Restore needs the instance stopped
(the API stops it when asked to).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from jaula.errors import BadState, ConfigError, Exists
from jaula.instances import settings
from jaula.instances.model import Instance, validate_name
from jaula.storage.fsutil import stop_point

#: writes an instance's host name in a new volume: (instance, volume name)
Personalize = Callable[[Instance, str], None]


class StorageVerbs:
    """Snapshot, restore, copy, export and import for a driver with `pool`, `templates`,
    `_container(name)`, `_personalize(inst)` and `state(inst)` (ContainerDriver)."""

    pool: Any
    templates: Any

    # --- holding still ---------------------------------------------------------------------------
    @contextmanager
    def _still(self, name: str, atomic: bool = False) -> Iterator[None]:
        """Freeze instance `name` while the block copies its root, when it runs (module doc)."""
        from jaula.oci import lifecycle
        from jaula.oci.state import RUNNING as UP

        c = self._container(name)  # type: ignore[attr-defined]
        if atomic or c is None or c.status() != UP:
            yield
            return
        lifecycle.pause(c)
        try:
            yield
        finally:
            lifecycle.resume(c)

    def _runs(self, name: str) -> bool:
        """Whether instance `name`'s processes are there and not frozen."""
        from jaula.oci.state import RUNNING as UP

        c = self._container(name)  # type: ignore[attr-defined]
        return c is not None and c.status() == UP

    def _stopped(self, inst: Instance, doing: str) -> None:
        from jaula.oci.state import STOPPED as GONE

        c = self._container(inst.name)  # type: ignore[attr-defined]
        if c is not None and c.status() != GONE:
            raise BadState(f"cannot {doing} instance {inst.name!r}: it is {self.state(inst).status}; "  # type: ignore[attr-defined]
                           "stop it first")

    @property
    def atomic_snapshots(self) -> bool:
        return getattr(self.pool, "kind", "") == "btrfs"

    # --- snapshots -------------------------------------------------------------------------------
    def snapshot(self, inst: Instance, snap: str) -> dict[str, Any]:
        from jaula.storage.fsutil import disk_usage

        name = validate_name(inst.name)
        validate_name(snap, "Snapshot")
        with self._still(name, atomic=self.atomic_snapshots):
            self.pool.snapshot(name, snap)
        try:
            size: int | None = disk_usage(os.path.join(self.pool.vdir(name), "snapshots", snap))
        except OSError:
            size = None
        return {"size": size, "live": self.atomic_snapshots}

    def restore(self, inst: Instance, snap: str) -> None:
        validate_name(snap, "Snapshot")
        self._stopped(inst, f"restore snapshot {snap!r} of")
        if self._kept_root(inst.name, inst):  # type: ignore[attr-defined]
            self._release(inst.name)  # type: ignore[attr-defined]  # mounted by create: restored unmounted
        self.pool.restore(validate_name(inst.name), snap)

    def delete_snapshot(self, inst: Instance, snap: str) -> None:
        validate_name(snap, "Snapshot")
        self.pool.delete_snapshot(validate_name(inst.name), snap)

    # --- new roots from others -------------------------------------------------------------------
    # A copy or an import is long file work (cp, tar) and one short step that mounts the new root
    # to write its host name (`personalize`). jaulad runs the long part in the operation's thread
    # and has its spawner do `personalize` only (the idmapped mount needs a user namespace made by
    # a fork): so `copy` and `import_` take the `personalize` to call. Between steps, and while a
    # tool runs, the work stops when the thread's stop check says so (fsutil.stoppable).
    def personalize(self, inst: Instance, volume: str | None = None) -> None:
        """Write `inst`'s name in new volume `volume`'s (default: its own) /etc/hostname, its layer
        already in `inst`'s id range (`pool.shift_layer`): a mount, a write, an unmount."""
        self._personalize(inst, volume)  # type: ignore[attr-defined]

    def copy(self, inst: Instance, source: str, snapshot: str | None = None,
             snapshots: list[str] | None = None, personalize: Personalize | None = None) -> None:
        """With `snapshots`, those snapshots of `source` become the copy's too (each through a
        scratch clone of it, deleted after)."""
        personalize = personalize or self.personalize
        inst.validate()
        validate_name(source)
        snaps = [validate_name(s, "Snapshot") for s in snapshots or []]
        if missing := sorted(set(snaps) - set(self.pool.snapshots(source))):
            raise ConfigError(f"instance {source!r} has no snapshot {', '.join(map(repr, missing))} in its pool")
        if snapshot is None:
            with self._still(source, atomic=self.atomic_snapshots):
                self.pool.clone(source, inst.name)
        else:
            self.pool.clone(source, inst.name, validate_name(snapshot, "Snapshot"))
        try:
            for snap in snaps:
                stop_point()
                scratch = _scratch_name()
                self.pool.clone(source, scratch, snap)
                self._adopt(inst, snap, scratch, personalize)
            self._ready(inst, inst.name, personalize)
        except BaseException:
            self._drop(inst.name)
            raise

    def _ready(self, inst: Instance, volume: str, personalize: Personalize) -> None:
        """New volume `volume`'s layer moved to `inst`'s id range (here: a walk of the whole tree),
        then its host name written (`personalize`: a mount)."""
        stop_point()
        self.pool.shift_layer(volume, self._idmap(inst))  # type: ignore[attr-defined]
        stop_point()
        personalize(inst, volume)

    def _drop(self, volume: str) -> None:
        """Undo: new volume `volume` goes (unmounted first, had `personalize` failed mounted)."""
        self.pool.unmount(volume)
        self.pool.delete_volume(volume)

    def _adopt(self, inst: Instance, snap: str, scratch: str, personalize: Personalize) -> None:
        """Make scratch volume `scratch` snapshot `snap` of `inst`, its host name written in it
        first (restored, the snapshot names the instance it belongs to); the scratch goes."""
        try:
            self._ready(inst, scratch, personalize)
            stop_point()
            self.pool.snapshot_from(inst.name, snap, scratch)
        finally:
            self._drop(scratch)

    def export(self, inst: Instance, path: str, record: dict[str, Any], snapshots: list[str] | None = None) -> None:
        """With `snapshots`, each is added as `snapshots/NAME.tar`, a volume backup of its own
        (made from a scratch clone of the snapshot, deleted after)."""
        import tempfile

        name = validate_name(inst.name)
        _check_new_file(path)
        snaps = [validate_name(s, "Snapshot") for s in snapshots or []]
        if missing := sorted(set(snaps) - set(self.pool.snapshots(name))):
            raise ConfigError(f"instance {name!r} has no snapshot {', '.join(map(repr, missing))} in its pool")
        with tempfile.TemporaryDirectory(prefix=".export-", dir=os.path.dirname(path)) as tmp:
            more: tuple[tuple[str, str], ...] = ()
            if snaps:
                os.mkdir(os.path.join(tmp, "snapshots"), 0o700)
                more = ((tmp, "snapshots"),)
            for snap in snaps:
                stop_point()
                scratch = _scratch_name()
                self.pool.clone(name, scratch, snap)
                try:
                    self.pool.export(scratch, os.path.join(tmp, "snapshots", snap + ".tar"))
                finally:
                    self.pool.delete_volume(scratch)
            if not self._runs(name):
                self.pool.export(name, path, {"instance": record}, more)
                return
            # Running: frozen only while its layer is cloned, then the clone is written out
            # (compressing takes far longer than copying: seconds per 100 MiB here).
            scratch = _scratch_name()
            with self._still(name, atomic=self.atomic_snapshots):
                self.pool.clone(name, scratch)
            try:
                self.pool.export(scratch, path, {"instance": record}, more)
            finally:
                self.pool.delete_volume(scratch)

    def import_(self, inst: Instance, path: str, snapshots: list[str] | None = None,
                personalize: Personalize | None = None) -> None:
        """With `snapshots`, those of the backup's `snapshots/NAME.tar` are added, in this order."""
        import tempfile

        from jaula.storage import backup
        from jaula.storage.backup_check import check_archive

        personalize = personalize or self.personalize
        inst.validate()
        size = settings.effective(inst.config).get("limits.disk")
        if size is not None and not self.pool.has_quota:
            raise ConfigError(f"limits.disk: a {self.pool.kind} pool has no per-instance disk quota; "
                              "use a loop or btrfs pool, or unset limits.disk")
        template = self.templates.get(inst.template)
        layout = self.pool.export_layout
        backup.read_meta(path, layout)
        found = check_archive(path, layout, limit=size)
        snaps = [validate_name(s, "Snapshot") for s in snapshots or []]
        if missing := [s for s in snaps if s not in found.snapshots]:
            raise ConfigError(f"backup {path!r} holds no snapshot {', '.join(map(repr, missing))} "
                              f"(it holds: {', '.join(found.snapshots) or 'none'})")
        self.pool.import_(inst.name, path, str(template.rootfs), size=size)
        try:
            if snaps:
                with tempfile.TemporaryDirectory(prefix=".new-import-", dir=self.pool.volumes_dir) as tmp:
                    backup.extract(path, tmp, "snapshots")
                    for snap in snaps:
                        one = os.path.join(tmp, "snapshots", snap + ".tar")
                        backup.read_meta(one, layout)
                        check_archive(one, layout, limit=size)
                        scratch = _scratch_name()
                        self.pool.import_(scratch, one, str(template.rootfs), size=size)
                        os.unlink(one)  # its space back before the next one
                        self._adopt(inst, snap, scratch, personalize)
            self._ready(inst, inst.name, personalize)
        except BaseException:
            self._drop(inst.name)
            raise


def _scratch_name() -> str:
    """A scratch volume's name: a DNS label no instance has (random), so that jaulad's orphan sweep,
    which deletes volumes without an instance row, removes one a crash left."""
    import uuid

    return f"x-export-{uuid.uuid4().hex[:16]}"


def _check_new_file(path: object) -> str:
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ConfigError(f"bad backup path {path!r}: give an absolute path (it is written by jaulad, on its host)")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"bad backup path {path!r}: its folder does not exist")
    if os.path.lexists(path):
        raise Exists(f"{path!r} exists already: give the name of a new file")
    return path
