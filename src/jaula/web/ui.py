"""The control center's pages and login, under /ui/ (no session needed to reach them):

- GET /ui/ the page (static/index.html: one page, its views by the URL's fragment);
- GET /ui/static/NAME and /ui/vendor/NAME: its own files and the npm ones (xterm.js), from disk;
- POST /ui/login {"password"} or {"token"}: a session (its cookie) and its CSRF token;
- GET /ui/session: the logged-in page's CSRF token (401 when not logged in);
- POST /ui/logout: the session ends (CSRF checked);
- GET /ui/netstats/NAME: the bytes and packets through each of the instance's NICs, from its
  host-side veth's counters (the API's stats have no network rows); a session is needed.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jaula.errors import ExitCode, JaulaError
from jaula.web import passwords
from jaula.web.gate import CSRF_HEADER, NO_CSRF, NOT_LOGGED_IN, WebConfig, assets_dir
from jaula.web.sessions import csrf_matches

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = {  # served name -> path under the npm folder: nothing else of it is reachable
    "xterm.js": "@xterm/xterm/lib/xterm.js",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.js": "@xterm/addon-fit/lib/addon-fit.js",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|html|svg)$")
_TYPES = {"js": "text/javascript", "css": "text/css", "html": "text/html", "svg": "image/svg+xml"}
HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'self'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
FAILED_LOGIN_DELAY_S = 0.5
WRONG = ("Wrong password or token: log in with the password set by `jaulad --set-password`, or with the "
         "API token (`jaulad --show-token` prints it)")


def error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "error", "error_code": status, "error": message, "problems": problems or [],
                         "exit_code": ExitCode.FAILURE}, status_code=status, headers=HEADERS)


def ui_app(config: WebConfig, api_state: Any = None) -> Starlette:
    sessions = config.sessions

    async def current(request: Request) -> Any:  # the sessions are in the database: off the event loop
        return await run_in_threadpool(sessions.get, request.cookies.get(config.cookie))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=303)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if not _NAME.match(name) or not path.is_file():
            return error(404, f"No such file {name!r} in the control center's assets")
        return FileResponse(path, media_type=_TYPES[name.rsplit(".", 1)[1]], headers=HEADERS)

    async def vendor(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in VENDOR:
            return error(404, f"No such library file {name!r}: served are {', '.join(sorted(VENDOR))}")
        path = assets_dir() / VENDOR[name]
        if not path.is_file():
            return error(404, f"{name} is not installed ({path} is missing): run scripts/setup (npm install in web/)")
        return FileResponse(path, media_type=_TYPES[name.rsplit(".", 1)[1]], headers=HEADERS)

    async def login(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "Send the login as JSON: {\"password\": \"...\"} or {\"token\": \"...\"}")
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) - {"password", "token"} or len(body) != 1 \
                or not isinstance(next(iter(body.values())), str):
            return error(400, "Give one of {\"password\": \"...\"} or {\"token\": \"...\"}",
                         ["body: one key, password or token, with a string value"])
        kind, given = next(iter(body.items()))
        wait = config.throttle.wait_s()
        if wait > 0:
            return error(429, f"Too many failed logins: try again in {wait:.0f} s")
        try:
            ok = await asyncio.get_running_loop().run_in_executor(None, _check, config, kind, given)
        except JaulaError as exc:
            return error(500, str(exc))
        if not ok:
            config.throttle.failed()
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)  # slows a guesser down
            return error(401, WRONG if kind == "token" or passwords.stored_hash(config.root) else
                         "No password is set: run `jaulad --set-password` on the host, or log in with the token "
                         "(`jaulad --show-token`)")
        s = await run_in_threadpool(sessions.create, kind)
        resp = JSONResponse({"csrf": s.csrf, "user": s.user}, headers=HEADERS)
        resp.set_cookie(config.cookie, s.id, httponly=True, samesite="strict", path="/")
        return resp

    async def session(request: Request) -> Response:
        s = await current(request)
        if s is None:
            return error(401, NOT_LOGGED_IN)
        return JSONResponse({"csrf": s.csrf, "user": s.user}, headers=HEADERS)

    async def logout(request: Request) -> Response:
        s = await current(request)
        if s is None:
            return error(401, NOT_LOGGED_IN)
        if not csrf_matches(s, request.headers.get(CSRF_HEADER)):
            return error(403, NO_CSRF)
        await run_in_threadpool(sessions.drop, s.id)
        resp = JSONResponse({}, headers=HEADERS)
        resp.delete_cookie(config.cookie, path="/", httponly=True, samesite="strict")
        return resp

    async def netstats(request: Request) -> Response:
        if await current(request) is None:
            return error(401, NOT_LOGGED_IN)
        networks = getattr(api_state, "networks", None)
        if networks is None:
            return JSONResponse({"nics": []}, headers=HEADERS)
        try:
            nics = await run_in_threadpool(networks.nics_of, request.path_params["name"])
        except JaulaError as exc:
            return error(404, str(exc))
        return JSONResponse({"nics": [{"name": n["name"], **_veth_counters(n.get("host_name"))} for n in nics]},
                            headers=HEADERS)

    return Starlette(routes=[
        Route("/", home), Route("/ui", home),
        Route("/ui/", index),
        Route("/ui/static/{name}", static),
        Route("/ui/vendor/{name}", vendor),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/session", session),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/netstats/{name}", netstats),
    ])


_VETH = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _veth_counters(host_name: str | None) -> dict[str, int | None]:
    """The instance's view of its NIC: what the host side sent, it received, and the reverse.
    None where the link is not there (stopped instance, no NIC type)."""
    out: dict[str, int | None] = {"rx_bytes": None, "tx_bytes": None, "rx_packets": None, "tx_packets": None}
    if not host_name or not _VETH.match(host_name):
        return out
    for mine, host in (("rx_bytes", "tx_bytes"), ("tx_bytes", "rx_bytes"),
                       ("rx_packets", "tx_packets"), ("tx_packets", "rx_packets")):
        try:
            with open(f"/sys/class/net/{host_name}/statistics/{host}") as f:
                out[mine] = int(f.read())
        except (OSError, ValueError):
            pass
    return out


def _check(config: WebConfig, kind: str, given: str) -> bool:
    if kind == "token":
        from jaula.daemon.auth import load_or_create_token
        return hmac.compare_digest(given.strip().encode(), load_or_create_token(config.root).encode())
    stored = passwords.stored_hash(config.root)
    return stored is not None and passwords.verify(given, stored)
