"""Names a jaulad takes from its root (daemon/identity.py): the default root keeps the plain
names, another root adds the same short tag to its cgroup parent and its firewall table."""

from __future__ import annotations

from jaula.daemon.identity import cgroup_parent, root_tag, table_name


def test_default_root_keeps_the_plain_names() -> None:
    assert cgroup_parent("/var/lib/jaula") == "jaula" == cgroup_parent("/var/lib/jaula/")
    assert table_name(root_tag("/var/lib/jaula")) == "jaula"


def test_another_root_gets_its_own_tag_for_both() -> None:
    a, b = cgroup_parent("/tmp/a/root"), cgroup_parent("/tmp/b/root")
    assert a != b and a.startswith("jaula-") and len(a) == len("jaula-") + 6
    assert a == f"jaula-{root_tag('/tmp/a/root')}" and table_name(root_tag("/tmp/a/root")) == f"jaula_{a[6:]}"
    assert "/" not in a  # one cgroup level under jaulad's own
