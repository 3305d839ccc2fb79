"""operations.after_answer: what an action run by `in_worker` leaves for the event loop (the
supervisor's watch of a started init) runs once the request has its answer, in order; from any
other thread at once; and `run_left_for_loop` makes what is still left first."""

from __future__ import annotations

import asyncio
import threading

from jaula.daemon.db import Database
from jaula.daemon.operations import Operations, after_answer, run_left_for_loop


def test_calls_wait_for_the_answer_and_keep_their_order(tmp_path) -> None:
    with Database(tmp_path / "jaula.db") as db:
        ops = Operations(db, workers=2)
        seen: list[str] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def action() -> str:
                after_answer(loop, seen.append, "watch 1")
                after_answer(loop, seen.append, "watch 2")
                return "ended"
            assert await ops.in_worker(action) == "ended"
            seen.append("answered")               # the request's coroutine goes on first
            await asyncio.sleep(0)
            assert seen == ["answered", "watch 1", "watch 2"]

            done = threading.Event()              # not in an in_worker request: at once
            threading.Thread(target=lambda: (after_answer(loop, seen.append, "other"), done.set())).start()
            done.wait(5)
            for _ in range(100):
                if "other" in seen:
                    break
                await asyncio.sleep(0.01)
            assert seen[-1] == "other"

            gate = threading.Event()              # left, then made first by run_left_for_loop

            def held() -> str:
                after_answer(loop, seen.append, "watch 3")
                gate.wait(5)
                return "ended"
            task = asyncio.ensure_future(ops.in_worker(held))
            for _ in range(100):
                await asyncio.sleep(0.01)
                run_left_for_loop(loop)
                if seen[-1] == "watch 3":
                    break
            assert seen[-1] == "watch 3"
            gate.set()
            assert await task == "ended"
            await asyncio.sleep(0)
            assert seen.count("watch 3") == 1     # made once

            def late() -> str:                    # the request gave up: what comes after goes at once
                gate2.wait(5)
                after_answer(loop, seen.append, "late")
                return "ended"
            gate2 = threading.Event()
            task = asyncio.ensure_future(ops.in_worker(late))
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.sleep(0)
            gate2.set()
            for _ in range(100):
                if "late" in seen:
                    break
                await asyncio.sleep(0.01)
            assert seen[-1] == "late"

        asyncio.run(main())
        ops.shutdown()


def test_a_request_given_up_before_a_worker_took_it_frees_its_place(tmp_path) -> None:
    with Database(tmp_path / "jaula.db") as db:
        ops = Operations(db, workers=1)
        gate = threading.Event()

        async def main() -> None:
            first = asyncio.ensure_future(ops.in_worker(lambda: gate.wait(5) and "held"))
            await asyncio.sleep(0.05)
            assert not ops.worker_free()
            queued = asyncio.ensure_future(ops.in_worker(lambda: "never"))
            await asyncio.sleep(0.05)
            queued.cancel()                                # before the only worker took it
            await asyncio.sleep(0)
            gate.set()
            assert await first == "held"
            for _ in range(100):
                if ops.worker_free():
                    break
                await asyncio.sleep(0.01)
            assert ops.worker_free() and ops._outstanding == 0

        asyncio.run(main())
        ops.shutdown()
