"""The API over TCP with a token (daemon/auth.py, server.py), served for real on 127.0.0.1 and a
UNIX socket by one server: a missing or wrong token gets 401 with a clear message, the right one
works (the client's --remote), the UNIX socket needs none; the token file is made 0600 once."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from jaula.daemon.auth import load_or_create_token, parse_listen, token_matches
from jaula.errors import ConfigError, JaulaError


@pytest.fixture
def served(tmp_path: Path) -> Iterator[SimpleNamespace]:
    from jaula.daemon.api import create_app
    from jaula.daemon.db import Database
    from jaula.daemon.server import ServerThread, bind_tcp
    from tests.unit.fake_backend import FakeBackend

    sock_dir = tempfile.mkdtemp(prefix="jaula-auth-", dir="/tmp")
    db = Database(tmp_path / "jaula.db")
    token = load_or_create_token(tmp_path)
    tcp = bind_tcp("127.0.0.1", 0)
    url = f"http://127.0.0.1:{tcp.getsockname()[1]}"
    server = ServerThread(create_app(db, FakeBackend(), workers=2), f"{sock_dir}/api.sock", tcp, token).start()
    try:
        yield SimpleNamespace(url=url, token=token, socket=f"{sock_dir}/api.sock", root=tmp_path)
    finally:
        server.stop()
        db.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_missing_or_wrong_token_gets_401_saying_what_to_send(served) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {served.token}"},
                    {"Authorization": f"Bearer {served.token}x"}):
        r = httpx.get(served.url + "/1.0/instances", headers=headers)
        assert r.status_code == 401, headers
        body = r.json()
        assert body["type"] == "error" and body["error_code"] == 401
        assert "Authorization: Bearer <token>" in body["error"] and "jaulad --show-token" in body["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_the_right_token_works_and_the_unix_socket_needs_none(served) -> None:
    from jaula.client import Client

    r = httpx.get(served.url + "/1.0/instances", headers={"Authorization": f"Bearer {served.token}"})
    assert r.status_code == 200 and r.json()["metadata"] == []
    with Client(remote=served.url, token=served.token) as remote:
        with remote.open_events("lifecycle") as events:  # the event stream over TCP too
            remote.create("bb", "web1")
            assert next(events)["metadata"]["action"] == "instance-created"
        assert [i["name"] for i in remote.list()] == ["web1"]
    with Client(remote=served.url, token="wrong") as bad, pytest.raises(JaulaError, match="Missing or wrong token"):
        with bad.open_events():
            pass
    with Client(served.socket) as local:  # no token: the socket's own permissions
        assert local.get("web1")["status"] == "stopped"
    with Client(remote=served.url, token="wrong") as bad, pytest.raises(JaulaError, match="Missing or wrong token"):
        bad.list()


def test_the_token_file_is_made_once_root_only(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    st = (tmp_path / "api.token").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert len(token) >= 40 and load_or_create_token(tmp_path) == token
    (tmp_path / "api.token").chmod(0o644)
    with pytest.raises(JaulaError, match="readable by others"):
        load_or_create_token(tmp_path)


def test_the_compare_needs_the_bearer_scheme_and_the_exact_token() -> None:
    assert token_matches("Bearer abc", "abc") and token_matches("bearer  abc ", "abc")
    assert not token_matches("Bearer ab", "abc") and not token_matches(None, "abc")
    assert not token_matches("abc", "abc")


def test_listen_addresses_are_loopback_unless_asked() -> None:
    assert parse_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    with pytest.raises(ConfigError) as err:
        parse_listen("0.0.0.0:99999")
    assert any("not a loopback address" in p and "--listen-any-address" in p for p in err.value.problems)
    assert any("1 to 65535" in p for p in err.value.problems)
    assert parse_listen("0.0.0.0:8443", allow_remote=True) == ("0.0.0.0", 8443)
    with pytest.raises(ConfigError, match="ADDRESS:PORT"):
        parse_listen("8443")
    with pytest.raises(ConfigError, match="not an IP address"):
        parse_listen("localhost:8443")
