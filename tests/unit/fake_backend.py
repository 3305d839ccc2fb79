"""A Backend for the API's tests: instances live in a dict, every call is recorded, and a test
can make a verb fail (`fail["start"] = BadState("...")`) or hold it (`gate["start"]`, an Event)."""

from __future__ import annotations

import threading
from typing import Any

from jaula.errors import BadState
from jaula.instances import settings
from jaula.instances.driver import InstanceState
from jaula.instances.model import Instance


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.status: dict[str, str] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, Exception] = {}
        self.gate: dict[str, threading.Event] = {}
        self._pid = 1000
        self.templates = FakeTemplateStore()
        self.roots: dict[str, dict[str, str]] = {}               # name -> {path: content}
        self.snaps: dict[str, dict[str, dict[str, str]]] = {}    # name -> snapshot -> root

    def template_store(self) -> Any:
        return self.templates

    def _call(self, verb: str, inst: Instance) -> None:
        self.calls.append((verb, inst.name))
        if verb in self.gate:
            self.gate[verb].wait(10)
        if verb in self.fail:
            raise self.fail[verb]

    def create(self, inst: Instance) -> None:
        self._call("create", inst)
        self.status[inst.name] = "stopped"
        self.configs[inst.name] = dict(inst.config)

    def start(self, inst: Instance) -> InstanceState:
        self._call("start", inst)
        self._pid += 1
        self.status[inst.name] = "running"
        return InstanceState(status="running", pid=self._pid, init="busybox", stop_signal=12)

    def stop(self, inst: Instance, timeout: float = 30.0, force: bool = False) -> bool:
        self._call("stop", inst)
        self.status[inst.name] = "stopped"
        return not force

    def freeze(self, inst: Instance) -> None:
        self._call("freeze", inst)
        self.status[inst.name] = "frozen"

    def unfreeze(self, inst: Instance) -> None:
        self._call("unfreeze", inst)
        self.status[inst.name] = "running"

    def delete(self, inst: Instance) -> None:
        self._call("delete", inst)
        if self.status.get(inst.name) not in (None, "stopped"):
            raise BadState(f"fake: {inst.name} is {self.status[inst.name]}")
        self.status.pop(inst.name, None)

    def state(self, inst: Instance) -> InstanceState:
        status = self.status.get(inst.name, "stopped")
        return InstanceState(status=status, pid=self._pid if status != "stopped" else 0, init="busybox",
                             stop_signal=12)

    def stats(self, inst: Instance) -> Any:
        from jaula.cgroups.stats import Counter, Stats

        return Stats(name=inst.name, cpu_usage_ns=5, rows=[
            Counter("memory", held=1 << 20, maxheld=2 << 20, limit=inst.config.get("limits.memory"), failcnt=0),
            Counter("pids", held=3, maxheld=4, limit=inst.config.get("limits.processes", 2048), failcnt=0,
                    unit="processes")])

    def update(self, inst: Instance, config: dict[str, Any]) -> dict[str, Any]:
        self._call("update", inst)
        self.configs[inst.name] = settings.validate(config)
        return self.configs[inst.name]

    # -- snapshots, copies and backups: a root is a dict of files ----------------------------------
    def snapshot(self, inst: Instance, snap: str) -> dict[str, Any]:
        from jaula.errors import Exists

        self._call("snapshot", inst)
        if snap in self.snaps.setdefault(inst.name, {}):
            raise Exists(f"fake: {inst.name} already has a snapshot {snap!r}")
        self.snaps[inst.name][snap] = dict(self.roots.setdefault(inst.name, {}))
        return {"size": 4096, "live": False}

    def restore(self, inst: Instance, snap: str) -> None:
        self._call("restore", inst)
        if self.status.get(inst.name, "stopped") != "stopped":
            raise BadState(f"fake: {inst.name} is {self.status[inst.name]}")
        self.roots[inst.name] = dict(self.snaps[inst.name][snap])

    def delete_snapshot(self, inst: Instance, snap: str) -> None:
        self._call("delete_snapshot", inst)
        del self.snaps[inst.name][snap]

    def copy(self, inst: Instance, source: str, snapshot: str | None = None,
             snapshots: list[str] | None = None) -> None:
        self._call("copy", inst)
        root = self.roots.get(source, {}) if snapshot is None else self.snaps[source][snapshot]
        self.roots[inst.name] = dict(root)
        self.snaps[inst.name] = {s: dict(self.snaps[source][s]) for s in snapshots or []}
        self.status[inst.name] = "stopped"
        self.configs[inst.name] = dict(inst.config)

    def export(self, inst: Instance, path: str, record: dict[str, Any], snapshots: list[str] | None = None) -> None:
        import json

        self._call("export", inst)
        snaps = {s: self.snaps[inst.name][s] for s in snapshots or []}
        with open(path, "x") as f:
            json.dump({"format": "jaula-volume", "instance": record, "root": self.roots.get(inst.name, {}),
                       "snapshots": snaps}, f)

    def import_(self, inst: Instance, path: str, snapshots: list[str] | None = None) -> None:
        self._call("import", inst)
        data = self.read_backup(path)
        self.roots[inst.name] = dict(data["root"])
        self.snaps[inst.name] = {s: dict(data["snapshots"][s]) for s in snapshots or []}
        self.status[inst.name] = "stopped"
        self.configs[inst.name] = dict(inst.config)

    def backups_dir(self) -> str:
        """The folder a test gave (`backend.backups = str(tmp_path)`)."""
        from jaula.errors import JaulaError

        if getattr(self, "backups", None) is None:
            raise JaulaError("fake: no backups folder: set backend.backups")
        return self.backups  # type: ignore[return-value]

    def read_backup(self, path: str) -> dict[str, Any]:
        import json

        from jaula.errors import ConfigError

        try:
            with open(path) as f:
                return json.load(f)
        except ValueError:
            raise ConfigError(f"{path!r} is not a jaula volume backup") from None


class FakeTemplateStore:
    """A TemplateStore without files: `build` reports progress and records a Template; a test
    can hold a build (`gate`, an Event) or make it fail (`fail`)."""

    def __init__(self) -> None:
        from jaula.storage.templates import Template  # noqa: F401  (checked importable)

        self.templates: dict[str, Any] = {}
        self.in_use: Any = None
        self.gate: threading.Event | None = None
        self.fail: Exception | None = None
        self.builds: list[tuple[str, str, dict[str, Any]]] = []

    def list(self) -> list[Any]:
        return [self.templates[n] for n in sorted(self.templates)]

    def get(self, name: str) -> Any:
        from jaula.errors import NotFound

        if name not in self.templates:
            raise NotFound(f"Template {name!r} not found")
        return self.templates[name]

    def exists(self, name: str) -> bool:
        return name in self.templates

    def build(self, name: str, source: str, *, replace: bool = False, progress: Any = None, **opts: Any) -> Any:
        from jaula.storage.templates import Template

        self.builds.append((name, source, opts))
        progress = progress or (lambda *a: None)
        progress("fetch", 0, 3)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        for i in range(1, 4):
            progress("fetch", i, 3)
        t = Template(name=name, source=source, created="2026-01-01T00:00:00Z", size=4096, os="busybox",
                     arch="amd64", cmd=["/bin/sh"])
        self.templates[name] = t
        progress("done", t.size, t.size)
        return t

    def delete(self, name: str) -> None:
        from jaula.errors import BadState

        self.get(name)
        users = self.in_use(name) if self.in_use else []
        if users:
            raise BadState(f"Template {name!r} is used by {', '.join(users)}")
        del self.templates[name]
