"""jaula.client.uds_http.Connections, the Client's kept connections: one connection for calls one
after the other, a new one for a concurrent call, none kept past `Connection: close`, an idle
limit or a fork, and a request on a connection the server had closed sent again on a new one."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.client import uds_http

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}'


class KeepAlive:
    """Serves many requests per connection (one thread each): `requests` holds (connection
    number, request head); `close_after` closes each connection after that many answers;
    `hold` (an Event) holds each answer until set."""

    def __init__(self, path: str) -> None:
        self.path, self.requests, self.reply = path, [], OK
        self.close_after: int | None = None
        self.hold: threading.Event | None = None
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn:
            data, answered = b"", 0
            while True:
                while b"\r\n\r\n" not in data:
                    got = conn.recv(65536)
                    if not got:
                        return
                    data += got
                head, _, data = data.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.requests.append((number, head.decode()))
                if self.hold is not None:
                    self.hold.wait(10)
                conn.sendall(self.reply)
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    return


@pytest.fixture
def server() -> Iterator[KeepAlive]:
    d = tempfile.mkdtemp(prefix="jaula-uds-", dir="/tmp")
    s = KeepAlive(f"{d}/s.sock")
    try:
        yield s
    finally:
        s.sock.close()
        Path(s.path).unlink()
        Path(d).rmdir()


def test_calls_one_after_the_other_share_one_connection(server: KeepAlive) -> None:
    conns = uds_http.Connections(server.path)
    try:
        for _ in range(3):
            assert conns.request("GET", "/1.0", params={"x": 1}) == (200, b"{}")
        assert conns.request("PUT", "/1.0/instances/a/state", json={"action": "start"}) == (200, b"{}")
    finally:
        conns.close()
    assert [n for n, _ in server.requests] == [1, 1, 1, 1] and server.connections == 1
    head = server.requests[-1][1].split("\r\n")
    assert head[0] == "PUT /1.0/instances/a/state HTTP/1.1" and "Connection: close" not in head
    assert "Content-Type: application/json" in head and "Content-Length: 19" in head


def test_a_connection_the_server_closed_is_not_used_and_a_stale_one_is_retried(server: KeepAlive,
                                                                               monkeypatch) -> None:
    server.close_after = 1  # every connection closed after its first answer
    conns = uds_http.Connections(server.path)
    try:
        assert conns.request("GET", "/1.0") == (200, b"{}")
        assert conns.request("GET", "/1.0") == (200, b"{}")   # seen closed (readable): a new one
        monkeypatch.setattr(uds_http, "_readable", lambda s: False)  # closed after the check
        assert conns.request("POST", "/1.0/x", json={}) == (200, b"{}")
    finally:
        conns.close()
    assert [n for n, _ in server.requests] == [1, 2, 3]  # each request reached the server once


def test_nothing_kept_after_connection_close_an_idle_limit_or_a_fork(server: KeepAlive, monkeypatch) -> None:
    conns = uds_http.Connections(server.path)
    try:
        server.reply = OK.replace(b"content-length", b"connection: close\r\ncontent-length")
        conns.request("GET", "/1.0")
        server.reply = OK
        conns.request("GET", "/1.0")                     # a new one: the last said close
        monkeypatch.setattr(uds_http, "IDLE_S", 0.0)
        conns.request("GET", "/1.0")                     # a new one: the kept one is too old
        monkeypatch.undo()
        conns._pid = -1                                  # as in a forked child
        conns.request("GET", "/1.0")
        conns.request("GET", "/1.0")                     # kept from the call before
    finally:
        conns.close()
    assert [n for n, _ in server.requests] == [1, 2, 3, 4, 4]


def test_concurrent_calls_each_have_their_own_connection(server: KeepAlive) -> None:
    server.hold = threading.Event()
    conns = uds_http.Connections(server.path)
    out: list[tuple[int, bytes]] = []
    try:
        t = threading.Thread(target=lambda: out.append(conns.request("GET", "/1.0/slow")))
        t.start()
        for _ in range(500):
            if server.requests:
                break
            threading.Event().wait(0.01)
        threading.Timer(0.2, server.hold.set).start()
        assert conns.request("GET", "/1.0/other") == (200, b"{}")
        t.join(10)
        assert out == [(200, b"{}")]
        assert sorted(n for n, _ in server.requests) == [1, 2]
        conns.request("GET", "/1.0")
        assert server.connections == 2                   # both kept, one used again
    finally:
        conns.close()


def test_a_broken_answer_closes_its_connection(server: KeepAlive) -> None:
    conns = uds_http.Connections(server.path)
    try:
        server.reply = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"
        server.close_after = 1
        with pytest.raises(uds_http.ProtocolError, match="after 2 of 10 bytes"):
            conns.request("GET", "/1.0")
        assert conns._idle == []
    finally:
        conns.close()
