"""What the API drives instances through: the instance driver's verbs, behind whatever runs them.

The daemon's real backend hands these to the single-threaded spawner and the supervisor
(`spawner.py`, `supervisor.py`); the API's tests use a fake. Every method gets the instance with
its effective config (profiles merged), as the drivers do (`jaula.instances.driver.Driver`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from jaula.instances.driver import InstanceState
from jaula.instances.model import Instance


@runtime_checkable
class Backend(Protocol):
    def create(self, inst: Instance) -> None:
        """Make the instance's root; nothing runs yet."""

    def start(self, inst: Instance) -> InstanceState:
        """Start it; on failure nothing is left running."""

    def stop(self, inst: Instance, timeout: float = 30.0, force: bool = False) -> bool:
        """Shut it down (kill after `timeout`, at once with `force`); True when it stopped by itself."""

    def freeze(self, inst: Instance) -> None: ...

    def unfreeze(self, inst: Instance) -> None: ...

    def delete(self, inst: Instance) -> None:
        """Remove its root; it is stopped."""

    def state(self, inst: Instance) -> InstanceState: ...

    def stats(self, inst: Instance) -> Any:
        """Its counters (jaula.cgroups.Stats), or None when it has none now."""

    def update(self, inst: Instance, config: dict[str, Any]) -> dict[str, Any]:
        """Apply `config` (validated) to a running instance; the normalized config to store.
        A change that needs the instance stopped raises BadState."""

    # -- snapshots, copies and backups (jaula.instances.container_storage) ----------------------
    def snapshot(self, inst: Instance, snap: str) -> dict[str, Any]:
        """Keep its root as snapshot `snap`; {"size": bytes or None, "live": taken without a freeze}."""

    def restore(self, inst: Instance, snap: str) -> None:
        """Bring its root back to snapshot `snap`; it is stopped."""

    def delete_snapshot(self, inst: Instance, snap: str) -> None: ...

    def copy(self, inst: Instance, source: str, snapshot: str | None = None,
             snapshots: list[str] | None = None) -> None:
        """Make new instance `inst`'s root a copy of instance `source`'s (or of its snapshot),
        with these snapshots of `source` as its own."""

    def export(self, inst: Instance, path: str, record: dict[str, Any], snapshots: list[str] | None = None) -> None:
        """Write its root (and these snapshots) to new backup file `path` (on jaulad's host),
        `record` in its metadata."""

    def import_(self, inst: Instance, path: str, snapshots: list[str] | None = None) -> None:
        """Make new instance `inst`'s root (and these of the file's snapshots) from backup file `path`."""

    def read_backup(self, path: str) -> dict[str, Any]:
        """A backup file's metadata (backup.json), checked for this host's pool."""

    def backups_dir(self) -> str:
        """A folder only root reads: exports waiting to be downloaded, uploads waiting to be imported."""
