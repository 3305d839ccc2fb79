"""The v2 driver for real on a pure cgroup v2 host, as root, below the caller's own cgroup.

On a hybrid host (this project's build machine) the controllers are bound to v1, so these skip and
the v2 driver is covered by tests/unit/test_cgroups_v2.py on synthetic trees.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from cgroup_checks import (
    MiB,
    check_devices,
    check_membership,
    check_stats,
    cleanup,
    new_cgroup,
    read,
    skip_unless_root,
)

from jaula.cgroups import Resources, bpf, probe
from jaula.errors import KernelMissing

pytestmark = pytest.mark.root
LAYOUT = probe()
HYBRID = ("cgroup v2 controllers are bound to cgroup v1 on this host (hybrid layout): "
          "the v2 driver is tested on synthetic trees")


@pytest.fixture
def cg():
    if LAYOUT.mode == "hybrid":
        pytest.skip(HYBRID)
    if LAYOUT.mode != "v2":
        pytest.skip(f"this host has no cgroup v2 hierarchy ({LAYOUT.mode} layout): the v2 driver is tested on synthetic trees")
    skip_unless_root()
    cg = new_cgroup()
    procs: list[subprocess.Popen] = []
    cg.test_procs = procs
    try:
        cg.update(Resources.from_oci({"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"shares": 1024}}))
    except KernelMissing as e:
        cleanup(cg, procs)
        pytest.skip(f"the caller's cgroup does not delegate memory, pids and cpu to its children: {e}")
    yield cg
    cleanup(cg, procs)


def test_paths_are_below_the_callers_cgroup(cg):
    caller = LAYOUT.unified.dir_of(LAYOUT.unified.current)
    assert cg.paths["unified"].startswith(caller.rstrip("/") + "/jaula/jaula-test-")


def test_limits_are_written_and_read_back(cg):
    cpus = read(cg, "unified", "cpuset.cpus.effective") if os.path.exists(
        os.path.join(cg.paths["unified"], "cpuset.cpus.effective")) else None
    swap = os.path.exists(os.path.join(cg.paths["unified"], "memory.swap.max"))
    cg.apply(Resources.from_oci({
        "memory": {"limit": 20 * MiB, **({"swap": 30 * MiB} if swap else {}), "reservation": 10 * MiB},
        "pids": {"limit": 16},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, **({"cpus": cpus.split(",")[0].split("-")[0]} if cpus else {})},
    }))
    assert read(cg, "unified", "memory.max") == str(20 * MiB)
    if swap:
        assert read(cg, "unified", "memory.swap.max") == str(10 * MiB)
    assert read(cg, "unified", "memory.low") == str(10 * MiB)
    assert read(cg, "unified", "pids.max") == "16"
    assert read(cg, "unified", "cpu.weight") == "20"
    assert read(cg, "unified", "cpu.max") == "50000 100000"
    cg.apply(Resources())
    assert read(cg, "unified", "memory.max") == "max" and read(cg, "unified", "pids.max") == "max"
    assert read(cg, "unified", "cpu.max").split()[0] == "max" and read(cg, "unified", "cpu.weight") == "100"


def test_io_weight_where_the_kernel_has_it(cg):
    d = cg.paths["unified"]
    if not (os.path.exists(f"{d}/io.weight") or os.path.exists(f"{d}/io.bfq.weight")):
        pytest.skip("no io.weight nor io.bfq.weight here (no proportional I/O scheduler)")
    cg.update(Resources.from_oci({"blockIO": {"weight": 500}}))
    if os.path.exists(f"{d}/io.bfq.weight"):
        assert read(cg, "unified", "io.bfq.weight").split()[-1] == "500"
    else:
        assert read(cg, "unified", "io.weight") == "default 4950"


def test_child_joins_the_cgroup(cg):
    check_membership(cg, cg.test_procs)


def test_device_rules_are_enforced_by_ebpf(cg):
    check_devices(cg, cg.test_procs)
    assert bpf.device_filters(cg.paths["unified"]) >= 1


def test_stats(cg):
    check_stats(cg, cg.test_procs)
