"""jaulad's supervision (main._start_supervision) with a real Supervisor in its own event loop and
a fake backend whose init "exits" while its start operation still runs: the exit is reported
before the operation records the instance running. It must end stopped, with its exit event,
not "running" with nothing to watch (the bug the e2e test reaches only on a busy host)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from jaula.daemon import schemas
from jaula.daemon.api import _Service, create_app
from jaula.daemon.db import Database
from jaula.daemon.main import _start_supervision
from jaula.instances.driver import InstanceState
from jaula.instances.model import Instance
from tests.unit.fake_backend import FakeBackend


class _ExitsAtOnce(FakeBackend):
    """start() has the supervisor report the init's exit (status 0) and waits until the report is
    being handled before it returns, as a fast /bin/true races a start."""

    def __init__(self) -> None:
        super().__init__()
        self.sup: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def attach(self, sup: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.sup, self.loop = sup, loop

    def call(self, op: str, inst: Instance | None = None, **args: Any) -> Any:
        assert op == "exit_status"
        return 0

    def start(self, inst: Instance) -> InstanceState:
        st = super().start(inst)
        entered = threading.Event()
        real = self.sup.on_exit

        async def spy(name: str, status: Any) -> None:
            entered.set()
            await real(name, status)
        self.sup.on_exit = spy
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.sup._report, inst.name, st.pid)
        assert entered.wait(10)
        time.sleep(0.2)  # room for an unlocked handler to record the exit before "running" is written
        return st


def test_an_exit_reported_before_the_start_ends_is_recorded_after_it(tmp_path: Path) -> None:
    db = Database(tmp_path / "jaula.db")
    backend = _ExitsAtOnce()
    app = create_app(db, backend, workers=2)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    listener = app.state.events.subscribe("lifecycle")

    async def supervise() -> Any:
        return _start_supervision(db, backend, app)
    sup = asyncio.run_coroutine_threadsafe(supervise(), loop).result(10)
    try:
        svc = _Service(db, backend, app.state.operations, app.state.events)
        ops = app.state.operations
        assert ops.wait(svc.create(schemas.InstanceCreate(name="t1", template="bb", mode="app")).id, 10).status == "success"
        op = svc.change_state("t1", schemas.StateChange(action="start"))
        assert ops.wait(op.id, 10).status == "success"
        actions = []
        while (event := listener.get(10)) is not None:
            actions.append((event["metadata"]["action"], event["metadata"]["context"]))
            if event["metadata"]["action"] == "instance-exited":
                break
        assert [a for a, _ in actions] == ["instance-created", "instance-started", "instance-exited"]
        assert actions[-1][1] == {"name": "t1", "status": 0}
        row = db.get_instance("t1")
        assert (row.status, row.pid) == ("stopped", None)
    finally:
        loop.call_soon_threadsafe(sup.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        app.state.operations.shutdown()
        db.close()
