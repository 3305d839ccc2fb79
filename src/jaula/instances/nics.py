"""The container driver's NICs: plugged into the init's network namespace between its create and
its start, recorded in the bundle, unplugged from that record at stop, delete or a failed start.

The plans come complete from jaulad with the instance (`Instance.network`, daemon/networks.py):
{"table": nftables table, "networks": [NetworkPlan], "nics": [NicPlan], "resolv_conf": text,
"hosts": text}. The record (`nics.json` in the bundle) keeps what was plugged, so a stop needs
nothing from the daemon (the orphan sweep's stop included) and a live change knows what is there.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from contextlib import ExitStack
from typing import Any

from jaula.network.plan import NetworkPlan, NicPlan

RECORD = "nics.json"
log = logging.getLogger("jaula.network")
TIMING_ENV = "JAULA_NIC_TIMING"  # a file: each plug and unplug appends its steps' times (benchmarks)


class _Clock:
    """Steps of a plug or unplug timed with perf_counter_ns, appended as one line to the file
    named by $JAULA_NIC_TIMING (nothing at all when it is unset)."""

    def __init__(self, what: str) -> None:
        self.path = os.environ.get(TIMING_ENV)
        self.what, self.steps = what, []
        self.t0 = self.last = time.perf_counter_ns() if self.path else 0

    def __call__(self, step: str) -> None:
        if self.path:
            now = time.perf_counter_ns()
            self.steps.append(f"{step}={(now - self.last) / 1e6:.3f}")
            self.last = now

    def done(self) -> None:
        if self.path and self.steps:
            with open(self.path, "a") as f:
                f.write(f"{self.what} total={(time.perf_counter_ns() - self.t0) / 1e6:.3f} {' '.join(self.steps)}\n")


def _plumbing(table: str) -> Any:
    from jaula.network.plumbing import Plumbing

    return Plumbing(table)


def _plans(network: dict[str, Any]) -> tuple[dict[str, NetworkPlan], list[NicPlan]]:
    nets = {n["name"]: NetworkPlan(**n) for n in network.get("networks", [])}
    nics = [NicPlan(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                       for k, v in n.items()}) for n in network.get("nics", [])]
    return nets, nics


def write_etc(rootfs: str, network: dict[str, Any], idmap: Any) -> None:
    """/etc/resolv.conf and /etc/hosts of the mounted root, written inside the tree (a symlink
    there is replaced, never followed), owned by the instance's root."""
    if not network.get("nics"):
        return
    mark = _Clock("etc")
    from jaula.linux.fs import open_in_root

    rfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            etc = open_in_root(rfd, "etc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return  # no /etc: nothing reads them
        try:
            for name, text in (("resolv.conf", network.get("resolv_conf")), ("hosts", network.get("hosts"))):
                if text:
                    _write(etc, name, text, idmap)
        finally:
            os.close(etc)
    finally:
        os.close(rfd)
    mark("write")
    mark.done()


def _write(etc: int, name: str, text: str, idmap: Any) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o644, dir_fd=etc)
    except OSError as e:
        if e.errno == errno.EISDIR:
            return
        if e.errno != errno.ELOOP:
            raise
        os.unlink(name, dir_fd=etc)
        fd = os.open(name, flags | os.O_EXCL, 0o644, dir_fd=etc)
    try:
        os.write(fd, text.encode())
        if idmap is not None:
            os.fchown(fd, idmap.uid_base, idmap.gid_base)
    finally:
        os.close(fd)


def police_all(bundle: str, network: dict[str, Any], undo: ExitStack) -> None:
    """Every bridged NIC's firewall rules, before the init exists (the start's part that needs no
    namespace: done before the runtime forks, the spawner's memory is not yet shared copy-on-write
    with a child, so libnftables' work costs ~0.6 ms, not the ~4.5 ms it took after the fork),
    recorded in the bundle first; `undo` gets their removal. `plug_all(..., policed=True)` then."""
    if not network.get("nics"):
        return
    nets, nics = _plans(network)
    fw = _plumbing(network["table"])
    undo.callback(_forget, bundle)
    _save(bundle, network["table"], nets, nics)  # recorded first: a crash from here on is undone too
    for nic in nics:
        with ExitStack() as one:
            fw.police(nets.get(nic.network or ""), nic, one)
            undo.push(one.pop_all())


def plug_all(bundle: str, network: dict[str, Any], pid: int, undo: ExitStack, policed: bool = False) -> None:
    """Plug every NIC into the netns of `pid`, recording each in the bundle as it goes; `undo`
    gets the unplug of everything this made. `policed`: `police_all` made the firewall rules."""
    if not network.get("nics"):
        return
    mark = _Clock("plug")
    nets, nics = _plans(network)
    fw = _plumbing(network["table"])
    fw.timing = mark if mark.path else None
    mark("plans")
    done: list[NicPlan] = []
    if not policed:
        undo.callback(_forget, bundle)
    for nic in nics:
        if not policed:
            _save(bundle, network["table"], nets, done + [nic])  # recorded first: a crash mid-plug is undone too
            mark("record")
        with ExitStack() as one:
            fw.plug(nets.get(nic.network or ""), nic, pid, one, policed=policed)
            undo.push(one.pop_all())
        done.append(nic)
    mark.done()


def unplug_all(bundle: str) -> None:
    """Unplug what the record says was plugged (what is already gone is fine), then forget it."""
    mark = _Clock("unplug")
    table, _, nics = _load(bundle)
    mark("load")
    if table:
        fw = _plumbing(table)
        fw.timing = mark if mark.path else None
        for nic in reversed(nics):
            fw.unplug(nic)
    _forget(bundle)
    mark("forget")
    mark.done()


def unplug_exited(instances_root: str, name: str) -> None:
    """For jaulad, when an instance's init exited by itself (under the instance's operation lock,
    so no start of it runs meanwhile): its NICs' firewall elements and the ifb of an egress limit
    go now, not at its next start, stop or delete (the veth went with its network namespace). The
    bundle is the container driver's (`<instances>/bundles/<name>`)."""
    from jaula.instances.model import validate_name

    try:
        unplug_all(os.path.join(instances_root, "bundles", validate_name(name)))
    except Exception as exc:  # noqa: BLE001 - the record stays: the next stop or start unplugs again
        log.warning("unplug the NICs of exited instance %s: %s", name, exc)


def update(bundle: str, network: dict[str, Any], config: dict[str, Any], pid: int) -> None:
    """A running instance's NICs made those of `network` (when it says), and the rate limits of
    `config` applied to those plugged."""
    from jaula.network import config as netconfig

    table, nets, plugged = _load(bundle)
    table = table or network.get("table")
    if not table:
        return
    fw = _plumbing(table)
    want_nets, want = _plans(network) if "nics" in network else (nets, plugged)
    nets = {**nets, **want_nets}
    want_names = {n.name for n in want}
    keep: list[NicPlan] = []
    for nic in plugged:
        if nic.name not in want_names or nic != next(w for w in want if w.name == nic.name).replace(
                ingress_kbit=nic.ingress_kbit, egress_kbit=nic.egress_kbit):
            fw.unplug(nic, pid)  # removed, or changed other than its rates: plugged again below
        else:
            keep.append(nic)
    _save(bundle, table, nets, keep)
    for nic in want:
        fields = netconfig.nics(config).get(nic.name, {})
        rated = nic.replace(ingress_kbit=_kbit(fields.get("limits.ingress")),
                            egress_kbit=_kbit(fields.get("limits.egress")))
        old = next((k for k in keep if k.name == nic.name), None)
        if old is None:
            _save(bundle, table, nets, keep + [rated])  # recorded first: a crash mid-plug is undone too
            try:
                with ExitStack() as one:
                    fw.plug(nets.get(rated.network or ""), rated, pid, one)
                    one.pop_all()
            except BaseException:
                _save(bundle, table, nets, keep)  # its own undo ran: not plugged
                raise
            keep.append(rated)
        elif (old.ingress_kbit, old.egress_kbit) != (rated.ingress_kbit, rated.egress_kbit):
            fw.set_rate(rated)
            keep = [rated if k.name == nic.name else k for k in keep]
            _save(bundle, table, nets, keep)


def _kbit(value: str | None) -> int | None:
    from jaula.network import config as netconfig

    return None if value is None else netconfig.rate_kbit(value)


def _save(bundle: str, table: str, nets: dict[str, NetworkPlan], nics: list[NicPlan]) -> None:
    tmp = os.path.join(bundle, "." + RECORD + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"table": table, "networks": [n.as_dict() for n in nets.values()],
                   "nics": [n.as_dict() for n in nics]}, f)
    os.rename(tmp, os.path.join(bundle, RECORD))


def _load(bundle: str) -> tuple[str | None, dict[str, NetworkPlan], list[NicPlan]]:
    try:
        with open(os.path.join(bundle, RECORD)) as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None, {}, []
    nets, nics = _plans(data)
    return data.get("table"), nets, nics


def _forget(bundle: str) -> None:
    for name in (RECORD, "." + RECORD + ".tmp"):
        try:
            os.unlink(os.path.join(bundle, name))
        except FileNotFoundError:
            pass
