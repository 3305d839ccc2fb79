"""What a test jaulad leaves of its networks, and its removal: its nftables table (named from its
root) and the bridges of the networks in its database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def daemon_network_names(root: Path) -> tuple[str, list[str]]:
    """(the daemon's nft table, the bridges of its networks)."""
    from jaula.network import ipam

    tag = ipam.root_tag(str(Path(root).absolute()))
    bridges: list[str] = []
    db = Path(root) / "jaula.db"
    if db.exists():
        try:
            with sqlite3.connect(db) as conn:
                bridges = [r[0] for r in conn.execute(
                    "SELECT value FROM network_config WHERE key = 'bridge'")]
        except sqlite3.Error:
            pass
    return ipam.table_name(tag), bridges


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def nft_tables() -> set[str]:
    from jaula.network import nft

    return {f"{t['family']} {t['name']}" for t in nft.items(nft.run({"list": {"tables": None}}), "table")}


def remove_daemon_network(root: Path) -> None:
    """Remove a stopped test daemon's table and bridges (what is already gone is fine)."""
    from jaula.network.firewall import Firewall
    from jaula.network.links import remove_bridge
    from jaula.network.plan import NetworkPlan

    table, bridges = daemon_network_names(root)
    for b in bridges:
        try:
            remove_bridge(NetworkPlan(name="x", bridge=b))
        except Exception:  # noqa: BLE001, S110 - best effort in a teardown
            pass
    try:
        Firewall(table=table).destroy()
    except Exception:  # noqa: BLE001, S110
        pass
