"""Incus's way to restore a snapshot on a real jaulad (the `daemon` fixture of test_jaulad.py):
PUT /1.0/instances/{name} {"restore": "snap"} brings back the root and the settings of a stopped
instance, and stops, restores and starts again a running one."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from jaula.client import Client
from tests.e2e.test_jaulad import Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root


def test_put_restore(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    upper = d.root / "pools/default/volumes/r1/upper"
    with Client(str(d.socket), timeout=60) as c:
        c.create("busybox", "r1", config={"nic.eth0.type": "none", "user.note": "first"})
        (upper / "f").write_text("one\n")
        c.create_snapshot("r1", "s1")
        (upper / "f").write_text("two\n")
        c.update("r1", config={"user.note": "second"})

        op = c.wait_operation(c.request("PUT", "/1.0/instances/r1", json={"restore": "s1"})["metadata"]["id"])
        assert op["status"] == "success", op
        assert (upper / "f").read_text() == "one\n" and c.get("r1")["config"]["user.note"] == "first"
        assert (upper / "etc/hostname").read_text() == "r1\n"

        c.start("r1")
        d.note("r1")
        rootfs: Path = d.root / "instances/bundles/r1/rootfs"
        (rootfs / "f").write_text("three\n")
        pid = c.get("r1")["pid"]
        op = c.wait_operation(c.request("PUT", "/1.0/instances/r1", json={"restore": "s1"})["metadata"]["id"])
        assert op["status"] == "success" and op["metadata"]["pid"] != pid, op
        d.note("r1")  # running again, on the restored root
        assert (rootfs / "f").read_text() == "one\n"
        c.stop("r1", force=True)
        c.delete("r1")
    d.kill(signal.SIGTERM)
    assert not d.leaks(), d.leaks()
