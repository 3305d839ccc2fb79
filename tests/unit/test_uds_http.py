"""jaula.client.uds_http, the standard-library request of the client's JSON calls, against a
server on a real UNIX socket that answers canned bytes: both body framings, the request it
sends, and every way a response can break off."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.client import uds_http


class Canned:
    """Accepts connections, keeps each request, answers `reply` (then closes), or stays silent."""

    def __init__(self, path: str) -> None:
        self.path, self.reply, self.requests = path, b"", []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append((head.decode(), body))
                if self.reply is None:
                    conn.recv(1)  # silent until the client goes
                else:
                    conn.sendall(self.reply)


@pytest.fixture
def canned() -> Iterator[Canned]:
    d = tempfile.mkdtemp(prefix="jaula-uds-", dir="/tmp")
    c = Canned(f"{d}/s.sock")
    try:
        yield c
    finally:
        c.sock.close()
        Path(c.path).unlink()
        Path(d).rmdir()


def test_content_length_and_the_request_sent(canned: Canned) -> None:
    canned.reply = b'HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"a": true}'
    status, body = uds_http.request(canned.path, "POST", "/1.0/profiles/a b", params={"force": True, "x": None},
                                    json={"name": "é"})
    assert (status, body) == (201, b'{"a": true}')
    head, sent = canned.requests[0]
    lines = head.split("\r\n")
    assert lines[0] == "POST /1.0/profiles/a%20b?force=true&x= HTTP/1.1"
    assert "Host: jaulad" in lines and "Connection: close" in lines and "Content-Type: application/json" in lines
    assert sent == b'{"name": "\\u00e9"}'


def test_chunked_and_read_to_the_end(canned: Canned) -> None:
    canned.reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n5\r\n: 1}\n\r\n0\r\n\r\n"
    assert uds_http.request(canned.path, "GET", "/1.0?x=1", params={"y": [1, 2]}) == (200, b'{"a": 1}\n')
    assert canned.requests[0][0].startswith("GET /1.0?x=1&y=1&y=2 HTTP/1.1")
    canned.reply = b"HTTP/1.1 200 OK\r\n\r\n{}"
    assert uds_http.request(canned.path, "GET", "/1.0") == (200, b"{}")
    canned.reply = b"HTTP/1.1 204 No Content\r\n\r\n"
    assert uds_http.request(canned.path, "DELETE", "/1.0") == (204, b"")


@pytest.mark.parametrize("reply, why", [
    (b"", "no HTTP response"),
    (b"SSH-2.0-x\r\n", "no HTTP response"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n", "inside the response's headers"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", "after 2 of 10 bytes"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nab", "inside a chunk"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\n\r\n", "larger than"),
])
def test_a_broken_response_is_a_protocol_error(canned: Canned, reply: bytes, why: str) -> None:
    canned.reply = reply
    with pytest.raises(uds_http.ProtocolError, match=why):
        uds_http.request(canned.path, "GET", "/1.0")


def test_silence_past_the_timeout_and_no_socket(canned: Canned, tmp_path: Path) -> None:
    canned.reply = None  # type: ignore[assignment]
    with pytest.raises(TimeoutError):
        uds_http.request(canned.path, "GET", "/1.0", timeout=0.2)
    with pytest.raises(FileNotFoundError):
        uds_http.request(str(tmp_path / "none.sock"), "GET", "/1.0")
