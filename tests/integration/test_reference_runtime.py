"""The default bundle runs under runc as a reference, so a jaula-runtime failure on it is jaula's."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.runtime import Runtime

pytestmark = pytest.mark.root


@pytest.fixture
def runc(tmp_path: Path) -> Iterator[Runtime]:
    path = shutil.which("runc")
    if path is None:
        pytest.skip("runc not installed: run scripts/setup")
    rt = Runtime(path=Path(path), root=tmp_path / "runc-root")
    yield rt
    rt.cleanup()


def test_default_bundle_under_runc(runc: Runtime, bundle: Callable[..., Path]) -> None:
    info = runc.run_json(bundle(hostname="ref"))
    assert info["pid"] == 1
    assert info["hostname"] == "ref"
    assert info["status"]["NoNewPrivs"] == "1"
    assert set(info["fds"]) == {"0", "1", "2"}
    assert not runc.container_ids()  # run deletes its container


def test_cleanup_removes_a_created_container(runc: Runtime, bundle: Callable[..., Path]) -> None:
    cid = runc.new_id()
    runc("create", "--bundle", bundle(["/usr/bin/probe", "sleep", "60"]), cid, check=True)
    assert runc.state(cid)["status"] == "created"
    runc.cleanup()
    assert not runc.root.exists()
