"""jaula.oci create with Options(start=True) (jaulad's start of an instance with nothing to do
between create and start): the start byte is in the exec fifo before the init asks for it, so the
init execs its program right after READY; create returns once that execve happened, the
container running (no fifo), its program the one configured, and no fd of the runtime's in it
(the exec pipe it waited on is close-on-exec). A container with poststart hooks is left created
(start runs them), and a failing init leaves nothing, as without."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaula.linux import libc
from jaula.linux.ns import available
from jaula.oci.config import load
from jaula.oci.init import clones_init
from tests.support.containers import PROBE, assert_nothing_left
from tests.support.runtime import Runtime

from tests.integration.test_runtime_clone_init import ubundle  # noqa: F401 - the fixture

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not available("user"), reason="no user namespaces (CONFIG_USER_NS)")]

_SCRIPT = """
import json, os, sys, time
from jaula.oci import lifecycle
from jaula.oci.create import Options, create
from jaula.oci.log import Log

log = Log()
root, cid, bundle = sys.argv[1:4]
c = create(root, cid, bundle, Options(start=True), log)
out = {"started": c.started, "status": c.status(), "fifo": os.path.exists(c.fifo), "pid": c.pid}
if c.started:
    with open(f"/proc/{c.pid}/cmdline", "rb") as f:
        out["first"] = f.read().split(b"\\0")[0].decode()  # the exec trampoline or the program
    for _ in range(200):  # then the trampoline's own execve of the program
        with open(f"/proc/{c.pid}/cmdline", "rb") as f:
            out["cmdline"] = f.read().split(b"\\0")[0].decode()
        if out["cmdline"] != "jaula-exec-trampoline":
            break
        time.sleep(0.01)
    out["fds"] = sorted(os.listdir(f"/proc/{c.pid}/fd"))
lifecycle.kill(c, 9) if c.status() != "stopped" and c.started else None
lifecycle.delete(c, True, log)
print(json.dumps(out))
"""


def _create_start(root: Path, cid: str, bundle: Path) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(root), cid, str(bundle)], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=src))


def _need_clone3() -> None:
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3): run scripts/build-runtime-fast")


def test_create_with_start_returns_with_the_program_running(ubundle, tmp_path: Path) -> None:  # noqa: F811
    _need_clone3()
    b = ubundle(["/bin/sleep", "30"])
    assert clones_init(load(str(b)))
    out = _create_start(tmp_path / "root", "cs1", b)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["started"] and seen["status"] == "running" and not seen["fifo"], seen
    assert seen["first"] in ("jaula-exec-trampoline", "/bin/sleep"), seen  # exec'd: not the runtime's interpreter
    assert seen["cmdline"] == "/bin/sleep", seen
    assert seen["fds"] == ["0", "1", "2"], seen  # nothing of the runtime's: sync socket, fifo, exec pipe


def test_create_with_start_and_poststart_hooks_is_left_created(ubundle, tmp_path: Path) -> None:  # noqa: F811
    _need_clone3()
    b = ubundle(["/bin/sleep", "30"], hooks={"poststart": [{"path": "/bin/true"}]})
    out = _create_start(tmp_path / "root", "cs2", b)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert not seen["started"] and seen["status"] == "created" and seen["fifo"], seen


def test_a_failing_init_with_start_leaves_nothing(runtime: Runtime, ubundle, tmp_path: Path) -> None:  # noqa: F811
    _need_clone3()
    b = ubundle([PROBE, "info"], process={"cwd": "/no/such/dir"})
    out = _create_start(runtime.root, "cs3", b)
    assert out.returncode != 0 and "/no/such/dir" in out.stderr
    assert_nothing_left(runtime, "cs3")
