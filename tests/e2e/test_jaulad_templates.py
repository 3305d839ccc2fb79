"""jaulad end to end, templates and host capacity: a busybox template built through the API (an
operation the CLI follows), listed, used, refused deletion while used; `jaula host` shows this
host's figures and a start past the memory ratio is refused saying by how much."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from jaula.daemon.host import meminfo
from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root


def run(d: Daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*JAULA, "--socket", str(d.socket), *args], check=False, capture_output=True,
                          text=True, timeout=120)


def test_templates_and_host_capacity(daemon: Daemon) -> None:  # noqa: F811
    daemon.start()
    out = daemon.jaula("template", "build", "bb", "busybox")
    assert out.startswith("Template bb built from busybox"), out
    assert (daemon.root / "templates" / "bb" / "template.json").is_file()
    listed = daemon.jaula("template", "list").splitlines()
    assert listed[1].split()[:2] == ["bb", "busybox"], listed

    host = daemon.jaula("host").splitlines()
    assert host[0].split() == ["PHYSICAL", "RATIO", "ALLOWED", "COMMITTED", "USED"]
    total = meminfo()["MemTotal"]
    too_much = f"{total // (1 << 20) + 1024}MiB"
    r = run(daemon, "launch", "bb", "big", "-c", f"limits.memory={too_much}")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "starting big would commit" in r.stderr and "over; lower limits.memory" in r.stderr
    # refused before anything was made: no row, no volume
    assert json.loads(daemon.jaula("list", "--format", "json")) == []
    assert os.listdir(daemon.root / "pools/default/volumes") == []
    daemon.jaula("create", "bb", "big", "-c", f"limits.memory={too_much}")  # made, not started: allowed

    r = run(daemon, "template", "delete", "bb")
    assert r.returncode == 6 and "big" in r.stderr
    daemon.jaula("delete", "big")
    assert daemon.jaula("template", "delete", "bb") == "Template bb deleted\n"
    assert not (daemon.root / "templates" / "bb").exists()
    daemon.kill(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.logs()
