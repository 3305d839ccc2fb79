"""`jaula network create|list|show|set|delete`, `jaula network forward add|remove|list` and
`jaula nic add|remove|list`, registered on the CLI's group by `register` (main.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from jaula.cli.output import emit, format_option

NETWORK_KEYS_HELP = ("ipv4.address (10.71.3.1/24|auto|none), ipv6.address, ipv4.nat, ipv6.nat, isolation "
                     "(allow|isolate), host_access (none|dns|all), dns.mode (managed|host), dns.nameservers, "
                     "dns.domain, mtu, bridge")
NIC_KEYS_HELP = ("type (bridged|macvlan|none), network, parent, ipv4 (auto|none|ADDRESS), ipv6, mac, mtu, "
                 "limits.ingress, limits.egress (e.g. 10Mbit), routes (DEST via GW,...)")


def _pairs(values: tuple[str, ...], example: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write KEY=VALUE, e.g. {example}")
        out[key.strip()] = value
    return out


def add_addresses(client: Any, instances: list[dict[str, Any]]) -> None:
    """Each instance's IPv4 addresses as "ipv4": "10.71.3.2 (eth0)" (for `jaula list`)."""
    found: dict[str, list[str]] = {}
    for a in client.network_addresses():
        if a["family"] == 4:
            found.setdefault(a["instance"], []).append(f"{a['address']} ({a['nic']})")
    for inst in instances:
        inst["ipv4"] = ", ".join(found.get(inst["name"], []))


def register(cli: click.Group, client: Callable[[click.Context], Any], group_cls: type[click.Group]) -> None:
    @cli.group(cls=group_cls)
    def network() -> None:
        """Networks: host bridges with their subnets, NAT and firewall; instances' NICs join them."""

    @network.command("create")
    @click.argument("name")
    @click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE", help=f"keys: {NETWORK_KEYS_HELP}")
    @click.option("--description", default="")
    @click.pass_context
    def network_create(ctx: click.Context, name: str, config: tuple[str, ...], description: str) -> None:
        """Create network NAME (subnets picked when unset: none that the host's routes use)."""
        net = client(ctx).create_network(name, _pairs(config, "ipv4.address=10.71.3.1/24"), description)
        cfg = net["config"]
        click.echo(f"Network {name} created: bridge {cfg.get('bridge')}, IPv4 {cfg.get('ipv4.address')}, "
                   f"IPv6 {cfg.get('ipv6.address')}")

    @network.command("list")
    @format_option
    @click.pass_context
    def network_list(ctx: click.Context, fmt: str) -> None:
        """List the networks."""
        nets = client(ctx).networks()
        emit(fmt, nets, ("NAME", "BRIDGE", "IPV4", "IPV6", "USED BY", "DESCRIPTION"),
             [(n["name"], n["config"].get("bridge", ""), n["config"].get("ipv4.address", ""),
               n["config"].get("ipv6.address", ""), ",".join(n["used_by"]), n["description"]) for n in nets])

    @network.command("show")
    @click.argument("name")
    @click.pass_context
    def network_show(ctx: click.Context, name: str) -> None:
        """Show a network: its settings and the instances on it."""
        import yaml
        click.echo(yaml.safe_dump(client(ctx).network(name), sort_keys=False), nl=False)

    @network.command("set")
    @click.argument("name")
    @click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
    @click.pass_context
    def network_set(ctx: click.Context, name: str, pairs: tuple[str, ...]) -> None:
        """Change a network's settings (KEY= unsets one); its subnets and bridge only while unused."""
        client(ctx).update_network(name, {k: (v or None) for k, v in _pairs(pairs, "isolation=isolate").items()})
        click.echo(f"Network {name} updated")

    @network.command("delete")
    @click.argument("names", nargs=-1, required=True)
    @click.pass_context
    def network_delete(ctx: click.Context, names: tuple[str, ...]) -> None:
        """Delete networks (refused while instances use them): their bridges and rules go."""
        for name in names:
            client(ctx).delete_network(name)
            click.echo(f"Network {name} deleted")

    @network.group("forward", cls=group_cls)
    def forward() -> None:
        """Port forwards: a host port to an instance's port, TCP or UDP."""

    @forward.command("add")
    @click.argument("network_name", metavar="NETWORK")
    @click.argument("instance")
    @click.argument("host_port", type=int)
    @click.argument("port", type=int)
    @click.option("--proto", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
    @click.option("--host-address", default="", help="one host address (default: every one)")
    @click.option("--nic", default=None, help="the instance's NIC on the network (default: its first)")
    @click.pass_context
    def forward_add(ctx: click.Context, network_name: str, instance: str, host_port: int, port: int, proto: str,
                    host_address: str, nic: str | None) -> None:
        """Forward HOST_PORT of the host to PORT of INSTANCE (its address on NETWORK)."""
        client(ctx).add_forward(network_name, instance, host_port, port, proto=proto, host_address=host_address,
                                nic=nic)
        click.echo(f"Forward {proto} {host_address or '*'}:{host_port} -> {instance}:{port} added")

    @forward.command("remove")
    @click.argument("network_name", metavar="NETWORK")
    @click.argument("host_port", type=int)
    @click.option("--proto", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
    @click.option("--host-address", default="")
    @click.pass_context
    def forward_remove(ctx: click.Context, network_name: str, host_port: int, proto: str, host_address: str) -> None:
        """Remove the forward of HOST_PORT on NETWORK."""
        client(ctx).remove_forward(network_name, host_port, proto=proto, host_address=host_address)
        click.echo(f"Forward {proto} {host_address or '*'}:{host_port} removed")

    @forward.command("list")
    @click.argument("network_name", metavar="NETWORK")
    @format_option
    @click.pass_context
    def forward_list(ctx: click.Context, network_name: str, fmt: str) -> None:
        """List a network's port forwards."""
        found = client(ctx).forwards(network_name)
        emit(fmt, found, ("PROTO", "HOST ADDRESS", "HOST PORT", "INSTANCE", "NIC", "PORT"),
             [(f["proto"], f["host_address"] or "*", str(f["host_port"]), f["instance"], f["nic"], str(f["port"]))
              for f in found])

    @cli.group(cls=group_cls)
    def nic() -> None:
        """An instance's NICs; a running instance's are plugged and unplugged at once."""

    @nic.command("add", help=f"Add NIC NAME (e.g. eth1) to INSTANCE, bridged on network default unless KEY=VALUE "
                             f"pairs say otherwise; keys: {NIC_KEYS_HELP}")
    @click.argument("instance")
    @click.argument("name")
    @click.argument("pairs", nargs=-1, metavar="[KEY=VALUE...]")
    @click.pass_context
    def nic_add(ctx: click.Context, instance: str, name: str, pairs: tuple[str, ...]) -> None:
        got = client(ctx).add_nic(instance, name, _pairs(pairs, "network=default"))
        new = next((n for n in got if n["name"] == name), {})
        click.echo(f"NIC {name} added to {instance}" + (f": {new['ipv4']}" if new.get("ipv4") else ""))

    @nic.command("remove")
    @click.argument("instance")
    @click.argument("name")
    @click.pass_context
    def nic_remove(ctx: click.Context, instance: str, name: str) -> None:
        """Remove NIC NAME of INSTANCE (its addresses and forwards are freed)."""
        client(ctx).remove_nic(instance, name)
        click.echo(f"NIC {name} removed from {instance}")

    @nic.command("list")
    @click.argument("instance")
    @format_option
    @click.pass_context
    def nic_list(ctx: click.Context, instance: str, fmt: str) -> None:
        """List INSTANCE's NICs with their addresses and MACs."""
        found = client(ctx).nics(instance)
        emit(fmt, found, ("NAME", "TYPE", "NETWORK", "IPV4", "IPV6", "MAC", "HOST IFACE"),
             [(n["name"], n["type"], n["network"] or n["parent"] or "", n["ipv4"] or "", n["ipv6"] or "",
               n["mac"], n["host_name"] or "") for n in found])
