"""The control center's listener (`jaulad --web 127.0.0.1:PORT`): an ASGI gate in front of the
API app, for the requests that arrive on that listener only (the UNIX socket and `--listen`
keep their own rules).

- `/ui/...`: the pages, their assets and the login (ui.py), no session needed;
- `/1.0/...`: the API, reached through a session: its cookie (HttpOnly, SameSite=Strict) must name a
  live session, and every state-changing request (not GET, HEAD or OPTIONS) must carry the session's
  CSRF token in the `X-Jaula-CSRF` header (compared in constant time); a websocket must come from
  the page's own origin. The bearer token never reaches the page's JavaScript.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from jaula.errors import ExitCode
from jaula.web.sessions import LoginThrottle, Sessions, csrf_matches

CSRF_HEADER = "x-jaula-csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
NOT_LOGGED_IN = "Not logged in, or the session expired: log in again at /ui/"
NO_CSRF = ("Missing or wrong CSRF token: a state-changing request needs the session's token in the "
           "X-Jaula-CSRF header (GET /ui/session gives it to the logged-in page)")
BAD_ORIGIN = "A websocket from another origin is refused: open it from the control center's own page"


@dataclass
class WebConfig:
    root: Path                      # where api.token and web.password are
    address: tuple[str, int]        # the listener's (host, port), as uvicorn puts it in scope["server"]
    sessions: Sessions              # kept in jaulad's database
    throttle: LoginThrottle = field(default_factory=LoginThrottle)

    @property
    def cookie(self) -> str:        # per port: two jaulads on one host keep apart sessions
        return f"jaula_session_{self.address[1]}"


class WebGate:
    """Requests on the control center's listener go through the session checks; the others go
    to `inner` (the API, wrapped in the token gate when jaulad --listen is on)."""

    def __init__(self, api: Any, inner: Any, config: WebConfig) -> None:
        from jaula.web.ui import ui_app

        self.api, self.inner, self.config = api, inner, config
        self.ui = ui_app(config, getattr(api, "state", None))
        self.state = getattr(api, "state", None)

    def ours(self, scope: dict[str, Any]) -> bool:
        server = scope.get("server")
        return (isinstance(server, (tuple, list)) and len(server) >= 2
                and (server[0], server[1]) == self.config.address)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not self.ours(scope):
            await self.inner(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/" or path == "/ui" or path.startswith("/ui/"):
            await self.ui(scope, receive, send)
            return
        if not path.startswith("/1.0"):
            await refuse(scope, send, 404, f"No such page {path!r}: the control center is at /ui/", receive)
            return
        # a database read (and now and then a write): off the event loop
        session = await run_in_threadpool(self.config.sessions.get, session_id(scope, self.config.cookie))
        if session is None:
            await refuse(scope, send, 401, NOT_LOGGED_IN, receive)
            return
        if scope["type"] == "websocket":
            if not same_origin(scope):
                await refuse(scope, send, 403, BAD_ORIGIN, receive)
                return
        elif scope.get("method", "GET") not in SAFE_METHODS and not csrf_matches(session, header(scope, CSRF_HEADER)):
            await refuse(scope, send, 403, NO_CSRF)
            return
        scope = dict(scope)  # the API sees no cookie nor bearer from the browser
        scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k not in (b"cookie", b"authorization")]
        await self.api(scope, receive, send)


def header(scope: dict[str, Any], name: str) -> str | None:
    want = name.lower().encode()
    for k, v in scope.get("headers") or []:
        if k.lower() == want:
            return v.decode("latin-1")
    return None


def session_id(scope: dict[str, Any], cookie_name: str) -> str | None:
    raw = header(scope, "cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # noqa: BLE001 (a malformed cookie header: no session)
        return None
    morsel = jar.get(cookie_name)
    return morsel.value if morsel is not None else None


def same_origin(scope: dict[str, Any]) -> bool:
    """The Origin header names the Host the request was sent to (http://HOST[:PORT])."""
    origin, host = header(scope, "origin"), header(scope, "host")
    return bool(origin and host) and origin.split("://", 1)[-1] == host


async def refuse(scope: dict[str, Any], send: Any, status: int, message: str, receive: Any = None) -> None:
    if scope["type"] == "websocket":  # accepted, then closed with 4000 + status: the page sees why
        if receive is not None and (await receive())["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4000 + status, "reason": message[:120]})
        return
    body = json.dumps({"type": "error", "error_code": status, "error": message, "problems": [],
                       "exit_code": ExitCode.FAILURE}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def assets_dir() -> Path:
    """The npm packages' folder (scripts/setup installs them under web/node_modules)."""
    env = os.environ.get("JAULA_WEB_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "web" / "node_modules"
