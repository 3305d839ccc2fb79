"""Python client of jaulad's REST API:

    from jaula.client import Client
    with Client() as c:                       # $JAULA_SOCKET, else /run/jaula/jaula.sock
        c.create("debian", "web1", config={"limits.memory": "1GiB"})
        c.start("web1")                       # waits for the operation; a failure raises its error
        print(c.get("web1")["status"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jaula.client.rest import (
        DEFAULT_SOCKET,
        Client,
        Unreachable,
        default_socket,
        error_from,
    )

__all__ = ["DEFAULT_SOCKET", "Client", "Unreachable", "default_socket", "error_from"]


def __getattr__(name: str) -> Any:
    """The names of jaula.client.rest, imported on first use: `jaula --help`, or a module of the
    package such as jaula.client.stream, does not pay for httpx."""
    if name in __all__:
        from jaula.client import rest

        return getattr(rest, name)
    raise AttributeError(f"module 'jaula.client' has no attribute {name!r}")
