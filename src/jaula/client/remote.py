"""The client's TCP side: jaulad's API at `http://HOST:PORT` (`jaulad --listen`), every request
carrying `Authorization: Bearer <token>`."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from jaula.client.httpx_core import httpx  # httpx without its CLI's imports
from jaula.errors import ConfigError, JaulaError


def check_url(url: str) -> str:
    """`url` without a trailing slash, or ConfigError saying what a remote looks like."""
    parts = urlsplit(url)
    problems = []
    if parts.scheme not in ("http", "https"):
        problems.append(f"remote {url!r}: the scheme must be http or https")
    if not parts.hostname or not parts.port:
        problems.append(f"remote {url!r}: give a host and a port, e.g. http://127.0.0.1:8443")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        problems.append(f"remote {url!r}: give no path, query or fragment (the API's paths come after it)")
    if problems:
        raise ConfigError(problems)
    return url.rstrip("/")


def read_token_file(path: str) -> str:
    """The token in `path` (jaulad's $ROOT/api.token, or a copy), stripped."""
    try:
        with open(os.path.expanduser(path), encoding="ascii") as f:
            token = f.read().strip()
    except OSError as exc:
        raise JaulaError(f"Cannot read the token file {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise JaulaError(f"The token file {path!r} holds more than an ASCII token") from None
    if not token:
        raise JaulaError(f"The token file {path!r} is empty: copy jaulad's token into it (jaulad --show-token)")
    return token


def http_client(url: str, token: str | None, timeout: float) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=check_url(url), headers=headers, timeout=timeout)
