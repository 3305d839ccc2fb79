"""The control center's sessions kept in jaulad's database: only a hash of the id is stored, they
outlive the Database object (a restart of jaulad), logout and a password change end them,
expired rows are purged, and the least recently used go beyond the limit."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx

from jaula.daemon.db import Database
from jaula.web import passwords
from jaula.web.sessions import IDLE_S, MAX_AGE_S, TOUCH_S, Sessions, end_all


def rows(root: Path) -> list[tuple]:
    with sqlite3.connect(root / "jaula.db") as conn:
        return conn.execute("SELECT id_hash, csrf, login, created, used FROM web_sessions ORDER BY created").fetchall()


def test_only_a_hash_of_the_id_is_stored_and_a_reopened_database_keeps_the_session(tmp_path: Path) -> None:
    now = [1000.0]
    db = Database(tmp_path / "jaula.db")
    a = Sessions(db, clock=lambda: now[0]).create("password")
    stored = rows(tmp_path)
    assert stored == [(hashlib.sha256(a.id.encode()).hexdigest(), a.csrf, "password", 1000.0, 1000.0)]
    db.close()
    for f in tmp_path.iterdir():  # nowhere in the database's files (WAL included)
        assert a.id.encode() not in f.read_bytes(), f
    # "jaulad restarted": a new Database and Sessions over the same file
    again = Sessions(Database(tmp_path / "jaula.db"), clock=lambda: now[0])
    got = again.get(a.id)
    assert got is not None and (got.id, got.csrf, got.user) == (a.id, a.csrf, "password")
    assert again.get(a.id[:-1] + ("A" if a.id[-1] != "A" else "B")) is None
    assert again.get("x" * 5000) is None and again.get("") is None


def test_used_is_written_at_most_once_a_minute_and_expiry_holds(tmp_path: Path) -> None:
    now = [1000.0]
    s = Sessions(Database(tmp_path / "jaula.db"), clock=lambda: now[0])
    a = s.create("token")
    now[0] += TOUCH_S / 2
    s.get(a.id)
    assert rows(tmp_path)[0][4] == 1000.0  # not written for a request a moment later
    now[0] += TOUCH_S
    s.get(a.id)
    assert rows(tmp_path)[0][4] == now[0]
    now[0] += IDLE_S + 1
    assert s.get(a.id) is None and rows(tmp_path) == []  # the expired row goes as it is found


def test_expired_rows_are_purged_and_the_least_recently_used_go_beyond_the_limit(tmp_path: Path) -> None:
    now = [1000.0]
    s = Sessions(Database(tmp_path / "jaula.db"), clock=lambda: now[0], keep=3)
    old = [s.create("token") for _ in range(2)]
    now[0] += MAX_AGE_S + 1
    fresh = s.create("password")  # a create sweeps the expired
    assert [r[0] for r in rows(tmp_path)] == [hashlib.sha256(fresh.id.encode()).hexdigest()]
    assert all(s.get(o.id) is None for o in old)
    more = []
    for _ in range(3):
        now[0] += TOUCH_S
        more.append(s.create("token"))
    assert len(s) == 3 and s.get(fresh.id) is None  # the least recently used went
    assert all(s.get(m.id) is not None for m in more)


def test_logout_and_a_password_change_end_sessions(web: SimpleNamespace, browser_like: httpx.Client) -> None:
    passwords.set_password(web.root, "correct horse")
    csrf = browser_like.post("/ui/login", json={"password": "correct horse"}).json()["csrf"]
    assert len(rows(web.root)) == 1
    assert browser_like.post("/ui/logout", headers={"X-Jaula-CSRF": csrf}).status_code == 200
    assert rows(web.root) == [] and browser_like.get("/1.0/instances").status_code == 401
    # a password change (jaulad --set-password, another process) ends every session, token ones too
    browser_like.post("/ui/login", json={"password": "correct horse"})
    with httpx.Client(base_url=web.url, timeout=10) as other:
        from jaula.daemon.auth import load_or_create_token
        other.post("/ui/login", json={"token": load_or_create_token(web.root)})
        assert other.get("/1.0/instances").status_code == 200
        r = subprocess.run([sys.executable, "-m", "jaula.daemon.main", "--root", str(web.root), "--set-password"],
                           input="battery staple\n", text=True, capture_output=True, timeout=60, check=False)
        assert r.returncode == 0 and "2 session(s) ended" in r.stdout, r.stdout + r.stderr
        assert other.get("/1.0/instances").status_code == 401
    assert browser_like.get("/1.0/instances").status_code == 401
    assert end_all(web.root / "nowhere") == 0  # no database: nothing to end, none made
    assert not (web.root / "nowhere").exists()
