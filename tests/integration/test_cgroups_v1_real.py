"""The v1 driver for real on a v1 or hybrid host, as root, below the caller's own cgroups."""

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
    go,
    new_cgroup,
    read,
    skip_unless_root,
    spawn,
)

from jaula.cgroups import Resources, bpf, probe
from jaula.errors import KernelMissing

pytestmark = pytest.mark.root
LAYOUT = probe()


@pytest.fixture
def cg():
    skip_unless_root()
    if LAYOUT.mode not in ("v1", "hybrid"):
        pytest.skip(f"this host's cgroups are {LAYOUT.mode}, not v1 or hybrid")
    cg = new_cgroup()
    procs: list[subprocess.Popen] = []
    cg.test_procs = procs
    yield cg
    cleanup(cg, procs)


def need(controller: str) -> None:
    if controller not in LAYOUT.v1:
        pytest.skip(f"the {controller} controller is not mounted on cgroup v1 here")


def test_paths_are_below_the_callers_cgroup(cg):
    for h in LAYOUT.hierarchies():
        caller = h.dir_of(h.current)
        key = h.key.split(",")[0]
        assert cg.paths[key].startswith(caller.rstrip("/") + "/jaula/jaula-test-")


def test_limits_are_written_and_read_back(cg):
    for c in ("memory", "pids", "cpu", "cpuset"):
        need(c)
    cpu0 = read(cg, "cpuset", "cpuset.cpus").split(",")[0].split("-")[0]
    mem0 = read(cg, "cpuset", "cpuset.mems").split(",")[0].split("-")[0]
    memsw = os.path.exists(os.path.join(cg.paths["memory"], "memory.memsw.limit_in_bytes"))
    cg.apply(Resources.from_oci({
        "memory": {"limit": 20 * MiB, **({"swap": 30 * MiB} if memsw else {}), "reservation": 10 * MiB, "swappiness": 10},
        "pids": {"limit": 16},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": cpu0, "mems": mem0},
    }))
    assert read(cg, "memory", "memory.limit_in_bytes") == str(20 * MiB)
    if memsw:
        assert read(cg, "memory", "memory.memsw.limit_in_bytes") == str(30 * MiB)
    assert read(cg, "memory", "memory.soft_limit_in_bytes") == str(10 * MiB)
    assert read(cg, "memory", "memory.swappiness") == "10"
    assert read(cg, "pids", "pids.max") == "16"
    assert read(cg, "cpu", "cpu.shares") == "512"
    assert read(cg, "cpu", "cpu.cfs_quota_us") == "50000" and read(cg, "cpu", "cpu.cfs_period_us") == "100000"
    assert read(cg, "cpuset", "cpuset.cpus") == cpu0 and read(cg, "cpuset", "cpuset.mems") == mem0
    cg.update(Resources.from_oci({"memory": {"limit": 40 * MiB, **({"swap": 60 * MiB} if memsw else {})}}))
    assert read(cg, "memory", "memory.limit_in_bytes") == str(40 * MiB)
    cg.apply(Resources())          # back to unlimited
    assert read(cg, "pids", "pids.max") == "max" and read(cg, "cpu", "cpu.cfs_quota_us") == "-1"
    assert int(read(cg, "memory", "memory.limit_in_bytes")) > 2**62


def test_blkio_weight_where_the_kernel_has_it(cg):
    need("blkio")
    d = cg.paths["blkio"]
    res = Resources.from_oci({"blockIO": {"weight": 300}})
    if os.path.exists(f"{d}/blkio.weight") or os.path.exists(f"{d}/blkio.bfq.weight"):
        cg.update(res)
        f = "blkio.weight" if os.path.exists(f"{d}/blkio.weight") else "blkio.bfq.weight"
        assert read(cg, "blkio", f).split()[-1] == "300"
    else:   # asked for and impossible: an error naming the file, never silence
        with pytest.raises(KernelMissing, match=r"blockIO.weight: .*blkio.weight does not exist: proportional weight"):
            cg.update(res)


def test_child_joins_every_hierarchy(cg):
    check_membership(cg, cg.test_procs)


def test_device_rules_are_enforced(cg):
    need("devices")
    check_devices(cg, cg.test_procs)
    assert read(cg, "devices", "devices.list").splitlines() == ["c 1:3 rw", "c 1:5 r"]


def test_stats(cg):
    for c in ("memory", "pids", "cpu"):
        need(c)
    check_stats(cg, cg.test_procs)


def test_ebpf_device_filter_on_the_hybrid_cgroup2_mount(cg):
    """cgroup2's device programs work on a hybrid host too: the real kernel verifies and enforces ours."""
    if "unified" not in cg.paths:
        pytest.skip("no cgroup2 mount on this host")
    d = cg.paths["unified"]
    rules = Resources.from_oci({"devices": [{"allow": True, "type": "a"}]}).devices
    bpf.set_device_filter(d, rules)
    rules = Resources.from_oci({"devices": [
        {"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]}).devices
    bpf.set_device_filter(d, rules)                      # replaces the first program
    assert bpf.device_filters(d) == 1
    p = spawn("for path, mode in (('/dev/null', os.O_RDWR), ('/dev/zero', os.O_RDONLY), ('/dev/zero', os.O_WRONLY)):\n"
              "    try:\n"
              "        os.close(os.open(path, mode)); print('ok')\n"
              "    except OSError as e:\n"
              "        print(e.errno)\n")
    cg.test_procs.append(p)
    cg.add_pid(p.pid)
    go(p)
    out, err = p.communicate(timeout=30)
    assert out.decode().split() == ["ok", "ok", "1"], err


def test_hybrid_hugetlb_on_the_cgroup2_mount(cg):
    """hugetlb bound to cgroup2 while the rest is v1: the limit goes to the unified directory."""
    if "hugetlb" in LAYOUT.v1 or LAYOUT.unified is None or "hugetlb" not in LAYOUT.unified.controllers:
        pytest.skip("hugetlb is not on the cgroup2 mount of a hybrid host here")
    kb = min(int(e[len("hugepages-"):-2]) for e in os.listdir("/sys/kernel/mm/hugepages"))
    # the kernel's names (mm/hugetlb_cgroup.c mem_fmt): 64KB, 2MB, 1GB
    size = f"{kb >> 20}GB" if kb >= 1 << 20 else f"{kb >> 10}MB" if kb >= 1 << 10 else f"{kb}KB"
    caller = LAYOUT.unified.dir_of(LAYOUT.unified.current)
    ctl = os.path.join(caller, "cgroup.subtree_control")
    had = "hugetlb" in open(ctl).read().split()
    try:
        cg.update(Resources.from_oci({"hugepageLimits": [{"pageSize": size, "limit": 4 * MiB}]}))
        assert read(cg, "unified", f"hugetlb.{size}.max") == str(4 * MiB)
        assert cg.stats().row(f"hugetlb.{size}").limit == 4 * MiB
    finally:
        if not had:   # leave the caller's cgroup as it was: remove ours first, then undo the delegation
            cleanup(cg, cg.test_procs)
            for d in (os.path.dirname(cg.paths["unified"]),):
                if os.path.isdir(d):
                    with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                        f.write("-hugetlb")
            with open(ctl, "w") as f:
                f.write("-hugetlb")


def test_device_updates_write_only_the_difference(cg):
    """A running task never loses a device both rule sets allow (runc's transition, not deny-all-then-allow)."""
    need("devices")
    from jaula.cgroups import CgroupFs, open_cgroup

    class Recording(CgroupFs):
        writes: list[tuple[str, str]] = []

        def write(self, path: str, value: str) -> None:
            self.writes.append((os.path.basename(path), value))
            super().write(path, value)

    fs = Recording()
    again = open_cgroup(None, os.path.basename(cg.paths["devices"]), fs=fs)
    null = {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    a = Resources.from_oci({"devices": [{"allow": False}, null, {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]})
    b = Resources.from_oci({"devices": [{"allow": False}, null, {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"},
                                        {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "r"}]})
    again.update(a)
    assert read(cg, "devices", "devices.list").splitlines() == ["c 1:3 rwm", "c 1:5 r"]
    p = spawn("import time\n"
              "fails = opens = 0\n"
              "t = time.monotonic()\n"
              "while time.monotonic() - t < 0.5:\n"
              "    try:\n"
              "        os.close(os.open('/dev/null', os.O_RDWR)); opens += 1\n"
              "    except OSError:\n"
              "        fails += 1\n"
              "print(opens, fails, flush=True)\n")
    cg.test_procs.append(p)
    cg.add_pid(p.pid)
    fs.writes.clear()
    go(p)
    t = 0
    while p.poll() is None and t < 400:
        again.update(b if t % 2 == 0 else a)
        t += 1
    out, err = p.communicate(timeout=30)
    opens, fails = map(int, out.split())
    assert t >= 20 and opens > 100 and fails == 0, (t, opens, fails, err)
    assert not any(v.startswith("a") for _, v in fs.writes), "an update reset the whole device list"
    assert set(fs.writes) <= {("devices.allow", "c 1:5 w"), ("devices.allow", "c 1:7 r"),
                              ("devices.deny", "c 1:5 w"), ("devices.deny", "c 1:7 r")}
    again.update(b)
    assert read(cg, "devices", "devices.list").splitlines() == ["c 1:3 rwm", "c 1:5 rw", "c 1:7 r"]
