"""Batched rtnetlink requests for the hot path (`links.attach`): messages encoded by pyroute2's
message classes, written in ONE send on a plain netlink socket, acks read back.

Why not `IPRoute` here: each of its calls runs an asyncio round and pyroute2's argument filters,
~0.3-0.5 ms of Python per request, several times the kernel's own work; a NIC's attach sends two
batches instead (create on the host; up, addresses and routes inside). The kernel runs the
messages of a write in order and acks each, so a failure names its step.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    nlmsg,
)
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

IFF_UP = 0x1
IFA_F_NODAD = 0x02          # linux/if_addr.h: no duplicate address detection
MACVLAN_MODE_BRIDGE = 4     # linux/if_link.h
IN6_ADDR_GEN_MODE_NONE = 1  # linux/if_link.h
BRIDGE_MODE_HAIRPIN = 1     # linux/if_bridge.h: IFLA_BRPORT_MODE
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
_HDR = struct.Struct("=LHHLL")  # struct nlmsghdr
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
CHANGE = NLM_F_REQUEST | NLM_F_ACK


class Failed(Exception):
    """One request of a batch failed: `step` (its caller's words), errno `code`, the kernel's text."""

    def __init__(self, step: str, code: int, text: str):
        self.step, self.code, self.text = step, code, text
        super().__init__(f"{step}: {text} ({os.strerror(code)})" if text else f"{step}: {os.strerror(code)}")


def open_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the caller's current network namespace (it stays bound to it):
    acks carry only the request's header, plus the kernel's error text."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    return sock


def _msg(cls: type[nlmsg], kind: int, nlm_flags: int, attrs: list, **fields: int) -> nlmsg:
    m = cls()
    m["header"]["type"] = kind
    m["header"]["flags"] = nlm_flags
    for k, v in fields.items():
        m[k] = v
    m["attrs"] = attrs
    return m


def veth(name: str, mtu: int, master: int, peer_name: str, peer_mac: str, peer_nsfd: int) -> nlmsg:
    """A veth `name` (down, in `master`), whose peer is born in the namespace of `peer_nsfd` with
    its final name, MAC and MTU (the peer cannot be set up in the same request: veth_open
    refuses until the pair is linked, ENOTCONN). `host_end_up` follows."""
    peer = {"attrs": [("IFLA_IFNAME", peer_name), ("IFLA_ADDRESS", peer_mac), ("IFLA_MTU", mtu),
                      ("IFLA_NET_NS_FD", peer_nsfd)]}
    info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
    return _msg(ifinfmsg, RTM_NEWLINK, CREATE, [("IFLA_IFNAME", name), ("IFLA_MTU", mtu), ("IFLA_MASTER", master),
                                                ("IFLA_LINKINFO", info)])


def host_end_up(name: str) -> nlmsg:
    """The host end of a veth up WITHOUT IPv6 addresses of its own (addr_gen_mode none, set
    before the first up, which is when the kernel makes a link-local; a bridge port needs none,
    and the host is spared a link-local, its route and its DAD per instance), its bridge port in
    hairpin mode (a frame may go back out of the port it came in: an instance reaching its own
    port forward, DNAT'ed while bridged). The kernel refuses IFLA_AF_SPEC in the create itself
    (EAFNOSUPPORT: no inet6 data yet), and bridge port settings too (no port yet)."""
    spec = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]}
    port = {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"),
                      ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", BRIDGE_MODE_HAIRPIN)]})]}
    return _msg(ifinfmsg, RTM_NEWLINK, CHANGE, [("IFLA_IFNAME", name), ("IFLA_AF_SPEC", spec),
                                                ("IFLA_LINKINFO", port)], flags=IFF_UP, change=IFF_UP)


def macvlan(name: str, mac: str, mtu: int, parent: int, nsfd: int) -> nlmsg:
    """A bridge-mode macvlan on `parent`, born in the namespace of `nsfd`, up."""
    info = {"attrs": [("IFLA_INFO_KIND", "macvlan"),
                      ("IFLA_INFO_DATA", {"attrs": [("IFLA_MACVLAN_MODE", MACVLAN_MODE_BRIDGE)]})]}
    return _msg(ifinfmsg, RTM_NEWLINK, CREATE, [("IFLA_IFNAME", name), ("IFLA_ADDRESS", mac), ("IFLA_MTU", mtu),
                                                ("IFLA_LINK", parent), ("IFLA_NET_NS_FD", nsfd),
                                                ("IFLA_LINKINFO", info)], flags=IFF_UP, change=IFF_UP)


def link_up(index: int) -> nlmsg:
    return _msg(ifinfmsg, RTM_NEWLINK, CHANGE, [], index=index, flags=IFF_UP, change=IFF_UP)


def address(index: int, cidr: str) -> nlmsg:
    """`cidr` on link `index`; IPv6 without duplicate address detection (usable at once)."""
    iface = ipaddress.ip_interface(cidr)
    ip = str(iface.ip)
    if iface.version == 4:
        return _msg(ifaddrmsg, RTM_NEWADDR, CREATE, [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)],
                    family=socket.AF_INET, prefixlen=iface.network.prefixlen, index=index)
    return _msg(ifaddrmsg, RTM_NEWADDR, CREATE, [("IFA_ADDRESS", ip)], family=socket.AF_INET6,
                prefixlen=iface.network.prefixlen, index=index, flags=IFA_F_NODAD)


def route(index: int, dst: str, via: str) -> nlmsg:
    """A unicast route to `dst` (CIDR; prefix 0 for the default) via `via` out of link `index`."""
    net = ipaddress.ip_network(dst)
    attrs = [("RTA_GATEWAY", via), ("RTA_OIF", index)]
    if net.prefixlen:
        attrs.insert(0, ("RTA_DST", str(net.network_address)))
    return _msg(rtmsg, RTM_NEWROUTE, CREATE, attrs, family=socket.AF_INET6 if net.version == 6 else socket.AF_INET,
                dst_len=net.prefixlen, table=RT_TABLE_MAIN, proto=RTPROT_STATIC, scope=RT_SCOPE_UNIVERSE,
                type=RTN_UNICAST)


def run(sock: socket.socket, steps: list[tuple[str, nlmsg]]) -> None:
    """Send every request in one write and read every ack; raise Failed for the first that failed
    (the kernel still runs the ones after it: the caller undoes the lot)."""
    buf = bytearray()
    for seq, (_, m) in enumerate(steps, 1):
        m["header"]["sequence_number"] = seq
        m.encode()
        buf += m.data
    sock.send(buf)
    pending = set(range(1, len(steps) + 1))
    failures: dict[int, tuple[int, str]] = {}
    while pending:
        data = sock.recv(65536)
        offset = 0
        while offset + _HDR.size <= len(data):
            length, kind, _flags, seq, _ = _HDR.unpack_from(data, offset)
            if kind == NLMSG_ERROR and seq in pending:
                (error,) = struct.unpack_from("=i", data, offset + 16)
                pending.discard(seq)
                if error:
                    failures[seq] = (-error, _ext_ack_text(data[offset:offset + length]))
            offset += (length + 3) & ~3
            if length == 0:
                break
    if failures:
        seq = min(failures)
        raise Failed(steps[seq - 1][0], *failures[seq])


def _ext_ack_text(msg: bytes) -> str:
    """NLMSGERR_ATTR_MSG of an error ack (after nlmsghdr, the error and the capped request header)."""
    offset = 16 + 4 + 16
    while offset + 4 <= len(msg):
        length, kind = struct.unpack_from("=HH", msg, offset)
        if length < 4:
            break
        if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
            return msg[offset + 4:offset + length].split(b"\0", 1)[0].decode(errors="replace")
        offset += (length + 3) & ~3
    return ""
