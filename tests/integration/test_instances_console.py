"""The container driver's console (as root, real busybox system instances): with a console keeper
the init's stdio is a pty of the instance's own (its master held by the keeper, which drains the
boot's output into the log); with a keeper set but not answering, the start still succeeds with
the read-only console (stdin /dev/null, stdout and stderr the log itself); an app instance never
gets a pty."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.daemon.console_keeper_service import KeeperService
from jaula.instances import console_pty
from tests.integration.test_instances_container import Host, host, store  # noqa: F401 - fixtures
from tests.support.containers import wait_until

pytestmark = pytest.mark.root


def _fds(pid: int) -> dict[int, str]:
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


@pytest.fixture
def keeper(host: Host) -> Iterator[KeeperService]:  # noqa: F811
    root = host.top / "keeper"
    root.mkdir()
    svc = KeeperService(root)
    assert svc.start(watch=False)
    try:
        yield svc
    finally:
        host.driver.console_keeper = None
        svc.close()


def test_a_system_instance_gets_a_pty_console_held_by_the_keeper(host: Host, keeper: KeeperService) -> None:  # noqa: F811
    host.driver.console_keeper = keeper.path
    inst = host.new()
    app = host.new(mode="app", command=["/bin/sleep", "600"])
    pid = host.start(inst).pid
    app_pid = host.start(app).pid
    try:
        fds = _fds(pid)
        assert all(t.startswith("/dev/pts/") or t == "/dev/console" for t in fds.values()), fds
        assert keeper.held() == [inst.name]   # the app's output goes to its log: nothing held
        assert "/dev/null" in _fds(app_pid)[0]
        log = Path(host.driver.console_log(inst.name))
        wait_until("the console's shell prompt in the log", lambda: b"# " in log.read_bytes(), timeout=20)
        code, out = host.sh(inst, "readlink /proc/1/fd/0; [ -t 0 ] </dev/console && echo tty")
        assert code == 0 and "tty" in out, out
    finally:
        host.driver.stop(inst, force=True)
        host.driver.stop(app, force=True)
    wait_until("the keeper to drop the console", lambda: keeper.held() == [], timeout=10)


def test_a_keeper_that_does_not_answer_leaves_the_read_only_console(host: Host) -> None:  # noqa: F811
    host.driver.console_keeper = str(host.top / "nowhere" / console_pty.SOCKET_NAME)
    inst = host.new()
    try:
        pid = host.start(inst).pid
        fds = _fds(pid)
        assert "/dev/null" in fds[0] and fds[1].endswith("console.log") and fds[2].endswith("console.log"), fds
    finally:
        host.driver.console_keeper = None
        host.driver.stop(inst, force=True)
