"""Shared fixtures: the built test assets, the jaula-runtime launcher with a private --root, bundles.

Everything a test makes lives under its tmp_path (pytest's folder under /tmp); containers left
behind are force-deleted and the state folder removed when the test ends.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bundle import ROOTFS, assets_missing, make_bundle
from tests.support.runtime import LAUNCHER, Runtime


def pytest_configure(config: pytest.Config) -> None:
    # Run from a shell without job control in the background (`.ci/run &`), pytest starts with
    # SIGINT ignored, and every process a test starts inherits that across exec: the tests that
    # press Ctrl-C on `jaula` (its operation cancelled) would then see nothing happen. A test run
    # is no background job of anyone's: Ctrl-C's default, for us and what we start.
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (marked 'root')")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def rootfs_dir() -> Path:
    """The built busybox root (read-only by convention: copy it, as `bundle` does)."""
    if why := assets_missing():
        pytest.skip(why)
    return ROOTFS


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """The jaula-runtime launcher with a fresh --root and JAULA_ROOT under tmp_path.

    Call it like the command: `runtime("state", cid)` returns a CompletedProcess;
    `runtime.run(bundle)` runs a container in the foreground.
    """
    if not os.access(LAUNCHER, os.X_OK):
        pytest.skip(f"{LAUNCHER} missing: run scripts/setup")
    env = dict(os.environ, JAULA_ROOT=str(tmp_path / "jaula"))
    rt = Runtime(path=LAUNCHER, root=tmp_path / "runtime-root", env=env)
    yield rt
    rt.cleanup()


@pytest.fixture
def bundle(tmp_path: Path, rootfs_dir: Path) -> Iterator[Callable[..., Path]]:
    """Factory: `bundle(args=[...], **overrides)` writes a new bundle under tmp_path and returns it."""
    made: list[Path] = []

    def factory(args: list[str] | None = None, **overrides: Any) -> Path:
        path = tmp_path / (f"bundle-{len(made) + 1}" if made else "bundle")
        made.append(make_bundle(path, args, rootfs=rootfs_dir, **overrides))
        return path

    yield factory
    for path in made:  # the rootfs copies are the bulk; keep config.json for a post-mortem
        shutil.rmtree(path / "rootfs", ignore_errors=True)
