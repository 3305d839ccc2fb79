"""Wait for an fd to be readable with poll(2): select(2) fails on fds above 1023."""

from __future__ import annotations

import select


def readable(fd: int, timeout: float) -> bool:
    """True when `fd` is readable or hung up within `timeout` seconds."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))
