"""The control center's login, sessions and CSRF checks, over a real loopback TCP listener served as
jaulad serves it (fake backend): what is refused says why, and a refused request changes nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import websockets

from jaula.errors import ConfigError, JaulaError
from jaula.web import passwords
from jaula.web.sessions import IDLE_S, MAX_AGE_S, Sessions

REPO = Path(__file__).resolve().parents[2]


def login(c: httpx.Client, **body: str) -> httpx.Response:
    return c.post("/ui/login", json=body)


def token(web: SimpleNamespace) -> str:
    from jaula.daemon.auth import load_or_create_token
    return load_or_create_token(web.root)


# -- passwords and sessions ---------------------------------------------------------------------
def test_password_is_stored_hashed_0600_and_checked(tmp_path: Path) -> None:
    path = passwords.set_password(tmp_path, "correct horse")
    text = path.read_text()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "correct horse" not in text and text.startswith("scrypt$")
    stored = passwords.stored_hash(tmp_path)
    assert passwords.verify("correct horse", stored) and not passwords.verify("correct horsf", stored)
    assert passwords.hash_password("correct horse") != passwords.hash_password("correct horse")  # salted
    assert [p.name for p in tmp_path.iterdir()] == ["web.password"]  # no temporary file left


def test_a_weak_password_is_refused_with_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        passwords.set_password(tmp_path, "a\nb")
    assert len(e.value.problems) == 2 and "at least 8" in e.value.problems[0] and "control" in e.value.problems[1]
    assert not passwords.password_path(tmp_path).exists()


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    passwords.set_password(tmp_path, "correct horse").chmod(0o644)
    with pytest.raises(JaulaError, match="readable by others"):
        passwords.stored_hash(tmp_path)


def test_sessions_expire_when_idle_and_at_their_maximum_age(tmp_path: Path) -> None:
    from jaula.daemon.db import Database

    now = [0.0]
    s = Sessions(Database(tmp_path / "jaula.db"), clock=lambda: now[0])
    a = s.create("password")
    now[0] = IDLE_S - 1
    assert s.get(a.id).csrf == a.csrf  # used: its idle time starts again
    now[0] = 2 * IDLE_S - 2
    assert s.get(a.id).csrf == a.csrf
    now[0] = 3 * IDLE_S
    assert s.get(a.id) is None and len(s) == 0
    b = s.create("token")
    for _ in range(int(MAX_AGE_S // IDLE_S) + 1):
        now[0] += IDLE_S - 1
        s.get(b.id)
    assert s.get(b.id) is None


# -- over HTTP ----------------------------------------------------------------------------------
def test_the_page_is_served_with_a_strict_content_policy(browser_like: httpx.Client) -> None:
    r = browser_like.get("/ui/")
    assert r.status_code == 200 and "<main" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    assert browser_like.get("/ui/static/app.js").headers["content-type"].startswith("text/javascript")
    for bad in ("/ui/static/..%2F__init__.py", "/ui/static/gate.py", "/ui/vendor/package.json",
                "/ui/vendor/..%2F..%2Fpackage.json"):
        assert browser_like.get(bad).status_code == 404, bad


def test_the_api_needs_a_session_on_the_web_listener(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    r = browser_like.get("/1.0/instances")
    assert r.status_code == 401 and "Not logged in" in r.json()["error"]
    # the bearer token alone does not open the web listener (it is for --listen)
    r = browser_like.get("/1.0/instances", headers={"Authorization": f"Bearer {token(web)}"})
    assert r.status_code == 401
    # the UNIX socket keeps its own rules: no session needed there
    with httpx.Client(transport=httpx.HTTPTransport(uds=web.socket), base_url="http://jaulad") as unix:
        assert unix.get("/1.0/instances").status_code == 200


def test_a_wrong_password_or_token_is_refused(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    r = login(browser_like, password="whatever-it-is")
    assert r.status_code == 401 and "No password is set" in r.json()["error"]
    passwords.set_password(web.root, "correct horse")
    r = login(browser_like, password="wrong horse!")
    assert r.status_code == 401 and "Wrong password or token" in r.json()["error"]
    assert login(browser_like, token="x" * 43).status_code == 401
    assert "set-cookie" not in r.headers and len(web.config.sessions) == 0
    r = browser_like.post("/ui/login", json={"password": "a", "token": "b"})
    assert r.status_code == 400 and "one of" in r.json()["error"]
    r = browser_like.post("/ui/login", data={"password": "correct horse"})  # a cross-site form's encoding
    assert r.status_code == 415


def test_login_by_password_gives_an_httponly_strict_cookie(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    passwords.set_password(web.root, "correct horse")
    r = login(browser_like, password="correct horse")
    assert r.status_code == 200 and r.json()["user"] == "password"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert token(web) not in r.text  # the bearer token never reaches the page
    assert browser_like.get("/1.0/instances").json()["metadata"] == []
    assert browser_like.get("/ui/session").json()["csrf"] == r.json()["csrf"]


def test_state_changes_need_the_csrf_token(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    csrf = login(browser_like, token=token(web)).json()["csrf"]
    body = {"name": "web1", "template": "bb"}
    r = browser_like.post("/1.0/instances", json=body)
    assert r.status_code == 403 and "X-Jaula-CSRF" in r.json()["error"]
    r = browser_like.post("/1.0/instances", json=body, headers={"X-Jaula-CSRF": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")})
    assert r.status_code == 403
    assert web.db.list_instances() == []  # nothing happened
    r = browser_like.post("/1.0/instances", json=body, headers={"X-Jaula-CSRF": csrf})
    assert r.status_code == 202
    op = r.json()["metadata"]["id"]
    assert browser_like.get(f"/1.0/operations/{op}/wait?timeout=10").json()["metadata"]["status"] == "success"
    r = browser_like.delete("/1.0/instances/web1")
    assert r.status_code == 403 and [i.name for i in web.db.list_instances()] == ["web1"]
    assert browser_like.post("/ui/logout").status_code == 403  # logout too


def test_an_expired_or_ended_session_is_refused(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    csrf = login(browser_like, token=token(web)).json()["csrf"]
    web.clock.now += IDLE_S - 10
    assert browser_like.get("/1.0/instances").status_code == 200
    web.clock.now += IDLE_S + 1
    r = browser_like.get("/1.0/instances")
    assert r.status_code == 401 and "expired" in r.json()["error"]
    assert browser_like.get("/ui/session").status_code == 401
    csrf = login(browser_like, token=token(web)).json()["csrf"]
    assert browser_like.post("/ui/logout", headers={"X-Jaula-CSRF": csrf}).status_code == 200
    assert browser_like.get("/1.0/instances").status_code == 401


def test_a_websocket_from_another_origin_is_refused(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    login(browser_like, token=token(web))
    cookie = f"{web.config.cookie}={browser_like.cookies[web.config.cookie]}"
    ws_url = web.url.replace("http", "ws") + "/1.0/instances/nope/console"

    async def open_with(origin: str | None) -> int | None:
        try:
            async with websockets.connect(ws_url, origin=origin, additional_headers={"Cookie": cookie}) as ws:
                await ws.recv()
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except websockets.InvalidStatus as exc:
            return exc.response.status_code
        return None

    assert asyncio.run(open_with("http://evil.example")) == 4403
    assert asyncio.run(open_with(None)) == 4403  # no Origin at all: not the page either
    # from the page's origin it passes the gate: the API itself answers (no such instance: 403 before accept)
    assert asyncio.run(open_with(web.url)) == 403
    cookie = ""
    assert asyncio.run(open_with(web.url)) == 4401  # no session


def test_failed_logins_are_throttled(web: SimpleNamespace, browser_like: httpx.Client,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from jaula.web import ui

    monkeypatch.setattr(ui, "FAILED_LOGIN_DELAY_S", 0)
    passwords.set_password(web.root, "correct horse")
    for _ in range(web.config.throttle.limit):
        assert login(browser_like, password="wrong horse!").status_code == 401
    r = login(browser_like, password="correct horse")  # even the right one waits: not checked at all
    assert r.status_code == 429 and "Too many failed logins: try again in 60 s" in r.json()["error"]
    web.clock.now += web.config.throttle.window_s
    assert login(browser_like, password="correct horse").status_code == 200


def test_network_counters_need_a_session(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    assert browser_like.get("/ui/netstats/web1").status_code == 401
    login(browser_like, token=token(web))
    r = browser_like.get("/ui/netstats/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    with httpx.Client(transport=httpx.HTTPTransport(uds=web.socket), base_url="http://jaulad") as unix:
        op = unix.post("/1.0/instances", json={"name": "web1", "template": "bb",
                                               "config": {"nic.eth0.type": "none"}}).json()["metadata"]["id"]
        assert unix.get(f"/1.0/operations/{op}/wait?timeout=10").json()["metadata"]["status"] == "success"
    nics = browser_like.get("/ui/netstats/web1").json()["nics"]  # a NIC with no link: no counters
    assert nics == [{"name": "eth0", "rx_bytes": None, "tx_bytes": None, "rx_packets": None, "tx_packets": None}]


# -- jaulad's options ---------------------------------------------------------------------------
def _jaulad(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaula.daemon.main", *args], input=stdin, text=True,
                          capture_output=True, timeout=30, check=False)


def test_jaulad_refuses_a_non_loopback_web_address(tmp_path: Path) -> None:
    r = _jaulad("--root", str(tmp_path), "--web", "0.0.0.0:8444")
    assert r.returncode != 0 and "--web-any-address" in r.stderr and "not a loopback address" in r.stderr
    r = _jaulad("--root", str(tmp_path), "--web", "127.0.0.1:8444", "--listen", "127.0.0.1:8444")
    assert r.returncode != 0 and "same port" in r.stderr


def test_a_web_port_alone_is_on_loopback() -> None:
    from jaula.web.cli import web_address

    assert web_address("8444", False, None) == ("127.0.0.1", 8444)
    assert web_address("[::1]:8444", False, None) == ("::1", 8444)


def test_jaulad_set_password_reads_stdin(tmp_path: Path) -> None:
    r = _jaulad("--root", str(tmp_path), "--set-password", stdin="short\n")
    assert r.returncode != 0 and "at least 8" in r.stderr and not (tmp_path / "web.password").exists()
    r = _jaulad("--root", str(tmp_path), "--set-password", stdin="correct horse\n")
    assert r.returncode == 0, r.stderr
    assert passwords.verify("correct horse", passwords.stored_hash(tmp_path))
