"""One HTTP/1.1 request over jaulad's UNIX socket with the standard library only: the path of
every plain JSON call of `jaula.client.Client` (what `jaula list`, `start`, `config set`... send).

Why: httpx, httpcore and h11 cost about a third of a `jaula list` in imports alone (bench/
cli_startup.py), for a request on a local socket that needs none of their features. Streams,
uploads, downloads and remotes (TCP with a token) still go through httpx, imported when first
used. `request` is one request on its own connection (`Connection: close`); a Client's calls go
through its `Connections`, which keeps the connection open for the next call (HTTP/1.1
keep-alive): jaulad then neither accepts nor sets up a connection per call (0.1-0.2 ms of each).

The response is read whole: its Content-Length, or chunked (uvicorn's two ways), or to EOF.
"""

from __future__ import annotations

import json as _json
import os
import select
import socket
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

MAX_BODY = 256 << 20   # a JSON answer larger than this is refused, not buffered
#: a kept connection idle longer than this is not used again: uvicorn closes one idle for 5 s
#: (timeout_keep_alive), and one it is closing must never get a request
IDLE_S = 2.0
_PATH_SAFE = "/!$&'()*+,;=:@-._~%"  # httpx's: what a path keeps as it is


class ProtocolError(OSError):
    """jaulad closed the connection or answered something that is not HTTP/1.1."""


def _text(v: Any) -> str:
    if v is True or v is False:
        return "true" if v else "false"
    return "" if v is None else str(v)


def target(path: str, params: dict[str, Any] | None) -> str:
    """The request target: the path percent-encoded as httpx does, then the query."""
    path, _, query = path.partition("?")
    out = quote(path, safe=_PATH_SAFE)
    pairs = [(k, _text(x)) for k, v in (params or {}).items() for x in (v if isinstance(v, (list, tuple)) else [v])]
    extra = urlencode(pairs)
    query = "&".join(q for q in (query, extra) if q)
    return f"{out}?{query}" if query else out


def _request_bytes(method: str, path: str, params: dict[str, Any] | None, json: Any, keep: bool) -> bytes:
    body = b"" if json is None else _json.dumps(json).encode()
    head = [f"{method} {target(path, params)} HTTP/1.1", "Host: jaulad", "Accept: application/json",
            f"Content-Length: {len(body)}"]
    if not keep:
        head.insert(2, "Connection: close")
    if json is not None:
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _connect(socket_path: str, timeout: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(socket_path)
    except BaseException:
        s.close()
        raise
    return s


def request(socket_path: str, method: str, path: str, *, params: dict[str, Any] | None = None,
            json: Any = None, timeout: float | None = 30.0) -> tuple[int, bytes]:
    """(status, body) of one request on a connection of its own. OSError (FileNotFoundError,
    ConnectionRefusedError, ProtocolError...) when jaulad cannot be reached or breaks off;
    TimeoutError past `timeout` seconds of silence (None: no limit)."""
    data = _request_bytes(method, path, params, json, keep=False)
    with _connect(socket_path, timeout) as s:
        s.sendall(data)
        with s.makefile("rb") as f:
            return _response(f)[:2]


class _Stale(Exception):
    """A kept connection jaulad had closed before it read the request: send it on a new one."""


class Connections:
    """Kept connections to jaulad's socket: each request takes an idle one (or connects), and
    gives it back once its response was read whole, so concurrent requests (threads) each have
    their own. A kept connection is used again only while fresh (IDLE_S) and with nothing to
    read on it (jaulad closing it shows as readable), and one found closed before any byte of
    the answer came is left for a new connection that gets the request again: jaulad had not
    read it (uvicorn closes only idle connections, whose unread bytes it never reads)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._idle: list[tuple[socket.socket, Any, float]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None, timeout: float | None = 30.0) -> tuple[int, bytes]:
        """As `request`, on a kept connection."""
        data = _request_bytes(method, path, params, json, keep=True)
        kept = self._take()
        if kept is not None:
            try:
                return self._exchange(kept[0], kept[1], data, timeout, reused=True)
            except _Stale:
                pass
        s = _connect(self.socket_path, timeout)
        return self._exchange(s, s.makefile("rb"), data, timeout, reused=False)

    def _exchange(self, s: socket.socket, f: Any, data: bytes, timeout: float | None,
                  reused: bool) -> tuple[int, bytes]:
        keep = False
        try:
            s.settimeout(timeout)
            try:
                s.sendall(data)
                line = f.readline(65537)
            except (BrokenPipeError, ConnectionResetError):
                if reused:
                    raise _Stale() from None
                raise
            if not line and reused:
                raise _Stale()
            status, body, keep = _response(f, line)
            return status, body
        finally:
            if keep:
                with self._lock:
                    self._idle.append((s, f, time.monotonic()))
            else:
                f.close()
                s.close()

    def _take(self) -> tuple[socket.socket, Any] | None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connections are not its own
                self._idle, self._pid = [], os.getpid()
                return None
            while self._idle:
                s, f, since = self._idle.pop()
                if time.monotonic() - since < IDLE_S and not _readable(s):
                    return s, f
                f.close()
                s.close()
        return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for s, f, _ in idle:
            f.close()
            s.close()


def _readable(s: socket.socket) -> bool:
    """Something to read (or the end) on an idle connection: jaulad closed it, or broke the protocol."""
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(p.poll(0))


def _response(f: Any, line: bytes | None = None) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection may carry another request) of the response on `f`
    (`line`: its status line, already read)."""
    if line is None:
        line = f.readline(65537)
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"jaulad sent no HTTP response ({line[:80]!r})")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        h = f.readline(65537)
        if not h:
            raise ProtocolError("jaulad closed the connection inside the response's headers")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    keep = parts[0] == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304) or 100 <= status < 200:
        return status, b"", keep and not 100 <= status < 200
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, _chunked(f), keep
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n > MAX_BODY:
            raise ProtocolError(f"jaulad's answer of {n} bytes is larger than {MAX_BODY}")
        data = f.read(n)
        if len(data) != n:
            raise ProtocolError(f"jaulad closed the connection after {len(data)} of {n} bytes")
        return status, data, keep
    data = f.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ProtocolError(f"jaulad's answer is larger than {MAX_BODY} bytes")
    return status, data, False  # its end was the connection's


def _chunked(f: Any) -> bytes:
    out = bytearray()
    while True:
        size_line = f.readline(1025)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while f.readline(65537) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return bytes(out)
        if len(out) + size > MAX_BODY:
            raise ProtocolError(f"jaulad's answer is larger than {MAX_BODY} bytes")
        chunk = f.read(size)
        if len(chunk) != size:
            raise ProtocolError("jaulad closed the connection inside a chunk")
        out += chunk
        f.readline(3)  # the CRLF after the chunk
