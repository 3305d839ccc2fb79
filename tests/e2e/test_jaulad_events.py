"""jaulad's event stream, TCP with a token, sd_notify and `jaula` starting jaulad, against a real
jaulad over a private root (the `daemon` fixture of test_jaulad.py):

- `jaula events` prints the lifecycle of a launch, stop and delete, in order;
- an app instance whose init (/bin/true) exits at once is recorded stopped, with an exit event
  carrying its status (the bug: the exit was recorded before the start operation wrote
  "running", which then stuck, with no process);
- `--listen 127.0.0.1:PORT`: the CLI's --remote with the token works, without it is refused;
  jaulad says READY=1 on $NOTIFY_SOCKET once it answers;
- `jaula` with no jaulad on its socket starts one (JAULA_ROOT names the test root), says so,
  and not when --socket was given.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jaula.client import Client
from tests.e2e.test_jaulad import JAULA, JAULAD, Daemon, daemon  # noqa: F401 (the fixture)
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root


def _true_template(root: Path) -> None:
    """apptrue: the busybox tree whose command is /bin/true (as bench/daemon.py builds it)."""
    from jaula.storage import TemplateStore
    from jaula.storage.builders import busybox

    store = TemplateStore(root=root / "templates", cache=root / "cache")
    store.build("apptrue", lambda ctx: busybox.build(ctx).replace(cmd=["/bin/true"]))


class _Reader:
    """Lines (or events) read in a thread, taken with a timeout: a missing event fails the test
    instead of hanging it."""

    def __init__(self, source: Iterator[Any]) -> None:
        self.q: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self.thread.start()

    def _run(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                self.q.put(item)
        except Exception as exc:  # noqa: BLE001 - the stream closed under it at the end
            self.q.put(exc)

    def until(self, done: Any, timeout: float = 30) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no matching event in {timeout} s; got {got}")
            assert not isinstance(item, Exception), f"stream failed: {item!r} after {got}"
            got.append(item)
            if done(item):
                return got


def test_jaula_events_prints_the_lifecycle_in_order(daemon: Daemon) -> None:  # noqa: F811
    daemon.start()
    proc = subprocess.Popen([*JAULA, "--socket", str(daemon.socket), "events", "--format", "json", "-t", "lifecycle"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Listening for lifecycle events" in proc.stderr.readline()  # subscribed
        daemon.jaula("launch", "busybox", "ev1")
        daemon.note("ev1")
        daemon.jaula("stop", "ev1")
        daemon.jaula("delete", "ev1")
        lines = _Reader(iter(proc.stdout.readline, "")).until(lambda line: "instance-deleted" in line)
    finally:
        proc.terminate()
        proc.wait(10)
    events = [e for e in map(json.loads, lines) if e["metadata"]["action"].startswith("instance-")]
    assert [e["metadata"]["action"] for e in events] == [
        "instance-created", "instance-started", "instance-stopped", "instance-deleted"]
    assert all(e["type"] == "lifecycle" and e["metadata"]["context"]["name"] == "ev1" for e in events)
    assert events[1]["metadata"]["context"]["pid"] > 0 and events[0]["metadata"]["source"] == "/1.0/instances/ev1"
    assert daemon.leaks() == []  # no mount, cgroup or process of ev1 left


def test_an_init_that_exits_at_once_is_recorded_stopped_with_its_status(daemon: Daemon) -> None:  # noqa: F811
    daemon.root.mkdir(parents=True, exist_ok=True)
    _true_template(daemon.root)
    daemon.start()
    with Client(str(daemon.socket)) as c, c.open_events("lifecycle,logging") as stream:
        reader = _Reader(stream)
        c.create("apptrue", "t1", mode="app")
        for _ in range(20):  # a race: it went wrong in 1 to 19 starts of 40 on a busy host
            c.start("t1")
            got = reader.until(lambda e: e["metadata"].get("action") == "instance-exited", timeout=20)
            exited = got[-1]["metadata"]["context"]
            assert exited == {"name": "t1", "status": 0}, got
            inst = c.get("t1")
            assert (inst["status"], inst["pid"]) == ("stopped", None), inst
        assert c.events(type_="instance-exited")[-1]["payload"] == {"name": "t1", "status": 0}
        # jaulad's log line about it comes as a logging event
        said = reader.until(lambda e: e["type"] == "logging" and "t1 exited" in e["metadata"]["message"])
        assert said[-1]["metadata"]["context"] == {"logger": "jaula.daemon"} and said[-1]["metadata"]["level"] == "info"
        c.delete("t1")
    assert daemon.leaks() == []  # no mount left by the 20 runs and the delete


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_with(d: Daemon, *args: str, env: dict[str, str] | None = None) -> None:
    d.proc = subprocess.Popen([*JAULAD, "--root", str(d.root), "--socket", str(d.socket), *args],
                              stdin=subprocess.DEVNULL, stdout=d.log, stderr=d.log, env=env)
    deadline = time.monotonic() + 15
    while subprocess.run([*JAULA, "--socket", str(d.socket), "list"], check=False, capture_output=True).returncode:
        if d.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"jaulad did not answer: {d.logs()}")
        time.sleep(0.1)


def test_tcp_with_a_token_and_ready_on_the_notify_socket(daemon: Daemon) -> None:  # noqa: F811
    port = _free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(daemon.top / "notify.sock"))
    notify.settimeout(15)
    try:
        _start_with(daemon, "--listen", f"127.0.0.1:{port}",
                    env={**os.environ, "NOTIFY_SOCKET": str(daemon.top / "notify.sock")})
        assert notify.recv(256) == b"READY=1"
        token_file = daemon.root / "api.token"
        shown = subprocess.run([*JAULAD, "--root", str(daemon.root), "--show-token"], check=True,
                               capture_output=True, text=True).stdout.strip()
        assert shown == token_file.read_text().strip() and (token_file.stat().st_mode & 0o777) == 0o600
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAULA_")}
        ok = subprocess.run([*JAULA, "--remote", url, "--token-file", str(token_file), "list", "--format", "json"],
                            check=False, capture_output=True, text=True, env=env)
        assert ok.returncode == 0 and json.loads(ok.stdout) == [], ok.stderr
        wrong = subprocess.run([*JAULA, "--remote", url, "list"], check=False, capture_output=True, text=True,
                               env={**env, "JAULA_TOKEN": "not-the-token"})
        assert wrong.returncode == 1 and "Missing or wrong token" in wrong.stderr
        none = subprocess.run([*JAULA, "--remote", url, "list"], check=False, capture_output=True, text=True, env=env)
        assert none.returncode == 1 and "--token-file" in none.stderr
        # an open event stream does not hold jaulad's stop: it ends, and jaulad exits cleanly
        ended = threading.Event()
        with Client(str(daemon.socket)) as c, c.open_events() as stream:
            def drain() -> None:
                for _ in stream:
                    pass
                ended.set()
            threading.Thread(target=drain, daemon=True).start()
            daemon.kill(signal.SIGTERM)
            assert ended.wait(10), "the event stream outlived jaulad's stop"
        assert notify.recv(256) == b"STOPPING=1"
        assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.logs()
    finally:
        notify.close()


def test_listen_on_a_non_loopback_address_is_refused_without_the_flag(daemon: Daemon) -> None:  # noqa: F811
    r = subprocess.run([*JAULAD, "--root", str(daemon.root), "--socket", str(daemon.socket),
                        "--listen", "0.0.0.0:8443"], check=False, capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and "not a loopback address" in r.stderr and "--listen-any-address" in r.stderr
    assert not daemon.socket.exists()


def test_jaula_starts_jaulad_on_first_use(daemon: Daemon) -> None:  # noqa: F811
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("JAULA_")},
           "JAULA_ROOT": str(daemon.root), "JAULA_SOCKET": str(daemon.socket)}
    # a socket named on the command line is not a place to start jaulad at
    other = subprocess.run([*JAULA, "--socket", str(daemon.top / "other.sock"), "list"], check=False,
                           capture_output=True, text=True, env=env, timeout=60)
    assert other.returncode == 1 and "Cannot reach jaulad" in other.stderr and not daemon.socket.exists()
    # two at once: one jaulad is started, and both get their answer from it
    both = [subprocess.Popen([*JAULA, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in both]
    started = [line for _, err in outs for line in err.splitlines() if line.startswith("jaula: started jaulad (pid ")]
    pid = int(started[0].split("(pid ")[1].split(")")[0]) if started else 0
    try:
        assert [p.returncode for p in both] == [0, 0] and len(started) == 1, outs
        assert f"log in {daemon.root / 'jaulad.log'}" in started[0] and pid_alive(pid)
        again = subprocess.run([*JAULA, "list"], check=False, capture_output=True, text=True, env=env, timeout=60)
        assert again.returncode == 0 and again.stderr == ""  # it answers now: nothing started
    finally:
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    assert not pid_alive(pid)
