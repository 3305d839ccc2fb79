"""route_localnet of one interface: whether it may carry packets to or from 127.0.0.0/8.

The kernel treats such packets as martians on every interface but `lo` (`__mkroute_output`
refuses a loopback source, `ip_route_input_slow` a loopback destination) unless the interface's
`net.ipv4.conf.<if>.route_localnet` is 1. A port forward reached from the host's own 127.0.0.1
needs it on the bridge its DNAT leads to, the way out and the replies' way back (they come back
to the bridge's address and are un-masqueraded to 127.0.0.1 before the routing decision). No
policy here: `jaula.network.firewall` decides which bridges, and its `guard` chain drops what an
instance could send to or from 127.0.0.0/8 through such a bridge.
"""

from __future__ import annotations

import os

from jaula.errors import ConfigError

_CONF = "/proc/sys/net/ipv4/conf"


def _path(ifname: str) -> str:
    if not ifname or "/" in ifname or ifname in (".", "..") or len(ifname) > 15:
        raise ConfigError([f"interface name {ifname!r} is not a name of 1 to 15 characters without '/'"])
    return f"{_CONF}/{ifname}/route_localnet"


def get(ifname: str) -> bool | None:
    """Whether the interface has route_localnet on; None when there is no such interface."""
    try:
        with open(_path(ifname)) as f:
            return f.read().strip() == "1"
    except FileNotFoundError:
        return None


def set_(ifname: str, on: bool) -> bool:
    """Turn route_localnet on or off; False (and nothing written) when the interface is missing
    or already so."""
    now = get(ifname)
    if now is None or now == on:
        return False
    fd = os.open(_path(ifname), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"1" if on else b"0")
    finally:
        os.close(fd)
    return True
