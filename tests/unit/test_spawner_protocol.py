"""The spawner's protocol with a fake driver (no root, no kernel features): requests and replies,
errors carried with their type and message, the pidfd of a start, exit statuses the spawner
reaps, a spawner that dies, restart by fork and by re-exec, and the supervisor over pidfds."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jaula.daemon import spawner as spawner_mod
from jaula.daemon.spawner import Spawner, SpawnerDied, SpawnerError
from jaula.daemon.supervisor import UNKNOWN, Supervisor
from jaula.errors import BadState, ConfigError, JaulaError, NotFound
from jaula.instances.driver import InstanceState
from jaula.instances.model import Instance


class FakeDriver:
    """Runs in the spawner: a "start" spawns a sleep (the spawner is its parent)."""

    def __init__(self, tag: str = "fake") -> None:
        self.tag = tag
        self.procs: dict[str, subprocess.Popen] = {}

    def create(self, inst: Instance) -> None:
        raise ConfigError(["limits.memory: 'lots' is not a size", "limits.cpu: 'x' is not a number"])

    def delete(self, inst: Instance) -> None:
        raise NotFound(f"no instance {inst.name!r}")

    def start(self, inst: Instance) -> InstanceState:
        p = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
        self.procs[inst.name] = p
        p.returncode = 0  # the spawner reaps it, not Popen
        return InstanceState(status="running", pid=p.pid, init="app", stop_signal=15)

    def stop(self, inst: Instance, timeout: float = 30.0, force: bool = False) -> bool:
        p = self.procs.pop(inst.name)
        os.kill(p.pid, signal.SIGKILL if force else signal.SIGTERM)
        return not force

    def freeze(self, inst: Instance) -> None:
        os._exit(3)  # the spawner dies mid-request

    def unfreeze(self, inst: Instance) -> None:
        raise ValueError("not a jaula error")

    def state(self, inst: Instance) -> InstanceState:
        return InstanceState(status="stopped", init=self.tag)

    def stats(self, inst: Instance) -> dict:
        return {"name": inst.name, "pids": os.getpid()}

    def update(self, inst: Instance, config: dict) -> dict:
        return {"echo": config, "instance": inst.name}

    def spawn_exec(self, inst: Instance, args: list[str], *, fds: list[int], **kw: object) -> int:
        pid = os.fork()  # the waiter: writes its args on "stdout", then exits 7
        if pid == 0:
            os.write(fds[1], " ".join(args).encode())
            os._exit(7)
        return pid


def make_fake(tag: str = "fake") -> FakeDriver:
    return FakeDriver(tag)


def failing_factory() -> None:
    raise BadState("no pool here")


INST = Instance.new("web1", "bb", mode="app", command=["/bin/sleep", "60"])


@pytest.fixture
def sp():
    if threading.active_count() != 1:
        pytest.skip(f"{threading.active_count()} threads in the test process: the spawner needs one")
    s = Spawner.start(make_fake, {"tag": "t1"})
    yield s
    s.close()
    assert s._wait(block=False) is not None  # reaped


def test_requests_and_replies(sp: Spawner) -> None:
    assert sp.call("ping") == {"pid": sp.pid}
    assert sp.pid != os.getpid()
    assert sp.call("state", INST) == {"status": "stopped", "pid": 0, "init": "t1", "stop_signal": 0}
    assert sp.call("stats", INST)["pids"] == sp.pid  # it ran in the spawner
    assert sp.call("update", INST, config={"a": "1"}) == {"echo": {"a": "1"}, "instance": "web1"}


def test_errors_carry_type_and_message(sp: Spawner) -> None:
    with pytest.raises(ConfigError, match="limits.memory: 'lots' is not a size; limits.cpu") as e:
        sp.call("create", INST)
    assert type(e.value) is ConfigError
    with pytest.raises(NotFound, match="no instance 'web1'"):
        sp.call("delete", INST)
    with pytest.raises(SpawnerError, match="ValueError: not a jaula error") as e2:
        sp.call("unfreeze", INST)
    assert e2.value.remote_type == "ValueError"
    with pytest.raises(JaulaError, match="needs an instance"):
        sp.call("state")
    with pytest.raises(JaulaError, match="unknown spawner request 'reboot'"):
        sp.call("reboot", INST)
    # the wire refuses what the client would not send
    with sp._lock:
        spawner_mod._send(sp.sock, {"id": 99, "op": "reboot", "args": {}})
        reply, fds = spawner_mod._recv(sp.sock)
    assert reply == {"id": 99, "ok": False, "error": {"type": "JaulaError", "message": reply["error"]["message"]}}
    assert "unknown spawner request 'reboot'" in reply["error"]["message"] and fds == []
    assert sp.call("ping") == {"pid": sp.pid}  # still serving


def test_exec_takes_fds_and_answers_before_the_command_ends(sp: Spawner) -> None:
    """The request's fds reach the driver's waiter; the spawner keeps no copy (the pipe ends
    when the waiter does); the reply carries the waiter's pid and a pidfd of it."""
    r, w = os.pipe()
    try:
        got = sp.call("exec", INST, pass_fds=[w, w, w, w], args=["echo", "hi"])
    finally:
        os.close(w)
    try:
        assert got["pid"] > 0 and isinstance(got["pidfd"], int)
        out = b""
        while chunk := os.read(r, 100):  # EOF: no write end is left open, the spawner's included
            out += chunk
        assert out == b"echo hi"
        deadline = time.monotonic() + 10  # its files close a moment before it can be reaped
        while (status := sp.call("exit_status", pid=got["pid"])) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert status == 7
    finally:
        os.close(r)
        os.close(got["pidfd"])


def test_start_passes_a_pidfd_and_the_spawner_reaps(sp: Spawner) -> None:
    st = sp.call("start", INST)
    fd, pid = st["pidfd"], st["pid"]
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        assert f"Pid:\t{pid}" in Path(f"/proc/self/fdinfo/{fd}").read_text()
        assert sp.call("exit_status", pid=pid) is None  # still running
        assert sp.call("stop", INST) is True
        code = None
        deadline = time.monotonic() + 5
        while code is None and time.monotonic() < deadline:
            code = sp.call("exit_status", pid=pid)
        assert code == 128 + signal.SIGTERM
    finally:
        os.close(fd)


def test_a_spawner_that_dies_gives_a_clear_error_then_restarts(sp: Spawner) -> None:
    old = sp.pid
    with pytest.raises(SpawnerDied, match=rf"the spawner \(pid {old}\) died \(exit status 3\).*call restart\(\)"):
        sp.call("freeze", INST)
    with pytest.raises(SpawnerDied, match="died"):
        sp.call("ping")
    assert not sp.alive()
    sp.restart()  # no thread: by fork
    assert sp.alive() and sp.pid != old
    assert sp.call("ping") == {"pid": sp.pid}
    assert sp.call("state", INST)["init"] == "t1"


def test_restart_from_a_threaded_process_reexecs_the_entry_point(sp: Spawner) -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        with pytest.raises(BadState, match="before any thread"):
            Spawner.start(make_fake)
        sp.restart()
        assert sp._proc is not None  # a new interpreter, not a fork
        assert Path(f"/proc/{sp.pid}/cmdline").read_text().split("\0")[1:3] == ["-m", "jaula.daemon.spawner"]
        assert sp.call("ping") == {"pid": sp.pid}
        assert sp.call("state", INST)["init"] == "t1"
        # and from asyncio, through the executor
        assert asyncio.run(sp.acall("ping")) == {"pid": sp.pid}
    finally:
        stop.set()
        t.join()


def test_a_factory_that_fails_fails_start() -> None:
    if threading.active_count() != 1:
        pytest.skip("threads in the test process")
    with pytest.raises(BadState, match="no pool here"):
        Spawner.start(failing_factory)


def test_entry_point_refuses_a_bad_fd() -> None:
    r = subprocess.run([sys.executable, "-m", "jaula.daemon.spawner", "--fd", "0", "--factory", "x:y"],
                       check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert r.returncode == 2 and "jaula spawner: fd 0" in r.stderr


def test_entry_point_reports_a_bad_factory_on_its_socket() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours:
        p = subprocess.Popen([sys.executable, "-m", "jaula.daemon.spawner", "--fd", str(theirs.fileno()),
                              "--factory", "jaula.nosuchmodule:make"], pass_fds=(theirs.fileno(),),
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in sys.path if x)))
        theirs.close()
        msg, _ = spawner_mod._recv(ours)
        assert p.wait(30) == 1
    assert msg["ok"] is False and msg["error"]["type"] == "ModuleNotFoundError"


def test_supervisor_reports_the_exit_status_the_spawner_reaped(sp: Spawner) -> None:
    async def main() -> list:
        seen: list = []
        done = asyncio.Event()

        async def on_exit(name: str, status: object) -> None:
            seen.append((name, status))
            done.set()

        sup = Supervisor(on_exit, exit_status=lambda pid: sp.call("exit_status", pid=pid))
        st = await sp.acall("start", INST)
        sup.watch(INST.name, st["pidfd"], st["pid"])
        assert sup.watching() == {"web1": st["pid"]}
        await sp.acall("stop", INST, force=True)
        await asyncio.wait_for(done.wait(), 5)
        assert sup.watching() == {}
        sup.close()
        return seen

    assert asyncio.run(main()) == [("web1", 128 + signal.SIGKILL)]


def test_supervisor_adopt_running_and_gone() -> None:
    child = subprocess.Popen(["sleep", "60"])
    from jaula.oci.state import proc_start_time

    pid_start = proc_start_time(child.pid)

    async def main() -> list:
        seen: list = []
        done = asyncio.Event()

        def on_exit(name: str, status: object) -> None:
            seen.append((name, status))
            if len(seen) == 3:
                done.set()

        sup = Supervisor(on_exit)  # no spawner: nothing knows a status
        assert sup.adopt("alive", child.pid, pid_start) is True
        assert sup.adopt("reused", child.pid, pid_start + 1) is False  # same pid, another process
        assert sup.adopt("gone", 0x3FFFFF, 1) is False
        assert sup.watching() == {"alive": child.pid}
        child.kill()
        await asyncio.wait_for(done.wait(), 5)
        sup.close()
        return seen

    try:
        seen = asyncio.run(main())
    finally:
        child.kill()
        child.wait()
    assert sorted(seen) == [("alive", UNKNOWN), ("gone", UNKNOWN), ("reused", UNKNOWN)]


def test_a_reply_left_unread_by_an_interrupted_call_is_skipped(sp: Spawner) -> None:
    with sp._lock:  # as a call cut by KeyboardInterrupt between its request and its reply
        spawner_mod._send(sp.sock, {"id": next(sp._ids), "op": "stats", "instance": INST.to_json(), "args": {}})
    assert sp.call("ping") == {"pid": sp.pid}
    assert sp.call("state", INST)["init"] == "t1"
