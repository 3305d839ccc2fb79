"""Cleanup of jaulad's lxcfs for tests that kill jaulad: a killed jaulad leaves its lxcfs
running (its instances read its files: docs/honest-proc.md), so a test's teardown ends it."""

from __future__ import annotations

from pathlib import Path


def end_left_lxcfs(root: Path) -> None:
    """The lxcfs of the jaulad over `root`, if one was left, ended; its mount and files removed."""
    from jaula.daemon.lxcfs import Lxcfs
    from jaula.daemon.spawner_backend import paths

    Lxcfs(str(paths(root)["instances"])).end_left()
