"""Names a jaulad takes from its root, so that two jaulads on one host (test daemons over
temporary roots) never share one: the default root (/var/lib/jaula) keeps the plain names,
any other root adds a short hash of its path (`ipam.root_tag`, the one helper for all of them).

    cgroup_parent("/var/lib/jaula") == "jaula"          table_name(root_tag(...)) == "jaula"
    cgroup_parent("/tmp/x/root")    == "jaula-3f09a1"   table_name(root_tag(...)) == "jaula_3f09a1"

The cgroup parent is an OCI cgroupsPath relative to the spawner's cgroup: instances go to
<spawner's cgroup>/<parent>/<name>, and the orphan sweep looks under its own parent only.
"""

from __future__ import annotations

import os

from jaula.network.ipam import root_tag, table_name

__all__ = ["cgroup_parent", "root_tag", "table_name"]


def cgroup_parent(root: str | os.PathLike[str]) -> str:
    """"jaula" for the default root, else "jaula-" and the root's tag."""
    tag = root_tag(os.path.abspath(root))
    return f"jaula-{tag}" if tag else "jaula"
