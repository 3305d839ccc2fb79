"""One HTTP/1.1 request over jaulad's UNIX socket with the standard library only: the path of
every plain JSON call of `jaula.client.Client` (what `jaula list`, `start`, `config set`... send).

Why: httpx, httpcore and h11 cost about a third of a `jaula list` in imports alone (bench/
cli_startup.py), for a request on a local socket that needs none of their features. Streams,
uploads, downloads and remotes (TCP with a token) still go through httpx, imported when first
used. One connection per request (`Connection: close`): a UNIX connect costs microseconds.

The response is read whole: its Content-Length, or chunked (uvicorn's two ways), or to EOF.
"""

from __future__ import annotations

import json as _json
import socket
from typing import Any
from urllib.parse import quote, urlencode

MAX_BODY = 256 << 20   # a JSON answer larger than this is refused, not buffered
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


def request(socket_path: str, method: str, path: str, *, params: dict[str, Any] | None = None,
            json: Any = None, timeout: float | None = 30.0) -> tuple[int, bytes]:
    """(status, body) of one request. OSError (FileNotFoundError, ConnectionRefusedError,
    ProtocolError...) when jaulad cannot be reached or breaks off; TimeoutError past `timeout`
    seconds of silence (None: no limit)."""
    body = b"" if json is None else _json.dumps(json).encode()
    head = [f"{method} {target(path, params)} HTTP/1.1", "Host: jaulad", "Connection: close",
            "Accept: application/json", f"Content-Length: {len(body)}"]
    if json is not None:
        head.append("Content-Type: application/json")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        with s.makefile("rb") as f:
            return _response(f)


def _response(f: Any) -> tuple[int, bytes]:
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
    if status in (204, 304) or 100 <= status < 200:
        return status, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, _chunked(f)
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n > MAX_BODY:
            raise ProtocolError(f"jaulad's answer of {n} bytes is larger than {MAX_BODY}")
        data = f.read(n)
        if len(data) != n:
            raise ProtocolError(f"jaulad closed the connection after {len(data)} of {n} bytes")
        return status, data
    data = f.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ProtocolError(f"jaulad's answer is larger than {MAX_BODY} bytes")
    return status, data


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
