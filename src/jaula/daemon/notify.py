"""sd_notify without a library: systemd's `Type=notify` waits for "READY=1" on the datagram
socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace), as sd_notify(3)
describes. jaulad says READY=1 once its API answers, STOPPING=1 when it stops.
"""

from __future__ import annotations

import os
import socket


def take_socket() -> str | None:
    """$NOTIFY_SOCKET, removed from the environment (so nothing jaulad starts inherits it)."""
    return os.environ.pop("NOTIFY_SOCKET", None) or None


def notify(address: str | None, state: str) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", "STATUS=...") to systemd; False when there is no
    socket to send to (not started by systemd) or it is gone."""
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
