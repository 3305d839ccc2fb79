"""The README's Python client example runs as written against a real jaulad (over a private
root): it creates, starts, changes a limit live, is refused a bad one with its problem, reads the
beancounters, pushes a file, execs, pulls a file, stops and deletes; nothing is left after it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import test_jaulad as base
from tests.e2e.test_jaulad import Daemon

pytestmark = pytest.mark.root
daemon = base.daemon  # the fixture: a jaulad over a temporary root
README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text().split("## Python client", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_client_example_runs(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    d.start()
    script = tmp_path / "example.py"
    script.write_text(_example())
    env = dict(os.environ, JAULA_SOCKET=str(d.socket))
    r = subprocess.run([sys.executable, str(script)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=env, timeout=240, check=False)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{d.logs()}"
    lines = r.stdout.splitlines()
    status, address = lines[0].split()
    assert status == "running" and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address), lines
    assert "limits.memory: '12XB' is not a size" in lines[1]
    held, maxheld, limit, failcnt = (int(x) for x in lines[2].split())
    assert 0 < held <= maxheld and limit == 512 << 20 and failcnt == 0, lines
    assert lines[3:] == ["hello", "0 b'web2\\n'"], lines
    assert d.instances() == {}
    assert "default" not in d.jaula("network", "list")  # the default network went with its last instance
    d.kill(signal.SIGTERM)
    assert d.leaks() == []
