"""The API over TCP (`jaulad --listen 127.0.0.1:PORT`): every request must carry
`Authorization: Bearer <token>`.

The token is made at first use (32 random bytes, URL-safe text) in $ROOT/api.token, mode 0600
owned by root: whoever can read it can drive jaulad, as whoever can open the UNIX socket (root or
group `jaula`) can. It is compared in constant time. The UNIX socket keeps its own permission
model and needs no token: `TokenGate` wraps the app only for the TCP listener.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any

from jaula.errors import ConfigError, ExitCode, JaulaError

TOKEN_FILE = "api.token"
UNAUTHORIZED = ("Missing or wrong token: send 'Authorization: Bearer <token>'; the token is in "
                "$ROOT/api.token on jaulad's host (jaulad --show-token prints it)")


def token_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / TOKEN_FILE


def load_or_create_token(root: str | os.PathLike[str]) -> str:
    """The token in $ROOT/api.token, made (0600, from its creation) when missing."""
    path = token_path(root)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read(path)
    try:
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    return _read(path)


def _read(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 or st.st_uid != os.geteuid():
            raise JaulaError(f"{str(path)!r} is readable by others or not ours (mode {st.st_mode & 0o777:o}, "
                             f"uid {st.st_uid}): remove it, and jaulad makes a new token")
        token = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if len(token) < 32:
        raise JaulaError(f"{str(path)!r} holds no token (too short): remove it, and jaulad makes a new one")
    return token


def parse_listen(text: str, allow_remote: bool = False) -> tuple[str, int]:
    """"127.0.0.1:8443" or "[::1]:8443" -> (host, port). A non-loopback address is refused
    unless `allow_remote` (then the caller warns)."""
    host, sep, port_text = text.rpartition(":")
    problems: list[str] = []
    if not sep or not host:
        raise ConfigError(f"--listen {text!r}: write ADDRESS:PORT, e.g. 127.0.0.1:8443 or [::1]:8443")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        problems.append(f"--listen {text!r}: {host!r} is not an IP address (give 127.0.0.1 or ::1)")
        addr = None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        problems.append(f"--listen {text!r}: the port must be a number from 1 to 65535")
    if addr is not None and not addr.is_loopback and not allow_remote:
        problems.append(f"--listen {text!r}: {host} is not a loopback address; the API would be reachable "
                        "from other hosts, over plain HTTP: add --listen-any-address to mean it")
    if problems:
        raise ConfigError(problems)
    return str(addr), int(port_text)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def token_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class TokenGate:
    """ASGI middleware: a request that did not come over the UNIX socket and lacks the right
    bearer token gets 401 and the error envelope."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not _over_unix(scope):
            headers = dict(scope.get("headers") or [])
            header = headers.get(b"authorization", b"").decode("latin-1")
            if not token_matches(header, self.token):
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


def _over_unix(scope: dict[str, Any]) -> bool:
    """Whether the request came over a UNIX socket (uvicorn's `server` is (path, None) there,
    (host, port) on TCP): anything else, unknown included, needs the token."""
    server = scope.get("server")
    return isinstance(server, (tuple, list)) and len(server) == 2 and server[1] is None


async def _refuse(scope: dict[str, Any], send: Any) -> None:
    body = json.dumps({"type": "error", "error_code": 401, "error": UNAUTHORIZED, "problems": [],
                       "exit_code": ExitCode.FAILURE}).encode()
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4401})
        return
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer realm="jaulad"')]})
    await send({"type": "http.response.body", "body": body})
