"""Python client of jaulad's REST API:

    from jaula.client import Client
    with Client() as c:                       # $JAULA_SOCKET, else /run/jaula/jaula.sock
        c.create("debian", "web1", config={"limits.memory": "1GiB"})
        c.start("web1")                       # waits for the operation; a failure raises its error
        print(c.get("web1")["status"])
"""

from jaula.client.rest import (
    DEFAULT_SOCKET,
    Client,
    Unreachable,
    default_socket,
    error_from,
)

__all__ = ["DEFAULT_SOCKET", "Client", "Unreachable", "default_socket", "error_from"]
