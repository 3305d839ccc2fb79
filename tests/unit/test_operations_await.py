"""Operations.await_end, the API's long poll in the event loop: the worker that records an
operation's end hands the row over; a timeout gives the operation as it is; a cancel wakes it too."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jaula.daemon.db import Database
from jaula.daemon.operations import Operations
from jaula.errors import NotFound


def test_await_end_gets_the_end_from_the_worker_and_times_out_while_it_runs(tmp_path) -> None:
    with Database(tmp_path / "jaula.db") as db:
        ops = Operations(db, workers=2)
        gate = threading.Event()
        op = ops.submit("held", lambda: gate.wait(10) and {"done": 1})

        reads: list[str] = []
        read = db.get_operation

        def counted(op_id: str):  # the waiter's reads (the worker reads too: counted apart)
            if threading.current_thread().name.startswith("asyncio"):
                reads.append(op_id)
            return read(op_id)

        async def main() -> tuple:
            early = await ops.await_end(op.id, 0.2)            # still running: as it is
            db.get_operation = counted  # type: ignore[method-assign]
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, gate.set)
            ended = await ops.await_end(op.id)                  # no limit: woken by the worker
            n = len(reads)
            again = await ops.await_end(op.id, 5)              # ended already: at once
            return early, ended, again, n

        early, ended, again, n = asyncio.run(main())
        ops.shutdown()
        # one read when it began; the end came from the worker, not from reading again
        assert n == 1
        assert early.status == "running"
        assert (ended.status, ended.metadata) == ("success", {"done": 1})
        assert again.status == "success"
        assert ops._enders == {}  # nothing left registered


def test_await_end_sees_a_cancel_and_says_not_found(tmp_path) -> None:
    with Database(tmp_path / "jaula.db") as db:
        ops = Operations(db, workers=1)
        gate = threading.Event()
        ops.submit("hold the only worker", lambda: gate.wait(10) and None)
        second = ops.submit("queued", dict)

        async def main() -> object:
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, ops.cancel, second.id)
            return await ops.await_end(second.id)

        try:
            assert asyncio.run(main()).status == "cancelled"
            with pytest.raises(NotFound):
                asyncio.run(ops.await_end("no-such-operation", 1))
        finally:
            gate.set()
            ops.shutdown()
