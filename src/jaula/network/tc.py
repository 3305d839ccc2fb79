"""Rate limits of a NIC (traffic control over rtnetlink, pyroute2), applied and changed live.

Both limits are token buckets (tbf) on the host side, out of the instance's reach:
- into the instance (`ingress_kbit`): tbf as the root qdisc of the host-side veth (what the host
  sends to the instance leaves by it);
- out of the instance (`egress_kbit`): what the instance sends ENTERS the host by its veth, and
  a qdisc only shapes what leaves a device. Policing at ingress would need act_police, which this
  kernel lacks (CONFIG_NET_ACT_POLICE unset), so an ingress qdisc on the veth redirects every
  frame (u32 match-all + mirred) to an ifb device of the NIC, whose root tbf shapes it; ifb
  hands the frames back to the veth's receive path, on to the bridge.
MACVLAN NICs are refused: the host has no device of theirs to shape, and a limit inside the
instance's namespace could be lifted by the instance's own root.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from contextlib import ExitStack

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from jaula.errors import ConfigError, NotFound
from jaula.network.links import LinkError, ifb_name
from jaula.network.plan import BRIDGED, MACVLAN, NicPlan

ETH_P_ALL = 0x0003
INGRESS = 0xFFFF0000            # the ingress qdisc's handle (ffff:)
TC_H_ROOT = 0xFFFFFFFF
KBIT_MAX = (2**32 - 1) * 8 // 1000   # tbf's rate is a 32-bit count of bytes per second
BURST_MIN = 16 * 1024           # bytes: a few full frames, and room for a GSO segment run
LATENCY = "50ms"                # how long a packet may wait in the bucket's queue


def rate_problems(nic: NicPlan) -> list[str]:
    """Everything wrong with the limits of `nic`, before any change."""
    problems = []
    for value, what in ((nic.ingress_kbit, "ingress_kbit"), (nic.egress_kbit, "egress_kbit")):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= KBIT_MAX:
            problems.append(f"{what} {value!r} must be an integer from 1 to {KBIT_MAX} (kbit/s), or None for no limit")
    if nic.type == MACVLAN and (nic.ingress_kbit is not None or nic.egress_kbit is not None):
        problems.append("rate limits need a bridged NIC: a macvlan NIC has no host-side device to shape "
                        "(a limit on its device inside could be lifted by the instance's root, and its parent's "
                        "qdiscs see only part of its traffic: docs/network.md)")
    elif nic.type not in (BRIDGED, MACVLAN):
        problems.append(f"type {nic.type!r} has no interface to limit: {BRIDGED!r}")
    return problems


def tbf_params(kbit: int) -> dict[str, object]:
    """The token bucket of a `kbit` kbit/s limit: a burst of 10 ms of traffic (at least BURST_MIN)."""
    return {"rate": f"{kbit}kbit", "burst": max(kbit * 125 // 100, BURST_MIN), "latency": LATENCY}


def set_rate(nic: NicPlan) -> None:
    """Apply, change or remove (None) the NIC's ingress and egress limits, live; idempotent.
    A failure undoes what this call made and raises, naming the step."""
    if problems := rate_problems(nic):
        raise ConfigError([f"nic {nic.name!r} of {nic.instance!r}: {p}" for p in problems])
    if nic.type == MACVLAN:
        return  # no limits asked (else refused above): nothing of ours to remove either
    where = f"rate limits of nic {nic.name!r} of instance {nic.instance!r}"
    try:
        veth = socket.if_nametoindex(nic.host_name)
    except OSError:
        raise NotFound(f"Set {where}: host interface {nic.host_name!r} does not exist (is the NIC attached?)") from None
    with IPRoute(groups=0) as ipr, ExitStack() as undo:
        try:
            _set_root_tbf(ipr, veth, nic.ingress_kbit, undo)
        except NetlinkError as e:
            raise _failed(f"Set {where}: ingress limit on {nic.host_name!r}", e) from None
        try:
            if nic.egress_kbit is None:
                _remove_egress(ipr, veth, ifb_name(nic.host_name))
            else:
                _set_egress(ipr, veth, ifb_name(nic.host_name), nic.egress_kbit, nic.mtu, undo)
        except NetlinkError as e:
            raise _failed(f"Set {where}: egress limit through {ifb_name(nic.host_name)!r}", e) from None
        except LinkError as e:
            raise LinkError(f"Set {where}: {e}") from None
        undo.pop_all()


def _failed(step: str, e: NetlinkError) -> LinkError:
    return LinkError(f"{step}: {os.strerror(e.code) if e.code else e}")


def _root_tbf_kbit(ipr: IPRoute, index: int) -> int | None:
    """The rate (kbit/s) of the root tbf of link `index`, or None when its root is no tbf."""
    for q in ipr.tc("dump", index=index):
        if q["parent"] == TC_H_ROOT and q.get_attr("TCA_KIND") == "tbf":
            return q.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"] * 8 // 1000
    return None


def _set_root_tbf(ipr: IPRoute, index: int, kbit: int | None, undo: ExitStack) -> None:
    """The root tbf of link `index` at `kbit` (None: none), what was there before put back by `undo`."""
    old = _root_tbf_kbit(ipr, index)
    if old == kbit:
        return
    _put_root_tbf(ipr, index, kbit)
    undo.callback(_put_root_tbf, ipr, index, old)


def _put_root_tbf(ipr: IPRoute, index: int, kbit: int | None) -> None:
    if kbit is not None:
        ipr.tc("replace", "tbf", index, 0x10000, **tbf_params(kbit))
    else:
        _ignore_missing(lambda: ipr.tc("del", index=index, handle=0x10000, parent=TC_H_ROOT))


def _has_ingress(ipr: IPRoute, index: int) -> bool:
    return any(q["parent"] == 0xFFFFFFF1 or q.get_attr("TCA_KIND") == "ingress" for q in ipr.tc("dump", index=index))


def _set_egress(ipr: IPRoute, veth: int, ifb: str, kbit: int, mtu: int, undo: ExitStack) -> None:
    try:
        ifb_index = socket.if_nametoindex(ifb)
        info = ipr.link("get", index=ifb_index)[0].get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "ifb":
            raise LinkError(f"interface {ifb!r} exists and is not an ifb: it cannot take this NIC's egress limit")
    except OSError:
        ipr.link("add", ifname=ifb, kind="ifb", mtu=mtu, state="up")
        undo.callback(_ignore_missing, lambda: ipr.link("del", ifname=ifb))
        ifb_index = socket.if_nametoindex(ifb)
        if _has_ingress(ipr, veth):  # a redirect to an ifb that is gone: make it again
            ipr.tc("del", "ingress", veth, INGRESS)
    _set_root_tbf(ipr, ifb_index, kbit, undo)
    if not _has_ingress(ipr, veth):
        ipr.tc("add", "ingress", veth, INGRESS)
        undo.callback(_ignore_missing, lambda: ipr.tc("del", "ingress", veth, INGRESS))
    if not ipr.get_filters(index=veth, parent=INGRESS):
        ipr.tc("add-filter", "u32", veth, parent=INGRESS, prio=1, protocol=ETH_P_ALL, target=0,
               keys=["0x0/0x0+0"],
               action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb_index})


def _remove_egress(ipr: IPRoute, veth: int, ifb: str) -> None:
    if _has_ingress(ipr, veth):
        _ignore_missing(lambda: ipr.tc("del", "ingress", veth, INGRESS))
    _ignore_missing(lambda: ipr.link("del", ifname=ifb))


def _ignore_missing(call: Callable[[], object]) -> None:
    try:
        call()
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            raise
