"""The one interface every kind of instance is driven through (Incus's instance interface,
Ganeti's BaseHypervisor): the daemon, API and CLI never ask "container or vm?"."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from jaula.errors import ConfigError
from jaula.instances.model import Instance
from jaula.record import Record

STOPPED, STARTING, RUNNING, FROZEN = "stopped", "starting", "running", "frozen"


class InstanceState(Record):
    """What a driver sees of an instance now. `pid`: its first process on the host (0 when
    stopped); `init`: the init the stop signal was chosen for ("app" for app instances)."""

    status: str
    pid: int = 0
    init: str = ""
    stop_signal: int = 0


class Driver(abc.ABC):
    """Drives instances of one kind. Every method takes the instance with its effective config
    (profiles merged: `Instance.merged_config`)."""

    kind: ClassVar[str]
    #: the settings this driver understands (keys of settings.SETTINGS; free keys always)
    SETTINGS: ClassVar[frozenset[str]]
    CAN_FREEZE: ClassVar[bool] = True
    CAN_UPDATE_LIVE: ClassVar[bool] = True

    @abc.abstractmethod
    def create(self, inst: Instance) -> None:
        """Make the instance's root (a volume over its template); nothing runs yet."""

    @abc.abstractmethod
    def delete(self, inst: Instance) -> None:
        """Remove the instance's root; it must be stopped."""

    @abc.abstractmethod
    def start(self, inst: Instance) -> InstanceState:
        """Start it; on failure nothing is left running, mounted or made."""

    @abc.abstractmethod
    def stop(self, inst: Instance, timeout: float = 30.0, force: bool = False) -> bool:
        """Ask it to shut down, wait up to `timeout` seconds, then kill it (at once with `force`);
        frees everything it held. True when it stopped by itself."""

    @abc.abstractmethod
    def freeze(self, inst: Instance) -> None: ...

    @abc.abstractmethod
    def unfreeze(self, inst: Instance) -> None: ...

    @abc.abstractmethod
    def exec(self, inst: Instance, args: list[str], *, env: dict[str, str] | None = None,
             user: tuple[int, int] | None = None, cwd: str | None = None, tty: bool = False,
             stdin: int | None = None, stdout: int | None = None, stderr: int | None = None) -> int:
        """Run a command inside; its exit code (128+N when killed by signal N). stdin/stdout/stderr
        are file descriptors (the caller's own when None)."""

    @abc.abstractmethod
    def state(self, inst: Instance) -> InstanceState: ...

    @abc.abstractmethod
    def stats(self, inst: Instance) -> Any:
        """Its counters (jaula.cgroups.Stats: the beancounter rows)."""

    # Snapshots, copies and backups: a driver without them refuses, saying so.
    def snapshot(self, inst: Instance, snap: str) -> dict[str, Any]:
        """Keep the root's present content as snapshot `snap` (a running instance may be snapshotted);
        returns {"size": bytes it holds, or None}."""
        raise ConfigError(f"{self.kind} instances have no snapshots")

    def restore(self, inst: Instance, snap: str) -> None:
        """Bring the root back to snapshot `snap` (kept); the instance is stopped."""
        raise ConfigError(f"{self.kind} instances have no snapshots")

    def delete_snapshot(self, inst: Instance, snap: str) -> None:
        raise ConfigError(f"{self.kind} instances have no snapshots")

    def copy(self, inst: Instance, source: str, snapshot: str | None = None,
             snapshots: list[str] | None = None) -> None:
        """Make new instance `inst`'s root a copy of instance `source`'s (or of its snapshot),
        with these snapshots of `source` as its own."""
        raise ConfigError(f"{self.kind} instances cannot be copied")

    def export(self, inst: Instance, path: str, record: dict[str, Any], snapshots: list[str] | None = None) -> None:
        """Write the instance's root (and these snapshots) to a new backup file `path`, with
        `record` in its metadata."""
        raise ConfigError(f"{self.kind} instances cannot be exported")

    def import_(self, inst: Instance, path: str, snapshots: list[str] | None = None) -> None:
        """Make new instance `inst`'s root (and these snapshots) from backup file `path` (made by `export`)."""
        raise ConfigError(f"{self.kind} instances cannot be imported")

    @abc.abstractmethod
    def update(self, inst: Instance, config: dict[str, Any]) -> dict[str, Any]:
        """Check `config` as its new settings, apply what a running instance takes at once, and
        return the normalized config for the caller to store; a change that needs the instance
        stopped is refused (BadState) while it runs."""
