"""Whether a socket of the host holds a port: a forward's DNAT would take that port's traffic from
the host service (sshd, jaulad's own DNS on a bridge address...) without a word, where docker and
podman refuse a published port that is taken (they bind it). Asked by binding a probe socket in
the caller's network namespace (jaulad's: the host's), closed at once; no policy here.

TCP: SO_REUSEADDR set, so only a listening socket makes the bind fail (not a connection's port or
one in TIME_WAIT). UDP: any socket bound to the port does. A wildcard probe (no address) collides
with a socket on any address of that family.
"""

from __future__ import annotations

import errno
import ipaddress
import socket


def in_use(proto: str, port: int, address: str | None = None) -> bool:
    """Whether `proto` `port` on `address` (every IPv4 and IPv6 address when None) is held."""
    if address:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        return _taken(family, proto, address, port)
    return _taken(socket.AF_INET, proto, "0.0.0.0", port) or _taken(socket.AF_INET6, proto, "::", port)


def _taken(family: int, proto: str, address: str, port: int) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        s = socket.socket(family, kind | socket.SOCK_CLOEXEC)
    except OSError:
        return False  # no such family here (IPv6 off): nothing can hold it
    with s:
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((address, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False
