"""jaula-runtime through each raw-syscall backend (jaula.linux.libc): the C module `_sys` and the
ctypes fallback (JAULA_SYSCALL=ctypes) make the same container, seen from inside by the probe.

Every wrapper the hot path moved off ctypes is exercised: unshare and setns (namespaces, exec),
mount, pivot_root, openat2 and fstatfs (the mounts), sethostname/setdomainname, keyctl, prctl
(bounding set, no_new_privs, dumpable), capset, prlimit64, and the trampoline's memfd seals.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.containers import (
    PROBE,
    SLEEP,
    assert_nothing_left,
    status,
    wait_until,
)
from tests.support.runtime import Runtime

pytestmark = pytest.mark.root

Bundle = Callable[..., Path]
SYS_BUILT = any(p.name.startswith("_sys.") and p.suffix == ".so"
                for p in (Path(__file__).resolve().parents[2] / "src/jaula/linux").iterdir())


@pytest.fixture(params=[
    "ctypes",
    pytest.param("c", marks=pytest.mark.skipif(
        not SYS_BUILT, reason="jaula.linux._sys is not built (scripts/build-runtime-fast needs gcc and python3.11-dev)")),
])
def backend_runtime(request: pytest.FixtureRequest, runtime: Runtime) -> Runtime:
    env = dict(runtime.env or os.environ)
    env.pop("JAULA_SYSCALL", None)
    if request.param == "ctypes":
        env["JAULA_SYSCALL"] = "ctypes"
    runtime.env = env
    return runtime


CONFIG = {
    "hostname": "backend", "domainname": "example.test",
    "process": {
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
        "capabilities": {k: ["CAP_KILL", "CAP_CHOWN"] for k in ("bounding", "effective", "permitted")} | {"ambient": []},
        "noNewPrivileges": True,
    },
}
MASK = (1 << 0) | (1 << 5)  # CAP_CHOWN, CAP_KILL


def _check_info(info: dict, pid1: bool) -> None:
    assert (info["pid"] == 1) is pid1
    assert info["hostname"] == "backend" and info["domainname"] == "example.test"
    assert info["rlimits"]["RLIMIT_NOFILE"] == {"soft": 123, "hard": 456}
    st = info["status"]
    assert int(st["CapBnd"], 16) == MASK and int(st["CapEff"], 16) == MASK and int(st["CapPrm"], 16) == MASK
    assert st["NoNewPrivs"] == "1"
    assert any(" /proc " in line and " - proc " in line for line in info["mountinfo"])
    assert not any(" /work" in line.split(" - ")[0] for line in info["mountinfo"])  # pivot_root left no host path


def test_run_through_each_backend(backend_runtime: Runtime, bundle: Bundle) -> None:
    rt = backend_runtime
    cid = rt.new_id()
    info = json.loads(rt.run(bundle([PROBE, "info"], **CONFIG), container_id=cid, check=True).stdout)
    _check_info(info, pid1=True)
    assert info["session_keyring"] and info["session_keyring_error"] is None
    assert_nothing_left(rt, cid)


def test_exec_through_each_backend(backend_runtime: Runtime, bundle: Bundle) -> None:
    rt = backend_runtime
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", bundle(SLEEP, **CONFIG), cid, check=True)
    try:
        wait_until("the container to run", lambda: status(rt, cid) == "running")
        info = json.loads(rt("exec", cid, PROBE, "info", check=True).stdout)
        assert info["ns"]["pid"] != os.readlink("/proc/self/ns/pid")
        _check_info(info, pid1=False)
    finally:
        rt("delete", "--force", cid)
    assert_nothing_left(rt, cid)
