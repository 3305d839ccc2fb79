"""The spawner with the real container driver, and the supervisor watching what it started: a
busybox system instance started through the spawner, its init's pidfd handed to the test's
event loop, its exit seen when stopped (with the status the spawner reaped), and live restore:
an instance outlives its spawner and is adopted again; a dead pid is reported stopped with an
unknown exit status. Nothing is left behind (the `host` fixture's leak check)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.daemon.spawner import Spawner
from jaula.daemon.supervisor import UNKNOWN, Supervisor
from jaula.instances.container import ContainerDriver
from jaula.oci.state import proc_start_time
from jaula.storage import TemplateStore
from jaula.storage.pool import open_pool
from tests.integration.test_instances_container import Host, booted, host, store  # noqa: F401 - fixtures
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root


def make_driver(run: str, pool: str, templates: str, cache: str) -> ContainerDriver:
    """The spawner's driver: the same paths as the test's in-process one (module level, so a
    re-exec'd spawner can import it by name)."""
    return ContainerDriver(run, open_pool("dir", pool), TemplateStore(root=templates, cache=cache))


@pytest.fixture
def sp(host: Host) -> Iterator[Spawner]:  # noqa: F811
    if threading.active_count() != 1:
        pytest.skip(f"{threading.active_count()} threads in the test process: the spawner needs one")
    s = Spawner.start(make_driver, {"run": host.driver.root, "pool": str(host.top / "pool"),
                                    "templates": str(host.driver.templates.root),
                                    "cache": str(host.driver.templates.cache)})
    try:
        yield s
    finally:
        s.close()  # before the host fixture's own cleanup and leak check


def _started(host: Host, inst, st: dict) -> None:  # noqa: F811
    host.pids.add(st["pid"])
    c = host.driver._container(inst.name)
    host.cgroups |= set(c.data["cgroupPaths"].values())


def test_spawner_starts_an_instance_and_the_supervisor_sees_it_stop(host: Host, sp: Spawner) -> None:  # noqa: F811
    inst = host.new()

    async def main() -> list:
        seen: list = []
        done = asyncio.Event()

        def on_exit(name: str, status: object) -> None:
            seen.append((name, status))
            done.set()

        sup = Supervisor(on_exit, exit_status=lambda pid: sp.call("exit_status", pid=pid))
        st = await sp.acall("start", inst)
        _started(host, inst, st)
        assert (st["status"], st["init"], st["stop_signal"]) == ("running", "busybox", signal.SIGUSR2)
        sup.watch(inst.name, st["pidfd"], st["pid"])
        # the init's parent is the spawner (a subreaper): it alone can reap it
        ppid = int(Path(f"/proc/{st['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid == sp.pid
        await asyncio.get_running_loop().run_in_executor(None, booted, host, inst)
        assert (await sp.acall("state", inst))["status"] == "running"
        assert await sp.acall("stop", inst, timeout=20) is True
        await asyncio.wait_for(done.wait(), 5)
        sup.close()
        return seen

    seen = asyncio.run(main())
    # busybox init powers off with reboot(2), which in a pid namespace ends the init by SIGINT
    assert seen == [(inst.name, 128 + signal.SIGINT)]
    assert sp.call("state", inst)["status"] == "stopped"


def test_live_restore_adopts_a_running_instance_and_reports_a_dead_one(host: Host, sp: Spawner) -> None:  # noqa: F811
    inst = host.new()
    st = sp.call("start", inst)
    os.close(st["pidfd"])
    _started(host, inst, st)
    pid, pid_start = st["pid"], proc_start_time(st["pid"])
    assert pid_start is not None
    sp.close()  # the daemon goes (its spawner with it): the instance keeps running
    assert pid_alive(pid)

    async def main() -> list:
        seen: list = []
        done = asyncio.Event()

        def on_exit(name: str, status: object) -> None:
            seen.append((name, status))
            if len(seen) == 2:
                done.set()

        # the new daemon's spawner, made from a threaded process: a re-exec of the entry point;
        # not the init's parent, it knows no exit status
        await asyncio.get_running_loop().run_in_executor(None, sp.restart)
        assert sp._proc is not None
        sup = Supervisor(on_exit, exit_status=lambda p: sp.call("exit_status", pid=p))
        assert sup.adopt(inst.name, pid, pid_start) is True
        assert sup.adopt("gone", pid, pid_start - 1) is False  # the pid now names another process
        assert sup.watching() == {inst.name: pid}
        assert (await sp.acall("state", inst))["status"] == "running"
        assert await sp.acall("stop", inst, timeout=20) is True
        await asyncio.wait_for(done.wait(), 5)
        sup.close()
        return seen

    seen = asyncio.run(main())
    assert sorted(seen) == sorted([("gone", UNKNOWN), (inst.name, UNKNOWN)])
    assert not pid_alive(pid)
