"""jaulad end to end: the daemon as a subprocess over a private root and socket, driven by the
`jaula` CLI. A busybox system instance launched on a fresh root (the template is built on first
use), listed running, stopped and deleted; live restore: after `kill -9` of jaulad a new jaulad
adopts the running instance (same pid), which then stops and goes, and autostarts one created
with boot.autostart. Nothing is left behind: no
mount under the root, no cgroup of the instances, no process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pool_checks import mounts_under
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def _command(name: str, module: str) -> list[str]:
    launcher = REPO / ".venv" / "bin" / name
    if launcher.is_file() and os.access(launcher, os.X_OK):
        return [str(launcher)]
    return [sys.executable, "-m", module]


JAULAD = _command("jaulad", "jaula.daemon.main")
JAULA = _command("jaula", "jaula.cli.main")


class Daemon:
    def __init__(self, top: Path) -> None:
        self.top = top
        self.root = top / "root"
        self.socket = top / "jaula.sock"
        self.proc: subprocess.Popen | None = None
        self.log = open(top / "jaulad.log", "ab")  # noqa: SIM115
        self.pids: set[int] = set()
        self.cgroups: set[str] = set()

    def start(self) -> None:
        self.proc = subprocess.Popen([*JAULAD, "--root", str(self.root), "--socket", str(self.socket)],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run([*JAULA, "--socket", str(self.socket), "list"], check=False, capture_output=True, text=True)
            if r.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jaulad did not answer: {self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return (self.top / "jaulad.log").read_text(errors="replace")

    def jaula(self, *args: str) -> str:
        r = subprocess.run([*JAULA, "--socket", str(self.socket), *args], check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"jaula {' '.join(args)}: {r.returncode}\n{r.stdout}{r.stderr}\n{self.logs()}"
        return r.stdout

    def instances(self) -> dict[str, dict]:
        return {i["name"]: i for i in json.loads(self.jaula("list", "--format", "json"))}

    def note(self, name: str) -> dict:
        """The running instance as listed; its pid and cgroups kept for the leak check."""
        from jaula.oci import state

        inst = self.instances()[name]
        assert inst["status"] == "running", inst
        assert inst["pid"] and pid_alive(inst["pid"]), inst
        self.pids.add(inst["pid"])
        c = state.load(self.root / "instances" / "runtime", name)
        self.cgroups |= set(c.data["cgroupPaths"].values())
        return inst

    def kill(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(20)

    def delete_all(self) -> None:
        """Every instance jaulad still has, deleted with --force (a failed test's leftovers); errors
        are ignored: the teardown goes on with what is left."""
        try:
            r = subprocess.run([*JAULA, "--socket", str(self.socket), "list", "--format", "json"], check=False,
                               capture_output=True, text=True, timeout=30)
            names = [i["name"] for i in json.loads(r.stdout)] if r.returncode == 0 else []
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return
        for name in names:
            try:
                subprocess.run([*JAULA, "--socket", str(self.socket), "delete", "--force", name], check=False,
                               capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def leaks(self) -> list[str]:
        left = [f"mount {m}" for m in mounts_under(str(self.top))]
        left += [f"cgroup {d}" for d in sorted(self.cgroups) if os.path.exists(d)]
        left += [f"process {p}" for p in sorted(self.pids) if pid_alive(p)]
        return left


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    top = Path(tempfile.mkdtemp(prefix="jaulad-e2e-"))
    top.chmod(0o711)  # an instance's root (an unprivileged host uid) must traverse it
    d = Daemon(top)
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.delete_all()  # a failed test's instances, through jaulad: mounts, cgroups, NICs, consoles
            d.proc.kill()
            d.proc.wait(10)
        for pid in d.pids:  # a failed test's instances: kill them, so nothing outlives it
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        from tests.support.lxcfs import end_left_lxcfs
        end_left_lxcfs(d.root)  # the lxcfs a killed jaulad leaves for its instances
        d.log.close()
        from tests.support.network import remove_daemon_network
        remove_daemon_network(d.root)  # its networks' bridges and its nft table (named from its root)
        if not mounts_under(str(top)):
            shutil.rmtree(top, ignore_errors=True)


def test_launch_list_stop_delete_and_live_restore(daemon: Daemon) -> None:
    daemon.start()
    assert "created" in daemon.jaula("launch", "busybox", "e1")  # the template is built on first use
    daemon.note("e1")
    daemon.jaula("stop", "e1")
    assert daemon.instances()["e1"]["status"] == "stopped"
    daemon.jaula("delete", "e1")
    assert "e1" not in daemon.instances()

    # a template that is not there is refused, saying what to do
    r = subprocess.run([*JAULA, "--socket", str(daemon.socket), "launch", "nosuchtemplate", "e9"],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "nosuchtemplate" in r.stdout + r.stderr
    assert "e9" not in daemon.instances()

    # live restore: the instance outlives a kill -9 of jaulad and is adopted by the next one
    daemon.jaula("launch", "busybox", "e2")
    pid = daemon.note("e2")["pid"]
    daemon.jaula("create", "busybox", "e3", "-c", "boot.autostart=true")  # started by the next jaulad
    assert daemon.instances()["e3"]["status"] == "stopped"
    daemon.kill(signal.SIGKILL)
    assert pid_alive(pid)
    daemon.start()
    again = daemon.note("e2")
    assert again["pid"] == pid
    deadline = time.monotonic() + 15
    while daemon.instances()["e3"]["status"] != "running":
        assert time.monotonic() < deadline, f"e3 not autostarted: {daemon.instances()['e3']}\n{daemon.logs()}"
        time.sleep(0.1)
    daemon.note("e3")
    for name in ("e2", "e3"):
        daemon.jaula("stop", name)
        daemon.jaula("delete", name)
    assert daemon.instances() == {}

    daemon.kill(signal.SIGTERM)  # a clean stop
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.logs()
    deadline = time.monotonic() + 5
    while (left := daemon.leaks()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
