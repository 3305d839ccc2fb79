"""The overcommit check under concurrent starts (host.py's `Host.starting`), through the API with
the fake backend: many starts at once, each slow in the backend (as a real start is), must never
together commit more than physical x ratio; the ones past it are refused saying so."""

from __future__ import annotations

import threading
import time

from jaula.errors import BadState
from tests.unit.test_api import create

GiB = 1 << 30


def test_concurrent_starts_never_pass_the_memory_ratio_together(api, openapi) -> None:
    api.app.state.host.probe = lambda: {"physical": {"cpu": 4, "memory": 24 * GiB, "disk": 100 * GiB},
                                        "used": {"cpu": 0.5, "memory": 2 * GiB, "disk": 10 * GiB}}
    api.backend.templates.build("bb", "busybox")
    names = [f"w{i}" for i in range(8)]
    for n in names:  # 8 GiB each on 24 GiB at ratio 1.0: three fit
        create(api, openapi, n, config={"limits.memory": "8GiB"})

    real_start = api.backend.start

    def slow_start(inst):  # the window between the check and the row saying running
        time.sleep(0.3)
        return real_start(inst)

    api.backend.start = slow_start
    gate = threading.Barrier(len(names))
    refused: list[str] = []
    errors: list[BaseException] = []

    def start(name: str) -> None:
        gate.wait()
        try:
            api.client.start(name)
        except BadState as exc:
            refused.append(str(exc))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    running = [n for n in names if api.db.get_instance(n).status == "running"]
    assert len(running) == 3, (running, refused)
    assert len(refused) == 5 and all("would commit 32 GiB of memory against 24 GiB" in r for r in refused), refused
    assert api.app.state.host.committed()["memory"] == 24 * GiB  # nothing left reserved
