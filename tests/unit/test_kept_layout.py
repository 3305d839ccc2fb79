"""jaula.oci.create.kept_layout: the cgroup layout probed once per process while it holds."""

from __future__ import annotations

from jaula.cgroups.layout import probe
from jaula.oci import create


def test_kept_while_unchanged(monkeypatch) -> None:
    monkeypatch.setattr(create, "_kept", None)
    first = create.kept_layout()
    assert first == probe()
    assert create.kept_layout() is first  # nothing changed: not probed again


def test_probed_again_when_our_cgroups_or_the_mounts_differ(monkeypatch) -> None:
    stale = probe()  # equal to the real one, but not the one kept_layout would make
    monkeypatch.setattr(create, "_kept", None)
    create.kept_layout()
    key = create._kept[0]
    # as if we had been in other cgroups, or a hierarchy had been mounted on another device
    for other in ((b"0::/elsewhere\n", *key[1:]), (*key[:3], (("x", 1),))):
        monkeypatch.setattr(create, "_kept", (other, stale))
        got = create.kept_layout()
        assert got is not stale and got == probe()
