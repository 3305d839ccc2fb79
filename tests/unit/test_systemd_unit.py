"""contrib/systemd/jaulad.service: the settings live restore and the supervisor need, checked by
`systemd-analyze verify` (with ExecStart pointed at this tree's jaulad), and not installed by
scripts/setup."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "systemd" / "jaulad.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_keeps_instances_across_a_restart_and_waits_for_ready() -> None:
    svc = _service()
    assert svc["Type"] == "notify"            # jaulad sends READY=1 (jaula.daemon.notify)
    assert svc["KillMode"] == "process"       # instances survive a stop or restart of jaulad
    assert svc["Delegate"] == "yes"
    assert svc["Restart"] == "on-failure"
    assert int(svc["LimitNOFILE"]) >= 65536   # a pidfd per running instance
    assert svc["ExecStart"].split()[0].endswith("/jaulad")


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd): the unit cannot be verified")
    jaulad = REPO / ".venv" / "bin" / "jaulad"
    if not jaulad.exists():
        pytest.skip(f"{jaulad} is missing (run scripts/setup): verify needs an executable ExecStart")
    unit = tmp_path / "jaulad.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/jaulad", str(jaulad)))
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if "jaulad.service" in line]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr


def test_setup_does_not_install_the_unit() -> None:
    setup = (REPO / "scripts" / "setup").read_text()
    assert "jaulad.service" not in setup and "systemctl" not in setup
