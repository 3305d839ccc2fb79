"""jaulad's control-center options: --web ADDRESS:PORT, --web-any-address, --set-password."""

from __future__ import annotations

import getpass
import logging
import socket
import sys
from pathlib import Path

from jaula.errors import ConfigError

log = logging.getLogger("jaula.web")
DEFAULT_HOST = "127.0.0.1"  # --web PORT


def web_address(text: str, allow_remote: bool, listen: str | None) -> tuple[str, int]:
    """--web's (host, port): as --listen's, loopback unless --web-any-address, and not --listen's.
    A port alone is on 127.0.0.1: the control center stays on this host unless told otherwise."""
    from jaula.daemon.auth import is_loopback, parse_listen

    if text.isdigit():
        text = f"{DEFAULT_HOST}:{text}"
    try:
        host, port = parse_listen(text, allow_remote)
    except ConfigError as exc:
        raise ConfigError([p.replace("--listen-any-address", "--web-any-address").replace("--listen ", "--web ")
                           for p in exc.problems]) from None
    if listen and listen.rpartition(":")[2] == str(port):
        raise ConfigError(f"--web {text!r} and --listen {listen!r} name the same port: give each its own")
    if not is_loopback(host):
        log.warning("the control center listens on %s, not a loopback address: other hosts can reach it over "
                    "plain HTTP, passwords included", text)
    return host, port


def bind_web(root: Path, address: tuple[str, int], db: object) -> tuple[socket.socket, object]:
    """The control center's listening socket and its WebConfig (sessions in `db`, jaulad's database:
    those of before a restart go on)."""
    from jaula.daemon import server
    from jaula.daemon.auth import load_or_create_token
    from jaula.web.gate import WebConfig, assets_dir
    from jaula.web.sessions import Sessions

    load_or_create_token(root)  # the token logs in too: made now, so --show-token and the page agree
    sock = server.bind_tcp(*address)
    host, port = sock.getsockname()[:2]
    if not (assets_dir() / "@xterm" / "xterm" / "lib" / "xterm.js").is_file():
        log.warning("xterm.js is not installed under %s: the control center's console will not open "
                    "(run scripts/setup)", assets_dir())
    log.info("the control center is at http://%s/ui/ (log in with the token of %s, or the password of "
             "jaulad --set-password)", f"[{host}]:{port}" if ":" in host else f"{host}:{port}", root / "api.token")
    return sock, WebConfig(root=root, address=(host, port), sessions=Sessions(db))


def set_password(root: Path) -> int:
    """Read the password (twice on a terminal) and store its hash."""
    from jaula.web.passwords import set_password as store

    if sys.stdin.isatty():
        first = getpass.getpass("Control center password: ")
        if getpass.getpass("Again: ") != first:
            raise ConfigError("the two passwords differ: nothing was changed")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    path = store(root, first)
    from jaula.web.sessions import end_all

    ended = end_all(root)  # a new password: whoever was logged in logs in again
    print(f"jaulad: the control center's password is set (scrypt hash in {path}); "
          f"{ended} session(s) ended")
    return 0
