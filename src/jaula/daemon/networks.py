"""jaulad's networks: the actions behind networks_api.py's routes and the API's instance hooks.

- networks: made (an "auto" subnet picked to overlap none of the host's routes nor another
  network's, the bridge named from the daemon's root), changed, deleted (refused while used);
  their bridges and firewall rules made again at jaulad's start (`ensure_all`);
- an instance's NICs (`nic.<name>.*`): a new instance with none gets `eth0` on the `default`
  network (made on first use), as Incus's default profile gives; addresses allocated in the
  transaction that writes the instance's config (`allocate`), kept while the NIC stays on its
  network, freed with the instance; the complete plans handed to the driver with the instance
  (`instance_network`: Instance.network), which plugs them between its init's create and start;
- port forwards, stored and applied to the firewall together.

Without a host side (the backend has no `network`: the API's unit tests' fake backend) networks
are still stored, but instances get no default NIC and nothing is applied.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Iterator
from typing import Any

from jaula.daemon.network_forwards import ForwardActions
from jaula.daemon.network_tables import AddressRow, NetworkRow
from jaula.errors import BadState, ConfigError, Exists, JaulaError, NotFound
from jaula.network import config as netconfig
from jaula.network import ipam
from jaula.network.dns import (
    host_nameservers,
    hosts_file,
    managed_resolv_conf,
    resolv_conf,
)
from jaula.network.plan import BRIDGED, MACVLAN, NetworkPlan, NicPlan

log = logging.getLogger("jaula.networks")
#: the description of the default network made on first use: it goes with its last instance
AUTO_DESCRIPTION = "made on first use: removed with its last instance"


class NetworkService(ForwardActions):
    def __init__(self, svc: Any) -> None:
        self.svc = svc                     # api._Service: expanded configs, instances, the backend
        self.db = svc.db
        self.plumbing = getattr(svc.backend, "network", None)
        self.tag: str = getattr(svc.backend, "network_tag", "")
        self.dns: Any = None               # jaulad's DnsService (dns_service.py), once its loop runs

    @property
    def enabled(self) -> bool:
        return self.plumbing is not None

    def _event(self, type_: str, payload: dict[str, Any]) -> None:
        """A lifecycle event, through the API's event bus where it has one."""
        bus = getattr(self.svc, "events", None)
        if bus is not None and hasattr(bus, "lifecycle"):
            bus.lifecycle(type_, payload)
        else:
            self.db.add_event(type_, payload)

    # -- networks ------------------------------------------------------------------------------
    def plan(self, row: NetworkRow) -> NetworkPlan:
        return netconfig.network_plan(row.name, row.config)

    def create(self, name: str, config: dict[str, Any], description: str = "") -> NetworkRow:
        from jaula.daemon.models import validate_name

        validate_name(name, "Network")
        cfg = self._resolve(name, netconfig.validate_network(config, f"Network {name!r}"))
        # the row and the host side together, under the database's write lock (the one lock taken
        # around host-side calls: an allocation that makes the default network holds it already)
        with self.db.transaction():
            row = self.db.create_network(NetworkRow(name=name, description=description, config=cfg))
            if self.enabled:
                _host(f"Network {name!r}", self.plumbing.ensure_network, self.plan(row))
        self._event("network-created", {"name": name})
        self._dns_refresh()
        return row

    def _resolve(self, name: str, cfg: dict[str, str], exclude: str | None = None) -> dict[str, str]:
        """"auto" subnets picked, the bridge named; an explicit subnet checked against the others."""
        cfg = dict(cfg)
        others = [n for n in self.db.list_networks() if n.name != (exclude or name)]
        taken = [str(ipaddress.ip_interface(v).network) for n in others
                 for k, v in n.config.items() if k in ("ipv4.address", "ipv6.address") and "/" in v]
        old = next((n.config for n in self.db.list_networks() if n.name == exclude), {}) if exclude else {}
        for key, family in (("ipv4.address", 4), ("ipv6.address", 6)):
            value = cfg.get(key, netconfig.AUTO)
            if value == netconfig.AUTO:
                routes = self.plumbing.host_routes() if self.enabled else []
                pick = ipam.pick_ipv4_subnet if family == 4 else ipam.pick_ipv6_subnet
                cfg[key] = pick(routes + taken, seed=f"{self.tag}/{name}")
            elif value != netconfig.OFF:
                clash = [t for t in taken if ipam.overlaps(t, value)]
                if clash:
                    raise ConfigError(f"Network {name!r}: {key} {value} overlaps another network's subnet "
                                      f"{clash[0]}: pick another, or auto")
                # a subnet the host already routes (its uplink's, another bridge's) would take its
                # traffic: refused before the bridge exists (the network's own, unchanged, is its route)
                if self.enabled and value != old.get(key):
                    mine = {str(ipaddress.ip_interface(v).network) for k, v in old.items()
                            if k in ("ipv4.address", "ipv6.address") and "/" in v}
                    used = [r for r in self.plumbing.host_routes() if r not in mine and ipam.overlaps(r, value)]
                    if used:
                        raise ConfigError(f"Network {name!r}: {key} {value} overlaps the host's route or "
                                          f"address {used[0]}: pick another, or auto")
        cfg.setdefault("bridge", ipam.default_bridge(self.tag, name))
        return cfg

    def update(self, name: str, changes: dict[str, Any], description: str | None = None) -> NetworkRow:
        old = self.db.get_network(name)
        merged = dict(old.config)
        for k, v in changes.items():
            if v is None or v == "":
                merged.pop(k, None)
            else:
                merged[k] = v
        cfg = self._resolve(name, netconfig.validate_network(merged, f"Network {name!r}"), exclude=name)
        moved = [k for k in netconfig.FIXED_WHILE_USED if cfg.get(k) != old.config.get(k)]
        if moved and (users := self.users(name)):
            raise BadState(f"Network {name!r}: {', '.join(moved)} cannot change while {', '.join(users)} use it")
        with self.db.transaction():
            row = self.db.update_network(name, description=description, config=cfg)
            if self.enabled:
                if moved:
                    self.plumbing.remove_network(self.plan(old))
                    self.plumbing.ensure_network(self.plan(row))
                else:
                    self.plumbing.update_network(self.plan(row))
        self._event("network-updated", {"name": name})
        self._dns_refresh()
        return row

    def delete(self, name: str) -> None:
        row = self.db.get_network(name)
        if users := self.users(name):
            raise BadState(f"Network {name!r} is used by {', '.join(users)}: remove their NICs on it "
                           "(jaula nic remove), or delete them, first")
        # the row goes first, under the write lock: an instance allocating an address on it meanwhile
        # makes the delete fail (BadState) before the bridge is touched
        with self.db.transaction():
            self.db.delete_network(name)
            if self.enabled:
                _host(f"Network {name!r}", self.plumbing.remove_network, self.plan(row))
                if not self.db.list_networks():
                    _host("The firewall table", self.plumbing.destroy)  # the last network: the table too
        self._event("network-deleted", {"name": name})
        self._dns_refresh()

    def _dns_refresh(self) -> None:
        """The managed DNS listeners follow the stored networks (dns_service.py)."""
        if self.dns is not None:
            self.dns.refresh()

    def collect(self) -> None:
        """After an instance's delete: the default network made on first use goes with its last
        instance (a network made by hand stays), and with the last network the daemon's table."""
        if not self.enabled:
            return
        try:
            row = self.db.get_network(netconfig.DEFAULT_NETWORK)
        except NotFound:
            return
        if row.description == AUTO_DESCRIPTION and not self.users(row.name):
            try:
                self.delete(row.name)
            except (BadState, NotFound):
                pass  # taken by a new instance meanwhile

    @contextlib.contextmanager
    def first_use(self) -> Iterator[None]:
        """Around a change that may make the default network (check_networks, allocate): when the
        change then fails (a static address outside its subnet...), the network goes with it."""
        try:
            yield
        except BaseException:
            try:
                self.collect()
            except Exception as exc:  # noqa: BLE001 - the change's own error is the one to report
                log.error("removing the default network made for a failed change: %s", exc)
            raise

    def users(self, name: str) -> list[str]:
        """Instances with an address on the network or a NIC naming it."""
        found = set(self.db.address_users(name))
        for row in self.db.list_instances():
            try:
                cfg = self.svc.expanded(row.profiles, row.config)
            except ConfigError:
                continue
            if any(f.get("network") == name for f in netconfig.nics(cfg).values() if f["type"] == BRIDGED):
                found.add(row.name)
        return sorted(found)

    def ensure_all(self) -> None:
        """At jaulad's start: every network's bridge and rules, and every forward (idempotent)."""
        if not self.enabled:
            return
        for row in self.db.list_networks():
            try:
                self.plumbing.ensure_network(self.plan(row))
            except Exception as exc:  # noqa: BLE001 - one broken network must not stop the daemon
                log.error("network %s: %s", row.name, exc)
        for f in self.db.forwards():
            try:
                self.plumbing.add_forward(self._forward_plan(f))
            except Exception as exc:  # noqa: BLE001
                log.error("forward %s %s of %s: %s", f.proto, f.host_port, f.instance, exc)

    def _default(self) -> NetworkRow:
        """The default network, made on first use."""
        try:
            return self.db.get_network(netconfig.DEFAULT_NETWORK)
        except NotFound:
            pass
        try:
            log.info("creating the default network")
            return self.create(netconfig.DEFAULT_NETWORK, {}, AUTO_DESCRIPTION)
        except Exists:
            return self.db.get_network(netconfig.DEFAULT_NETWORK)
        except JaulaError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise type(exc)(f"{exc} (making the default network for an instance's eth0; an instance without "
                            "a NIC: -c nic.eth0.type=none)") from exc

    # -- instances' NICs ---------------------------------------------------------------------------
    def prepare(self, own: dict[str, Any], expanded: dict[str, Any]) -> dict[str, Any]:
        """A new instance's own config: eth0 on the default network when nothing names a NIC (and it
        is not on the host's network); the networks its NICs name checked (default made)."""
        if not self.enabled:
            return own
        if expanded.get("network.mode") == "host":
            log.warning("an instance on the host's network: its root is root of the host's network stack")
            return own
        if not any(k.startswith("nic.") for k in expanded):
            own = {**own, "nic.eth0.network": netconfig.DEFAULT_NETWORK}
            expanded = {**expanded, "nic.eth0.network": netconfig.DEFAULT_NETWORK}
        self.check_networks(expanded)
        return own

    def check_networks(self, expanded: dict[str, Any]) -> None:
        problems = []
        for nic, f in netconfig.nics(expanded).items():
            if f["type"] == MACVLAN and self.enabled and not os.path.exists(f"/sys/class/net/{f['parent']}"):
                problems.append(f"nic.{nic}.parent: the host has no interface {f['parent']!r}: "
                                f"use one of {', '.join(sorted(os.listdir('/sys/class/net')))}")
            if f["type"] != BRIDGED:
                continue
            if f["network"] == netconfig.DEFAULT_NETWORK and self.enabled:
                self._default()
                continue
            try:
                self.db.get_network(f["network"])
            except NotFound:
                problems.append(f"nic.{nic}.network: network {f['network']!r} not found: create it first "
                                f"(jaula network create {f['network']}), or use default")
        if problems:
            raise ConfigError(problems)

    def allocate(self, name: str) -> None:
        """Make the instance's stored addresses those of its NICs now (inside the caller's
        transaction): an automatic address kept while its NIC stays on its network, a static
        one checked against the subnet, the rest freed; forwards follow a changed address."""
        row = self.db.get_instance(name)
        cfg = self.svc.expanded(row.profiles, row.config)
        before = {(a.nic, a.family): a for a in self.db.addresses(instance=name)}
        rows: list[AddressRow] = []
        problems: list[str] = []
        for nic, f in netconfig.nics(cfg).items():
            if f["type"] != BRIDGED:
                continue
            try:
                net = self.db.get_network(f["network"])
            except NotFound:
                if f["network"] == netconfig.DEFAULT_NETWORK and self.enabled:
                    net = self._default()  # collected meanwhile by the delete of its last instance
                else:
                    problems.append(f"nic.{nic}.network: network {f['network']!r} not found: create it first")
                    continue
            plan = self.plan(net)
            for family, gw in ((4, plan.ipv4), (6, plan.ipv6)):
                want = f.get(f"ipv{family}", netconfig.AUTO)
                if gw is None:
                    if want not in (netconfig.AUTO, netconfig.OFF):
                        problems.append(f"nic.{nic}.ipv{family}: network {net.name!r} has no IPv{family} subnet")
                    continue
                if want == netconfig.OFF:
                    continue
                if want != netconfig.AUTO:
                    try:
                        ipam.check_in_subnet(want, gw)
                    except ConfigError as exc:
                        problems.append(f"nic.{nic}.ipv{family}: {exc}")
                        continue
                    rows.append(AddressRow(net.name, name, nic, family, want))
                    continue
                old = before.get((nic, family))
                if old is not None and old.network == net.name and ipaddress.ip_address(old.address) in \
                        ipaddress.ip_interface(gw).network:
                    rows.append(old)
                    continue
                used = {a.address for a in self.db.addresses(network=net.name) if a.instance != name}
                used |= {r.address for r in rows if r.network == net.name}
                rows.append(AddressRow(net.name, name, nic, family, ipam.next_free(gw, used).split("/")[0]))
        if problems:
            raise ConfigError(problems)
        self.db.set_addresses(name, rows)
        self._follow_forwards(name, before, {(r.nic, r.family): r for r in rows})

    def instance_network(self, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        """What the driver needs to plug the instance's NICs: {"table", "networks", "nics",
        "resolv_conf", "hosts"}; {} without a host side or on the host's network."""
        if not self.enabled or cfg.get("network.mode") == "host":
            return {}
        addrs = {(a.nic, a.family): a.address for a in self.db.addresses(instance=name)}
        if self._unallocated(cfg, addrs):  # made by a copy, an import or a restore: allocated now
            with self.db.transaction():
                self.allocate(name)
            addrs = {(a.nic, a.family): a.address for a in self.db.addresses(instance=name)}
        nets: dict[str, NetworkPlan] = {}
        nics: list[NicPlan] = []
        for nic, f in netconfig.nics(cfg).items():
            if not netconfig.in_use(f):
                continue
            common: dict[str, Any] = {
                "instance": name, "name": nic, "type": f["type"], "host_name": ipam.veth_name(self.tag, name, nic),
                "mac": f.get("mac") or ipam.stable_mac(self.tag, name, nic),
                "routes": netconfig.parse_routes(f.get("routes")),
                "ingress_kbit": _kbit(f.get("limits.ingress")), "egress_kbit": _kbit(f.get("limits.egress"))}
            if f["type"] == MACVLAN:
                v4 = [f"{f['ipv4']}/32"] if f.get("ipv4") not in (None, netconfig.OFF) else []
                v6 = [f"{f['ipv6']}/128"] if f.get("ipv6") not in (None, netconfig.OFF) else []
                nics.append(NicPlan(**common, parent=f["parent"], mtu=int(f.get("mtu") or netconfig.DEFAULT_MTU),
                                    ipv4=tuple(v4), ipv6=tuple(v6)))
                continue
            net = nets.get(f["network"]) or self.plan(self.db.get_network(f["network"]))
            nets[net.name] = net
            a4, a6 = addrs.get((nic, 4)), addrs.get((nic, 6))
            nics.append(NicPlan(
                **common, parent=net.bridge, network=net.name, mtu=int(f.get("mtu") or net.mtu),
                ipv4=(_with_prefix(a4, net.ipv4),) if a4 and net.ipv4 else (),
                ipv6=(_with_prefix(a6, net.ipv6),) if a6 and net.ipv6 else (),
                # one default route per family: through the first NIC (by name) that has an address
                gateway4=net.ipv4.split("/")[0] if a4 and net.ipv4 and not any(n.gateway4 for n in nics) else None,
                gateway6=net.ipv6.split("/")[0] if a6 and net.ipv6 and not any(n.gateway6 for n in nics) else None))
        if not nics:
            return {"table": self._table(), "networks": [], "nics": []}
        first = next((n for n in nics if n.network), None)
        dns = self.db.get_network(first.network).config if first else {}
        if first and netconfig.dns_mode(dns) == netconfig.DNS_MANAGED:   # jaulad answers on its gateway
            resolv = managed_resolv_conf(netconfig.dns_domain(dns) or netconfig.DEFAULT_DOMAIN,
                                         [g for g in (nets[first.network].ipv4, nets[first.network].ipv6) if g])
        else:
            resolv = resolv_conf(host_nameservers(), dns.get("dns.nameservers"), dns.get("dns.domain"),
                                 nets[first.network].ipv4 if first and nets[first.network].ipv4 else None)
        return {"table": self._table(), "networks": [n.as_dict() for n in nets.values()],
                "nics": [n.as_dict() for n in nics],
                "resolv_conf": resolv,
                "hosts": hosts_file(name, [a for n in nics for a in n.ipv4 + n.ipv6])}

    def _unallocated(self, cfg: dict[str, Any], addrs: dict[tuple[str, int], str]) -> bool:
        """Whether a bridged NIC that should have an address of a family has none stored."""
        for nic, f in netconfig.nics(cfg).items():
            if f["type"] != BRIDGED:
                continue
            try:
                plan = self.plan(self.db.get_network(f["network"]))
            except NotFound:
                return True
            for family, gw in ((4, plan.ipv4), (6, plan.ipv6)):
                if gw and f.get(f"ipv{family}", netconfig.AUTO) != netconfig.OFF and (nic, family) not in addrs:
                    return True
        return False

    def _table(self) -> str:
        return getattr(self.plumbing, "table", ipam.table_name(self.tag))

    # -- live NICs ---------------------------------------------------------------------------------
    def set_nic(self, name: str, nic: str, fields: dict[str, str] | None) -> None:
        """Add or change NIC `nic` of the instance (`fields`: its nic.<nic>.* keys without the
        prefix), or remove it (None); a running instance's NICs follow at once."""
        from jaula.daemon.api import _validated

        try:  # before it becomes part of the keys ("../e" would name NIC "" and field "/e.type")
            ipam.check_ifname(nic, "NIC name")
        except ValueError as exc:
            raise ConfigError(f"Instance {name!r}: {exc}") from None
        row = self.db.get_instance(name)
        prefix = f"nic.{nic}."
        own = {k: v for k, v in row.config.items() if not k.startswith(prefix)}
        if fields is None:
            if not any(k.startswith(prefix) for k in self.svc.expanded(row.profiles, row.config)):
                raise NotFound(f"Instance {name!r} has no NIC {nic!r}: `jaula nic list {name}` shows its NICs")
            if any(k.startswith(prefix) for p in row.profiles for k in self.db.get_profile(p).config):
                own[prefix + "type"] = "none"   # a profile's NIC: turned off here
        else:
            own.update({prefix + k: v for k, v in fields.items()})
        own_norm = _validated(own, f"Instance {name!r}")
        expanded = self.svc.expanded(row.profiles, own_norm)
        with self.first_use():
            self._set_nic(name, nic, fields, row, own_norm, expanded)
        self._event("instance-updated", {"name": name, "nic": nic})

    def _set_nic(self, name: str, nic: str, fields: dict[str, str] | None, row: Any, own_norm: dict[str, Any],
                 expanded: dict[str, Any]) -> None:
        from jaula.daemon.api import _canonical

        self.check_networks(expanded)
        running = row.status in ("running", "frozen")
        with self.db.transaction():
            if fields is None:
                for f in self.db.forwards(instance=name):
                    if f.nic == nic:
                        self.db.delete_forward(f.id)
                        if self.enabled:
                            self.plumbing.remove_forward(self._forward_plan(f))
            self.db.replace_config(name, _canonical(own_norm))
            self.allocate(name)
            if running:
                inst = self.svc.instance(self.db.get_instance(name))
                self.svc.backend.update(inst, inst.config)

    def nics_of(self, name: str) -> list[dict[str, Any]]:
        """The instance's NICs as configured, with their addresses, MAC and host interface."""
        row = self.db.get_instance(name)
        cfg = self.svc.expanded(row.profiles, row.config)
        addrs = {(a.nic, a.family): a for a in self.db.addresses(instance=name)}
        out = []
        for nic, f in netconfig.nics(cfg).items():
            a4, a6 = addrs.get((nic, 4)), addrs.get((nic, 6))
            out.append({"name": nic, "type": f["type"], "network": f.get("network"),
                        "parent": f.get("parent"),
                        "mac": f.get("mac") or ipam.stable_mac(self.tag, name, nic),
                        "host_name": ipam.veth_name(self.tag, name, nic) if f["type"] != "none" else None,
                        "ipv4": a4.address if a4 else None, "ipv6": a6.address if a6 else None,
                        "config": {k: v for k, v in f.items()}})
        return out


def _host(what: str, fn: Any, *args: Any) -> None:
    """A host-side step; an error that is not jaula's own says what it was doing."""
    try:
        fn(*args)
    except JaulaError:
        raise
    except Exception as exc:
        raise JaulaError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _kbit(value: str | None) -> int | None:
    return None if value is None else netconfig.rate_kbit(value)


def _with_prefix(address: str, gateway: str) -> str:
    return f"{address}/{gateway.split('/')[1]}"
