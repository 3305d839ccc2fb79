"""Interfaces, addresses and routes of networks and NICs, over rtnetlink (pyroute2).

The host side (bridges, veths) is made with a netlink socket of the host; the instance side with
a netlink socket opened inside the instance's network namespace: this thread enters the
namespace (setns), opens the socket and comes back at once. A netlink socket stays bound to the
namespace it was made in, so no helper process is forked and nothing is left behind.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from jaula.errors import ConfigError, JaulaError, NotFound
from jaula.linux.kfile import write_kernel_file
from jaula.linux.ns import CLONE_NEWNET, setns
from jaula.network import rtnl
from jaula.network.link_checks import (  # noqa: F401 - part of this module's interface
    IFNAMSIZ,
    ifname_problem,
    mac_problem,
    network_problems,
    nic_problems,
)
from jaula.network.plan import BRIDGED, MACVLAN, NetworkPlan, NicPlan

IFA_F_NODAD = rtnl.IFA_F_NODAD
FORWARDING = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}


class LinkError(JaulaError):
    """A netlink request on a network interface failed; the message names the step and the link."""


def bridge_mac(bridge: str) -> str:
    """A stable, locally administered MAC for a bridge: without one the kernel gives the bridge
    the lowest MAC of its ports, which changes as instances come and go (and with it the
    gateway's MAC in every instance's neighbour table)."""
    h = hashlib.sha256(b"jaula-bridge:" + bridge.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *h[:5]))


# ---- netlink plumbing --------------------------------------------------------------------------

def _failed(step: str, e: NetlinkError) -> LinkError:
    return LinkError(f"{step}: {os.strerror(e.code) if e.code else e}")


def _ipr() -> IPRoute:
    return IPRoute(groups=0)  # no multicast groups: we only ask and read answers


@contextmanager
def netlink_in(pid: int) -> Iterator[IPRoute]:
    """An rtnetlink socket (pyroute2 IPRoute) in the network namespace of process `pid`, for
    reading or changing what is inside without a helper process (tests, inspection)."""
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NotFound(f"Network namespace of process {pid}: {os.strerror(e.errno or errno.ESRCH)}") from None
    try:
        ipr = _ipr_at(target)
    finally:
        os.close(target)
    with ipr:
        yield ipr


def _ipr_at(nsfd: int) -> IPRoute:
    """An IPRoute whose socket lives in the namespace of `nsfd` (made there, used from here)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(nsfd, CLONE_NEWNET, "network namespace of the instance")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        finally:
            setns(home, CLONE_NEWNET, "back to our network namespace")
    finally:
        os.close(home)
    return IPRoute(fileno=sock.detach(), groups=0)


def _socket_at(nsfd: int, ifname: str) -> tuple[socket.socket, int | None]:
    """A plain rtnetlink socket (`rtnl`) in the namespace of `nsfd`, and the index of `ifname` there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(nsfd, CLONE_NEWNET, "network namespace of the instance")
        try:
            sock = rtnl.open_socket()
            index = _nametoindex(ifname)
        finally:
            setns(home, CLONE_NEWNET, "back to our network namespace")
    finally:
        os.close(home)
    return sock, index


def _nametoindex(ifname: str) -> int | None:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def _get(ipr: IPRoute, ifname: str) -> Any:  # an ifinfmsg, or None
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise _failed(f"Look up interface {ifname!r}", e) from None


def _kind(msg: Any) -> str | None:  # pyroute2 ifinfmsg
    info = msg.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def _family(value: str) -> int:
    return socket.AF_INET6 if ":" in value else socket.AF_INET


def _add_address(ipr: IPRoute, index: int, cidr: str, where: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    kw = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
    try:
        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen, **kw)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise _failed(f"{where}: add address {cidr}", e) from None


def _ensure_forwarding(families: list[int]) -> None:
    for family in families:
        path = FORWARDING[family]
        with open(path) as f:
            if f.read().strip() == "1":
                continue
        write_kernel_file(path, "1")


# ---- bridges -----------------------------------------------------------------------------------

def ensure_bridge(net: NetworkPlan) -> None:
    """Make the network's bridge as planned (create it if missing; else fix its MTU, MAC and
    addresses), up, and turn IP forwarding on for the families it routes (only if off)."""
    if problems := network_problems(net):
        raise ConfigError([f"network {net.name!r}: {p}" for p in problems])
    want = [a for a in (net.ipv4, net.ipv6) if a]
    with _ipr() as ipr, ExitStack() as undo:
        link = _get(ipr, net.bridge)
        where = f"bridge {net.bridge!r} of network {net.name!r}"
        if link is None:
            try:
                ipr.link("add", ifname=net.bridge, kind="bridge", mtu=net.mtu, address=bridge_mac(net.bridge))
            except NetlinkError as e:
                raise _failed(f"Create {where}", e) from None
            undo.callback(_delete_quietly, ipr, net.bridge)
            link = _get(ipr, net.bridge)
            if link is None:
                raise LinkError(f"Create {where}: it vanished right after its creation")
        elif _kind(link) != "bridge":
            raise LinkError(f"{where}: interface {net.bridge!r} exists and is a {_kind(link) or 'device'}, "
                            "not a bridge: choose another bridge name or remove that interface")
        index = link["index"]
        try:
            ipr.link("set", index=index, mtu=net.mtu, address=bridge_mac(net.bridge), state="up")
        except NetlinkError as e:
            raise _failed(f"Set MTU {net.mtu} and bring up {where}", e) from None
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"], a["family"]): a for a in ipr.addr("dump", index=index)}
        keep = set()
        for cidr in want:
            iface = ipaddress.ip_interface(cidr)
            key = (str(iface.ip), iface.network.prefixlen, _family(cidr))
            keep.add(key)
            if key not in have:
                _add_address(ipr, index, cidr, f"Ensure {where}")
        for key, msg in have.items():
            if key not in keep and msg["scope"] == 0:  # universe: not a link-local fe80::
                try:
                    ipr.addr("del", index=index, address=key[0], prefixlen=key[1])
                except NetlinkError as e:
                    raise _failed(f"Remove stale address {key[0]}/{key[1]} from {where}", e) from None
        _ensure_forwarding([f for f, a in ((4, net.ipv4), (6, net.ipv6)) if a])
        undo.pop_all()


def remove_bridge(net: NetworkPlan) -> None:
    """Delete the network's bridge if present (a link of that name that is not a bridge stays)."""
    with _ipr() as ipr:
        link = _get(ipr, net.bridge)
        if link is None or _kind(link) != "bridge":
            return
        try:
            ipr.link("del", index=link["index"])
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise _failed(f"Delete bridge {net.bridge!r} of network {net.name!r}", e) from None


def _delete_quietly(ipr: IPRoute, ifname: str) -> None:
    try:
        ipr.link("del", ifname=ifname)
    except NetlinkError:
        pass


# ---- NICs --------------------------------------------------------------------------------------

def attach(nic: NicPlan, pid: int, *, timing: Callable[[str], None] | None = None) -> None:
    """Plug `nic` into the network namespace of process `pid` (an instance's init waiting before
    exec): a veth whose peer is born inside with its final name, MAC and MTU (BRIDGED), or a
    macvlan born inside (MACVLAN); then its addresses, up, lo up, routes. A failure removes
    what was made and raises LinkError naming the step. `timing(step)` is called after each
    step (benchmarks)."""
    if problems := nic_problems(nic):
        raise ConfigError([f"nic {nic.name!r} of {nic.instance!r}: {p}" for p in problems])
    mark = timing or (lambda step: None)
    where = f"nic {nic.name!r} of instance {nic.instance!r}"
    try:
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NotFound(f"Attach {where}: network namespace of process {pid}: "
                       f"{os.strerror(e.errno or errno.ESRCH)}") from None
    with ExitStack() as closing, ExitStack() as undo:
        closing.callback(os.close, nsfd)
        if _same_netns(nsfd):
            raise LinkError(f"Attach {where}: process {pid} shares the host's network namespace "
                            "(the instance needs its own: a 'network' namespace in its config)")
        parent = _nametoindex(nic.parent)
        if parent is None:
            what = "bridge" if nic.type == BRIDGED else "parent interface"
            raise NotFound(f"Attach {where}: {what} {nic.parent!r} does not exist"
                           + (" (ensure its network first)" if nic.type == BRIDGED else ""))
        if nic.type == BRIDGED and not _is_bridge(nic.parent):
            raise LinkError(f"Attach {where}: parent {nic.parent!r} is not a bridge")
        host = closing.enter_context(rtnl.open_socket())
        mark("lookup")
        if nic.type == BRIDGED:
            # the create is one request: the kernel makes both ends or neither. The host end goes
            # up in a write of its own, sent only once the create succeeded (the kernel would run
            # it even after a failed create, on whatever link has that name)
            step = (f"create veth {nic.host_name!r} on bridge {nic.parent!r} with peer {nic.name!r}"
                    f" in process {pid}'s namespace")
            _run(host, [(step, rtnl.veth(nic.host_name, nic.mtu, parent, nic.name, nic.mac, nsfd))], where)
            undo.callback(_delete_host_link, nic.host_name)  # its peer goes with it
            _run(host, [(f"bring up {nic.host_name!r}", rtnl.host_end_up(nic.host_name))], where)
        else:
            step = f"create macvlan {nic.name!r} on {nic.parent!r} in process {pid}'s namespace"
            _run(host, [(step, rtnl.macvlan(nic.name, nic.mac, nic.mtu, parent, nsfd))], where)
        mark("create")
        inside, index = _socket_at(nsfd, nic.name)
        closing.enter_context(inside)
        if nic.type == MACVLAN:
            undo.callback(_delete_inside, nsfd, nic.name)
        if index is None:
            raise LinkError(f"Attach {where}: {nic.name!r} is missing inside after its creation")
        mark("socket")
        _run(inside, _inside_steps(index, nic), where)
        mark("configure")
        undo.pop_all()  # success: keep the links (the sockets and the fd close all the same)


def _run(sock: socket.socket, steps: list[tuple[str, Any]], where: str) -> None:
    try:
        rtnl.run(sock, steps)
    except rtnl.Failed as e:
        raise LinkError(f"Attach {where}: {e}") from None


def _inside_steps(index: int, nic: NicPlan) -> list[tuple[str, Any]]:
    """lo and the NIC up, its addresses, its default and extra routes: one batch."""
    steps: list[tuple[str, Any]] = [("bring up lo", rtnl.link_up(1)),  # lo is index 1 in every netns
                                    (f"bring up {nic.name!r}", rtnl.link_up(index))]
    steps += [(f"add address {cidr}", rtnl.address(index, cidr)) for cidr in (*nic.ipv4, *nic.ipv6)]
    for gw, default in ((nic.gateway4, "0.0.0.0/0"), (nic.gateway6, "::/0")):
        if gw:
            steps.append((f"add route {default} via {gw}", rtnl.route(index, default, gw)))
    steps += [(f"add route {dst} via {via}", rtnl.route(index, dst, via)) for dst, via in nic.routes]
    return steps


def _same_netns(nsfd: int) -> bool:
    a, b = os.fstat(nsfd), os.stat("/proc/thread-self/ns/net")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _is_bridge(ifname: str) -> bool:
    """Whether the host's `ifname` is a bridge: sysfs says so without a netlink round trip (its
    /sys/class/net is the host's in jaulad); netlink when sysfs does not show the interface."""
    if os.path.isdir(f"/sys/class/net/{ifname}"):
        return os.path.isdir(f"/sys/class/net/{ifname}/bridge")
    with _ipr() as ipr:
        link = _get(ipr, ifname)
    return link is not None and _kind(link) == "bridge"


def _delete_host_link(ifname: str) -> None:
    with _ipr() as ipr:
        _delete_quietly(ipr, ifname)


def _delete_inside(nsfd: int, ifname: str) -> None:
    with _ipr_at(nsfd) as ipr:
        _delete_quietly(ipr, ifname)


def _delete_inside_of(pid: int, ifname: str) -> None:
    try:
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # the instance is gone, and its links with its namespace
    try:
        if not _same_netns(nsfd):  # never the host's own interface of that name
            _delete_inside(nsfd, ifname)
    finally:
        os.close(nsfd)


def ifb_name(host_name: str) -> str:
    """The name of the ifb device that shapes what a BRIDGED NIC sends (`jaula.network.tc`)."""
    if len(host_name) <= IFNAMSIZ - 2:
        return host_name + "-e"
    return "je" + hashlib.sha256(host_name.encode()).hexdigest()[:IFNAMSIZ - 2]


def detach(nic: NicPlan, pid: int | None = None) -> None:
    """Remove the host side of `nic` if present (its veth, the ifb of its egress limit; a
    macvlan still under its temporary host name): idempotent. The peer in the instance dies
    with its namespace. With `pid` (the init of a running instance: a NIC removed or changed
    live) a macvlan, which has no host side, is deleted inside its namespace."""
    if pid is not None and nic.type == MACVLAN:
        _delete_inside_of(pid, nic.name)
    present = [n for n in (nic.host_name, ifb_name(nic.host_name)) if _nametoindex(n) is not None]
    if not present:
        return  # the usual case at a stop: the veth went with the instance's namespace, no ifb
    with _ipr() as ipr:
        for name in present:
            try:
                ipr.link("del", ifname=name)
            except NetlinkError as e:
                if e.code not in (errno.ENODEV, errno.ENOENT):
                    raise _failed(f"Detach nic {nic.name!r} of {nic.instance!r}: delete {name!r}", e) from None


def remove_strays(host_names: list[str]) -> list[str]:
    """Delete the host ends of NICs that should not be there (their instances are not running)
    and the ifb devices of their egress limits: only links of those names that are a veth or an
    ifb; what is absent is fine. The names deleted."""
    names = [n for h in host_names for n in (h, ifb_name(h)) if _nametoindex(n) is not None]
    if not names:
        return []
    gone = []
    with _ipr() as ipr:
        for name in names:
            link = _get(ipr, name)
            if link is None or _kind(link) not in ("veth", "ifb"):
                continue
            try:
                ipr.link("del", index=link["index"])
                gone.append(name)
            except NetlinkError as e:
                if e.code not in (errno.ENODEV, errno.ENOENT):
                    raise _failed(f"Remove stray interface {name!r}", e) from None
    return gone


def exists(ifname: str) -> bool:
    """Whether the host (this thread's network namespace) has an interface called `ifname`."""
    return _nametoindex(ifname) is not None


def host_routes() -> list[str]:
    """The host's IPv4 and IPv6 networks in use, as strict CIDRs: the destinations of its routes
    (every table but `local`; default routes left out: they collide with everything) and the
    networks of its interface addresses. The daemon picks default subnets that overlap none."""
    seen: set[str] = set()
    with _ipr() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.route("dump", family=family):
                table = r.get_attr("RTA_TABLE") or r["table"]
                if table == 255 or r["dst_len"] == 0:
                    continue
                dst = r.get_attr("RTA_DST")
                if dst:
                    seen.add(str(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False)))
            for a in ipr.addr("dump", family=family):
                addr = a.get_attr("IFA_ADDRESS")
                if addr:
                    seen.add(str(ipaddress.ip_network(f"{addr}/{a['prefixlen']}", strict=False)))
    return sorted(seen, key=lambda c: (":" in c, ipaddress.ip_network(c)))
