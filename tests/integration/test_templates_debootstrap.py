"""A real debootstrap of Debian bookworm from the mirror in apt's sources (about a minute, network),
then the same template again from the cache: a local untar giving the same tree.

Marked `slow`, so deselected by default: `.venv/bin/python -m pytest -m slow tests/integration/test_templates_debootstrap.py`
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_templates_real import assert_same_tree

from jaula.storage import TemplateStore
from jaula.storage.templates import host_arch, os_release

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]


def test_debootstrap_bookworm_then_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap")
    monkeypatch.setenv("JAULA_ROOT", str(tmp_path / "jaula"))
    store = TemplateStore()
    stages: list[str] = []
    t0 = time.monotonic()
    first = store.build("deb12", "debootstrap", release="bookworm", progress=lambda s, d, t: stages.append(s))
    downloaded = time.monotonic() - t0
    release = os_release(first.rootfs)
    assert (release["ID"], release["VERSION_ID"], release["VERSION_CODENAME"]) == ("debian", "12", "bookworm")
    assert (first.os, first.os_version, first.arch) == ("debian", "12", host_arch())
    assert first.cmd == ["/bin/bash"]  # minbase has no init
    assert first.source.startswith("debootstrap bookworm minbase ") and " from http" in first.source
    assert (first.rootfs / "usr/bin/apt-get").exists() and not (first.rootfs / "debootstrap").exists()
    assert any(s.startswith("debootstrap: ") for s in stages) and "cache" in stages
    cache = store.cache / "debootstrap/bookworm.tar"
    assert cache.stat().st_size > 50 << 20 and (store.cache / "debootstrap/bookworm.json").exists()

    t0 = time.monotonic()
    second = store.build("deb12-again", "debootstrap", release="bookworm")
    from_cache = time.monotonic() - t0
    assert "(cache bookworm.tar of " in second.source
    assert_same_tree(second.rootfs, first.rootfs)
    assert second.size == first.size
    print(f"\ndebootstrap bookworm: {downloaded:.1f} s from the mirror, {from_cache:.1f} s from the cache "
          f"({first.size / 2**20:.0f} MiB)")
    assert from_cache < downloaded

    # and it runs
    from tests.support.bundle import make_bundle

    b = make_bundle(tmp_path / "bundle", ["/bin/bash", "-c", "cat /etc/debian_version; apt-get --version | head -1"],
                    rootfs=second.rootfs)
    out = runtime.run(b, check=True).stdout.splitlines()
    assert out[0].startswith("12.") and out[1].startswith("apt 2.6")
