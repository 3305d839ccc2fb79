"""The control center's sessions over restarts of a real jaulad (`--web`, private root): logged in
before a clean stop, and before a kill -9, still logged in after (the same cookie and CSRF token
work); a session whose idle time ran out (its row aged in the database) is refused and its row
deleted; logout ends it for good."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time

import httpx
import pytest

from tests.e2e.test_jaulad import Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_web(url: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"{url}/ui/", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the control center at {url} did not answer"
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_sessions_outlive_jaulad_restarts_and_expire(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from jaula.daemon.auth import load_or_create_token
    from jaula.web.sessions import IDLE_S

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("JAULA_WEB", f"127.0.0.1:{port}")
    daemon.start()
    wait_web(url)
    with httpx.Client(base_url=url, timeout=10) as browser:
        r = browser.post("/ui/login", json={"token": load_or_create_token(daemon.root)})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf"]
        assert browser.get("/1.0/instances").status_code == 200

        for how in (signal.SIGTERM, signal.SIGKILL):  # a clean stop, then a crash
            daemon.kill(how)
            daemon.start()
            wait_web(url)
            r = browser.get("/1.0/instances")
            assert r.status_code == 200, (how, r.text)
            assert browser.get("/ui/session").json()["csrf"] == csrf
            r = browser.post("/1.0/profiles", json={"name": f"p{int(how)}"}, headers={"X-Jaula-CSRF": csrf})
            assert r.status_code == 201, r.text  # the CSRF token is the session's, as before

        # idle for longer than IDLE_S (its row aged, as the clock would have): refused, row gone
        with sqlite3.connect(daemon.root / "jaula.db") as db:
            db.execute("UPDATE web_sessions SET used = used - ?", (IDLE_S + 60,))
        r = browser.get("/1.0/instances")
        assert r.status_code == 401 and "expired" in r.json()["error"]
        with sqlite3.connect(daemon.root / "jaula.db") as db:
            assert db.execute("SELECT count(*) FROM web_sessions").fetchone()[0] == 0

        # logout: gone, and not back after a restart
        csrf = browser.post("/ui/login", json={"token": load_or_create_token(daemon.root)}).json()["csrf"]
        cookie = f"jaula_session_{port}={browser.cookies[f'jaula_session_{port}']}"
        assert browser.post("/ui/logout", headers={"X-Jaula-CSRF": csrf}).status_code == 200
        daemon.kill(signal.SIGTERM)
        daemon.start()
        wait_web(url)
        r = httpx.get(f"{url}/1.0/instances", headers={"Cookie": cookie}, timeout=10)  # the old cookie, kept
        assert r.status_code == 401
    daemon.kill(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.logs()
