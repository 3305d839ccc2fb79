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
