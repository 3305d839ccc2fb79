"""How the container's init is forked: straight from the runtime when there is no user or time
namespace (the runtime unshares the pid namespace for its children only and takes its own back),
through the intermediate process otherwise. Both make the same container."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from jaula.linux.ns import available
from jaula.oci.config import load
from jaula.oci.init import forks_init_directly
from tests.support.bundle import default_config
from tests.support.containers import PROBE, assert_nothing_left
from tests.support.runtime import Runtime

pytestmark = pytest.mark.root

Bundle = Callable[..., Path]
# A time namespace (which, like the pid namespace, only children enter) takes the intermediate path.
TIMENS = {"linux": {"namespaces": default_config()["linux"]["namespaces"] + [{"type": "time"}]}}


def _ns_hook(kind: str, log: Path) -> dict:
    return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {kind} $(readlink /proc/self/ns/pid) >> {log}"]}


@pytest.mark.parametrize("extra, direct", [
    ({}, True),
    pytest.param(TIMENS, False, marks=pytest.mark.skipif(not available("time"), reason="no time namespaces (CONFIG_TIME_NS)")),
], ids=["direct", "intermediate"])
def test_hooks_run_in_the_hosts_pid_namespace_and_init_in_its_own(runtime: Runtime, bundle: Bundle, tmp_path: Path,
                                                                  extra: dict, direct: bool) -> None:
    log = tmp_path / "hooks.log"
    kinds = ("prestart", "createRuntime", "poststart", "poststop")
    b = bundle([PROBE, "info"], hooks={k: [_ns_hook(k, log)] for k in kinds}, **extra)
    assert forks_init_directly(load(str(b))) is direct
    cid = runtime.new_id()
    info = json.loads(runtime.run(b, container_id=cid, check=True).stdout)
    host_ns = os.readlink("/proc/self/ns/pid")
    assert info["pid"] == 1 and info["ns"]["pid"] != host_ns
    assert sorted(log.read_text().split()) == sorted(f"{k} {host_ns}".split()[i] for k in kinds for i in (0, 1))
    # and the runtime's children after the container's init (a second container) are fine too
    again = json.loads(runtime.run(b, container_id=runtime.new_id(), check=True).stdout)
    assert again["pid"] == 1 and again["ns"]["pid"] != host_ns
    assert_nothing_left(runtime, cid)


def test_a_failure_in_a_directly_forked_init_leaves_nothing(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle([PROBE, "info"], process={"cwd": "/no/such/dir"})
    assert forks_init_directly(load(str(b)))
    cid = runtime.new_id()
    result = runtime("run", "--bundle", b, cid)
    assert result.returncode != 0 and "/no/such/dir" in result.stderr
    assert_nothing_left(runtime, cid)
