"""An init with a new user namespace (and none joined by path) is cloned by the runtime straight
into its namespaces (init.clones_init: one clone3, no intermediate process; a time namespace is
unshared, given its offsets and entered by the init itself). The container it makes is
the one the intermediate made: pid 1, its maps, namespaces owned by its user namespace, its v1
cgroups joined and its cgroup namespace rooted there, non-dumpable, oom_score_adj as configured;
and a failure leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jaula.linux import libc
from jaula.linux.ns import available
from jaula.oci.config import load
from jaula.oci.init import clones_init, forks_init_directly
from tests.support.bundle import (
    USERNS_HOST_ID,
    USERNS_SIZE,
    deep_merge,
    default_config,
    make_bundle,
    shift_ownership,
    userns_overrides,
)
from tests.support.containers import PROBE, assert_nothing_left
from tests.support.runtime import Runtime

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not available("user"), reason="no user namespaces (CONFIG_USER_NS)")]

Bundle = Callable[..., Path]


@pytest.fixture
def ubundle(rootfs_dir: Path) -> Iterator[Callable[..., Path]]:
    """Bundles for a user namespace mapping 0.. to USERNS_HOST_ID.., their root shifted to match,
    in a folder every user may traverse (as test_runtime_config's userns_bundle)."""
    top = Path(tempfile.mkdtemp(prefix="jaula-clone-"))
    top.chmod(0o711)
    made = []

    def make(args: list[str], extra_ns: tuple[str, ...] = ("cgroup",), **overrides: Any) -> Path:
        merged = deep_merge(userns_overrides(), overrides)
        merged["linux"]["namespaces"] += [{"type": t} for t in extra_ns]
        b = make_bundle(top / f"bundle-{len(made) + 1}", args, rootfs=rootfs_dir, **merged)
        shift_ownership(b / "rootfs", USERNS_HOST_ID)
        made.append(b)
        return b

    yield make
    shutil.rmtree(top, ignore_errors=True)


def test_the_cloned_init_is_the_container_the_intermediate_made(runtime: Runtime, ubundle: Bundle) -> None:
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3): run scripts/build-runtime-fast")
    b = ubundle([PROBE, "info"], process={"oomScoreAdj": 250})
    spec = load(str(b))
    assert clones_init(spec) and not forks_init_directly(spec)
    cid = runtime.new_id()
    info = json.loads(runtime.run(b, container_id=cid, check=True).stdout)
    assert info["pid"] == 1
    assert [" ".join(x.split()) for x in info["uid_map"]] == [f"0 {USERNS_HOST_ID} {USERNS_SIZE}"]
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in ("user", "pid", "mnt", "net", "uts", "ipc", "cgroup")}
    for kind, mine in host.items():
        assert info["ns"][kind] != mine, f"the init shares the host's {kind} namespace"
    assert info["oom_score_adj"] == 250  # written by the runtime (a value below 0 needs CAP_SYS_RESOURCE)
    # its cgroup namespace was made after it joined its cgroups: every hierarchy reads as its root
    lines = [ln.split(":", 2) for ln in info["cgroup"]]
    assert lines and all(path == "/" for _, _, path in lines), info["cgroup"]
    assert_nothing_left(runtime, cid)


@pytest.mark.skipif(not available("time"), reason="no time namespaces (CONFIG_TIME_NS)")
def test_a_time_namespace_is_unshared_offset_and_entered_by_the_cloned_init(runtime: Runtime, ubundle: Bundle) -> None:
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3): run scripts/build-runtime-fast")
    with open("/proc/uptime") as f:
        host_up = float(f.read().split()[0])
    b = ubundle([PROBE, "info"], extra_ns=("cgroup", "time"),
                linux={"timeOffsets": {"boottime": {"secs": -int(host_up) + 5, "nanosecs": 0}}})
    assert clones_init(load(str(b)))
    cid = runtime.new_id()
    info = json.loads(runtime.run(b, container_id=cid, check=True).stdout)
    assert info["ns"]["time"] != os.readlink("/proc/self/ns/time")
    assert info["ns"]["time"] == info["ns"]["time_for_children"]  # the init itself is in it
    assert_nothing_left(runtime, cid)
    out = runtime.run(ubundle(["/bin/cat", "/proc/uptime"], extra_ns=("cgroup", "time"),
                              linux={"timeOffsets": {"boottime": {"secs": -int(host_up) + 5, "nanosecs": 0}}}),
                      container_id=runtime.new_id(), check=True).stdout
    assert float(out.split()[0]) < 60, out  # its boot clock starts near 5 s, not at the host's


def test_a_namespace_joined_by_path_keeps_the_intermediate(bundle: Bundle) -> None:
    assert not clones_init(load(str(bundle([PROBE, "info"], linux={"namespaces": default_config()["linux"]["namespaces"]}))))
    ns = default_config()["linux"]["namespaces"] + [{"type": "user", "path": "/proc/1/ns/user"}]
    assert not clones_init(load(str(bundle([PROBE, "info"], linux={"namespaces": ns}))))


def test_a_failure_in_a_cloned_init_leaves_nothing(runtime: Runtime, ubundle: Bundle) -> None:
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3): run scripts/build-runtime-fast")
    b = ubundle([PROBE, "info"], process={"cwd": "/no/such/dir"})
    assert clones_init(load(str(b)))
    cid = runtime.new_id()
    result = runtime("run", "--bundle", b, cid)
    assert result.returncode != 0 and "/no/such/dir" in result.stderr
    assert_nothing_left(runtime, cid)


_HOOK_SCRIPT = """
import json, os, sys
from jaula.oci import lifecycle
from jaula.oci.create import Options, create
from jaula.oci.log import Log

seen = {}

def hook(pid):  # what jaulad's NIC plug needs: the init's own network namespace, made already
    seen["net"] = os.readlink(f"/proc/{pid}/ns/net")
    seen["uts"] = os.readlink(f"/proc/{pid}/ns/uts")

log = Log()
c = create(sys.argv[1], sys.argv[2], sys.argv[3], Options(on_namespaces=hook), log)
lifecycle.delete(c, True, log)
print(json.dumps(seen))
"""


def test_on_namespaces_sees_the_cloned_inits_own_namespaces(ubundle: Bundle, tmp_path: Path) -> None:
    """jaula.oci create's on_namespaces hook (jaulad plugs NICs there) runs once the cloned init
    has made its network namespace itself (NAMESPACES), not while it is still in the host's."""
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3): run scripts/build-runtime-fast")
    import subprocess
    import sys

    b = ubundle([PROBE, "info"])
    assert clones_init(load(str(b)))
    src = str(Path(__file__).resolve().parents[2] / "src")
    for _ in range(5):  # it was a race: the init unshares right after GO_ON
        out = subprocess.run([sys.executable, "-c", _HOOK_SCRIPT, str(tmp_path / "root"), f"ns{_}", str(b)],
                             capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=src))
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen["net"] != os.readlink("/proc/self/ns/net")
        assert seen["uts"] != os.readlink("/proc/self/ns/uts")
