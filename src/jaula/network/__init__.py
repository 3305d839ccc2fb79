"""Networking: bridges, veth and macvlan NICs, addresses and routes (pyroute2), IP allocation,
nftables rules (NAT, port forwards, anti-spoofing, isolation, host protection) and rate limits.

`plan` holds the records the layers pass each other: the daemon computes plans (addresses from
its database), `links` and `tc` make them real on the host and in an instance's network
namespace, `firewall` keeps the nftables ruleset in step.
"""
