"""The container driver's snapshots, copies and backups (a mixin of `ContainerDriver`): the pool
does the work; the driver decides when an instance must hold still and personalizes new roots.

Consistency of a running instance's copy: on btrfs pools a snapshot is atomic, so it is taken
live; on the other pools (their copy is a file copy of the layer) the instance is frozen (the
cgroup freezer) for the moment of the copy, then thawed, so the copy is what a power cut at one
instant would leave, never a mix of two moments. A frozen instance stays frozen; a stopped one
is copied as it is. Restore needs the instance stopped (the API stops it when asked to).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jaula.errors import BadState, ConfigError, Exists
from jaula.instances import settings
from jaula.instances.model import Instance, validate_name


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
        self.pool.restore(validate_name(inst.name), snap)

    def delete_snapshot(self, inst: Instance, snap: str) -> None:
        validate_name(snap, "Snapshot")
        self.pool.delete_snapshot(validate_name(inst.name), snap)

    # --- new roots from others -------------------------------------------------------------------
    def copy(self, inst: Instance, source: str, snapshot: str | None = None) -> None:
        inst.validate()
        validate_name(source)
        if snapshot is None:
            with self._still(source, atomic=self.atomic_snapshots):
                self.pool.clone(source, inst.name)
        else:
            self.pool.clone(source, inst.name, validate_name(snapshot, "Snapshot"))
        self._personalized(inst)

    def export(self, inst: Instance, path: str, record: dict[str, Any]) -> None:
        name = validate_name(inst.name)
        _check_new_file(path)
        with self._still(name):
            self.pool.export(name, path, {"instance": record})

    def import_(self, inst: Instance, path: str) -> None:
        from jaula.storage import backup
        from jaula.storage.backup_check import check_archive

        inst.validate()
        size = settings.effective(inst.config).get("limits.disk")
        if size is not None and not self.pool.has_quota:
            raise ConfigError(f"limits.disk: a {self.pool.kind} pool has no per-instance disk quota; "
                              "use a loop or btrfs pool, or unset limits.disk")
        template = self.templates.get(inst.template)
        backup.read_meta(path, self.pool.export_layout)
        check_archive(path, self.pool.export_layout, limit=size)
        self.pool.import_(inst.name, path, str(template.rootfs), size=size)
        self._personalized(inst)

    def _personalized(self, inst: Instance) -> None:
        """Its /etc/hostname says its own name; the new volume goes if that fails."""
        try:
            self._personalize(inst)  # type: ignore[attr-defined]
        except BaseException:
            self.pool.unmount(inst.name)
            self.pool.delete_volume(inst.name)
            raise


def _check_new_file(path: object) -> str:
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ConfigError(f"bad backup path {path!r}: give an absolute path (it is written by jaulad, on its host)")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"bad backup path {path!r}: its folder does not exist")
    if os.path.lexists(path):
        raise Exists(f"{path!r} exists already: give the name of a new file")
    return path
