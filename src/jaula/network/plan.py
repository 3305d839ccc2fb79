"""What the network layers pass each other: pure records, no kernel calls.

The daemon (IPAM, settings, database) builds these; `jaula.network.links` (interfaces, addresses,
routes), `jaula.network.tc` (rate limits) and `jaula.network.firewall` (nftables) apply them.
Addresses are strings in CIDR form ("10.71.3.7/24", "fd42:71:3::7/64"); a plan is complete:
the appliers choose nothing (no names, no addresses, no MACs).
"""

from __future__ import annotations

from jaula.record import Record

BRIDGED, MACVLAN, NONE = "bridged", "macvlan", "none"
NIC_TYPES = (BRIDGED, MACVLAN, NONE)
ALLOW, ISOLATE = "allow", "isolate"          # traffic between instances of one network
HOST_NONE, HOST_DNS, HOST_ALL = "none", "dns", "all"  # what of the host an instance may reach


class NetworkPlan(Record, frozen=True):
    """A jaulad network: a host bridge with the gateway addresses of its subnets."""
    name: str                      # the network's name in jaulad ("default")
    bridge: str                    # host bridge interface name (<= 15 chars), e.g. "jaulabr0"
    ipv4: str | None = None        # gateway address with prefix, e.g. "10.71.3.1/24"
    ipv6: str | None = None        # gateway address with prefix, e.g. "fd42:71:3::1/64"
    nat: bool = True               # masquerade traffic leaving the subnets for elsewhere
    isolation: str = ALLOW         # ALLOW or ISOLATE: instance to instance on this bridge
    host_access: str = HOST_DNS    # HOST_NONE, HOST_DNS (udp/tcp 53 to the gateway) or HOST_ALL
    mtu: int = 1500


class NicPlan(Record, frozen=True):
    """One NIC of one instance."""
    instance: str                  # the instance's name
    name: str                      # interface name inside the instance, e.g. "eth0"
    type: str                      # BRIDGED or MACVLAN
    host_name: str                 # host-side veth name (BRIDGED; <= 15 chars, e.g. "jv3f9a1c02"), or
                                   # the temporary name of the macvlan before it moves in
    parent: str                    # the bridge (BRIDGED) or the host interface (MACVLAN)
    mac: str                       # "02:..." stable across restarts
    network: str | None = None     # NetworkPlan.name for BRIDGED NICs
    mtu: int = 1500
    ipv4: tuple[str, ...] = ()     # addresses with prefix
    ipv6: tuple[str, ...] = ()
    gateway4: str | None = None    # default route via (no prefix); None: no IPv4 default route
    gateway6: str | None = None
    routes: tuple[tuple[str, str], ...] = ()   # extra (destination CIDR, via) routes
    ingress_kbit: int | None = None  # rate limit of traffic into the instance (kbit/s); None: none
    egress_kbit: int | None = None   # of traffic out of the instance


class PortForward(Record, frozen=True):
    """Host address and port to an instance's address and port."""
    instance: str
    proto: str                     # "tcp" or "udp"
    host_port: int
    address: str                   # the instance's address (no prefix)
    port: int
    host_address: str | None = None  # None: every host address
