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
