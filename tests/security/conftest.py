"""The escape battery's fixtures and its result line.

Every test here is one escape attempt, run as root inside a default instance (unprivileged, its
own user namespace and id range, system mode, the default seccomp profile): a pass is an attempt
blocked or contained, a failure an escape. At the end of the session pytest prints
"security battery: N attempts, B blocked, E escapes" (plus the skipped, with their reasons above).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.storage import TemplateStore
from tests.security.lab import FIGURES, Lab, helpers_missing, make_store
from tests.support.containers import wait_until

_results: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attempt: one escape attempt of the security battery (counted in its result line)")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "attempt" not in report.keywords:
        return
    # the call's outcome, unless a setup or teardown failed or skipped; a setup or teardown that
    # failed is an error of the battery (its instance did not start...), not an escape
    outcome = "error" if report.outcome == "failed" and report.when != "call" else report.outcome
    if outcome != "passed" and _results.get(report.nodeid) not in ("failed", "error") \
            or (report.when == "call" and report.nodeid not in _results):
        _results[report.nodeid] = outcome


def pytest_terminal_summary(terminalreporter) -> None:
    if not _results:
        for figure in FIGURES:
            terminalreporter.write_line(f"security battery: {figure}")
        return
    n = len(_results)
    passed = sum(1 for v in _results.values() if v == "passed")
    failed = sum(1 for v in _results.values() if v == "failed")
    errors = sum(1 for v in _results.values() if v == "error")
    skipped = n - passed - failed - errors
    line = f"security battery: {n} attempts, {passed} blocked, {failed} escapes"
    line += f", {errors} not run (errors in their setup)" if errors else ""
    terminalreporter.write_line(line + (f", {skipped} skipped" if skipped else ""))
    # the escape helper's attempts per kind of instance (test_escapes.py's battery parameter)
    kinds: dict[str, list[str]] = {}
    for nodeid, outcome in _results.items():
        m = re.search(r"test_escape_attempt\[(\w+)-", nodeid)
        if m:
            kinds.setdefault(m[1], []).append(outcome)
    for kind, outcomes in kinds.items():
        line = (f"security battery ({kind} instance{', lxcfs on' if kind == 'lxcfs' else ''}): {len(outcomes)} attempts, "
                f"{outcomes.count('passed')} blocked, {outcomes.count('failed')} escapes")
        if errors := outcomes.count("error"):
            line += f", {errors} not run (errors in their setup)"
        rest = len(outcomes) - outcomes.count("passed") - outcomes.count("failed") - errors
        terminalreporter.write_line(line + (f", {rest} skipped" if rest else ""))
    for figure in FIGURES:
        terminalreporter.write_line(f"security battery: {figure}")


@pytest.fixture(scope="session")
def sec_top() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if why := helpers_missing():
        pytest.skip(why)
    top = Path(tempfile.mkdtemp(prefix="jaula-sec-"))
    top.chmod(0o711)  # an instance's root (host uid 2000000+) must traverse it
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="session")
def sec_store(sec_top: Path) -> TemplateStore:
    return make_store(sec_top / "store")


@pytest.fixture(scope="module")
def lab(sec_top: Path, sec_store: TemplateStore, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A driver over a dir pool; every instance is deleted at the end and nothing may be left."""
    # starting an instance forks and unshares a user namespace: not from a multi-threaded process
    wait_until("other tests' threads to end", lambda: threading.active_count() == 1, timeout=20)
    top = sec_top / request.module.__name__.rsplit(".", 1)[-1]
    top.mkdir()
    top.chmod(0o711)
    lab = Lab(top, sec_store)
    yield lab
    left = lab.close()
    assert not left, f"left behind: {left}"
