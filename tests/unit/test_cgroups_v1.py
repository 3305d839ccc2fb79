"""The cgroup v1 driver on synthetic v1 and hybrid trees shaped like this host's."""

from __future__ import annotations

import os
import signal

import pytest
from cgroupfs_fake import UNL, V1_MOUNTS, v1_host

from jaula.cgroups.base import open_cgroup, reopen
from jaula.cgroups.layout import probe
from jaula.cgroups.resources import Resources
from jaula.errors import ConfigError, KernelMissing

MiB = 2**20
MEM = "fs/sys/fs/cgroup/memory/process_api/abc/jaula/jaula-t1"


@pytest.fixture
def host(tmp_path):
    return v1_host(str(tmp_path))


def made(host, name="jaula-t1"):
    k, layout = host
    cg = open_cgroup(None, name, layout=layout, fs=k)
    cg.create()
    k.writes.clear()
    return k, cg


def files(k, cg):
    """{(controller dir name, file): [values]} of the writes under the cgroup."""
    out: dict[tuple[str, str], list[str]] = {}
    for p, v in k.writes:
        parts = p.split("/")
        out.setdefault((parts[4], parts[-1]), []).append(v)
    return out


# ---- probing and paths ---------------------------------------------------------------------------

def test_probe_hybrid_like_this_host(host):
    _, layout = host
    assert layout.mode == "hybrid"
    assert set(layout.v1) == {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "name=systemd"}
    assert layout.v1["memory"].current == "/process_api/abc" and layout.v1["cpu"].current == "/"
    assert layout.unified.controllers == ("hugetlb",)
    assert layout.where("hugetlb") is layout.unified and layout.where("memory") is layout.v1["memory"]


def test_probe_pure_v1_and_comounted(tmp_path):
    k, layout = v1_host(str(tmp_path), mounts=("cpu,cpuacct", "memory", "name=systemd"), hybrid=None)
    assert layout.mode == "v1" and layout.unified is None
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    assert cg.paths["cpu"] == cg.paths["cpuacct"] == f"{tmp_path}/fs/sys/fs/cgroup/cpu,cpuacct/jaula/jaula-t1"
    cg.create()
    cg.add_pid(55)            # once per hierarchy, not once per controller
    assert [p for p, _ in k.writes if p.endswith("cgroup.procs")] == [
        "fs/sys/fs/cgroup/cpu,cpuacct/jaula/jaula-t1/cgroup.procs", f"{MEM}/cgroup.procs",
        "fs/sys/fs/cgroup/systemd/jaula/jaula-t1/cgroup.procs"]


def test_probe_mount_root_and_escapes(tmp_path):
    # a container's view: the hierarchy's /docker/x is mounted on /sys/fs/cgroup/memory
    os.makedirs(tmp_path / "fs/sys/fs/cgroup/memory")
    os.makedirs(tmp_path / "fs/sys/fs/my\\040cg")
    (tmp_path / "mi").write_text("30 23 0:40 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory,clone_children\n"
                                 "31 23 0:41 / /sys/fs/my\\040cg rw - cgroup cgroup rw,pids\n")
    (tmp_path / "sc").write_text("3:memory:/docker/x\n2:pids:/\n")
    layout = probe(str(tmp_path / "mi"), str(tmp_path / "sc"), fs_root=str(tmp_path / "fs"))
    mem = layout.v1["memory"]
    assert mem.controllers == ("memory",) and mem.root == "/docker/x"
    assert mem.dir_of("/docker/x/jaula/c1") == f"{tmp_path}/fs/sys/fs/cgroup/memory/jaula/c1"
    assert layout.v1["pids"].mountpoint == f"{tmp_path}/fs/sys/fs/my cg"


def test_paths_follow_the_caller_per_hierarchy(host, tmp_path):
    k, layout = host
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    assert cg.paths["memory"] == f"{tmp_path}/{MEM}"
    assert cg.paths["pids"] == f"{tmp_path}/fs/sys/fs/cgroup/pids/jaula/jaula-t1"
    assert cg.paths["name=systemd"] == f"{tmp_path}/fs/sys/fs/cgroup/systemd/jaula/jaula-t1"
    assert cg.paths["unified"] == f"{tmp_path}/fs/sys/fs/cgroup/unified/jaula/jaula-t1"
    rel = open_cgroup("pods/c1", "c1", layout=layout, fs=k)
    assert rel.paths["memory"] == f"{tmp_path}/fs/sys/fs/cgroup/memory/process_api/abc/pods/c1"
    ab = open_cgroup("/process_api/abc/c1", "c1", layout=layout, fs=k)
    assert ab.paths["memory"] == f"{tmp_path}/fs/sys/fs/cgroup/memory/process_api/abc/c1"
    assert ab.paths["cpu"] == f"{tmp_path}/fs/sys/fs/cgroup/cpu/process_api/abc/c1"
    with pytest.raises(ConfigError, match="slice:prefix:name"):
        open_cgroup("machine.slice:jaula:c1", "c1", layout=layout, fs=k)
    with pytest.raises(ConfigError, match="caller's own cgroup"):
        open_cgroup("/process_api", "c1", layout=layout, fs=k)


# ---- create --------------------------------------------------------------------------------------

def test_create_copies_cpuset_into_every_new_directory(host, tmp_path):
    k, layout = host
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    assert k.written("cpuset/jaula/cpuset.cpus") == ["0-3"] and k.written("cpuset/jaula/cpuset.mems") == ["0"]
    assert k.written("jaula-t1/cpuset.cpus") == ["0-3"] and k.written("jaula-t1/cpuset.mems") == ["0"]
    for d in set(cg.paths.values()):
        assert os.path.isdir(d)
    assert not k.written("unified/jaula/cgroup.subtree_control")     # nothing to delegate: root offers none yet


def test_create_undoes_itself_on_failure(host, tmp_path):
    k, layout = host
    os.unlink(f"{tmp_path}/fs/sys/fs/cgroup/cpuset/cpuset.mems")     # the copy will fail
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    with pytest.raises(OSError):
        cg.create()
    assert not cg.exists()
    assert not os.path.exists(f"{tmp_path}/fs/sys/fs/cgroup/cpu/jaula")


# ---- resources -----------------------------------------------------------------------------------

def test_apply_writes_every_value(host):
    k, cg = made(host)
    cg.apply(Resources.from_oci({
        "memory": {"limit": 20 * MiB, "swap": 30 * MiB, "reservation": 10 * MiB, "kernelTCP": MiB, "swappiness": 0,
                   "disableOOMKiller": True, "useHierarchy": True},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 1000, "realtimePeriod": 1000000,
                "realtimeRuntime": 5000, "cpus": "1", "mems": "0", "idle": 1},
        "pids": {"limit": 16},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 30}]},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                    {"allow": True, "type": "a", "major": 136, "access": "r"}, {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}],
    }))
    f = files(k, cg)
    assert f["memory", "memory.memsw.limit_in_bytes"] == [str(30 * MiB)]     # lowered from unlimited: memory first
    assert [p.split("/")[-1] for p, _ in k.writes if p.startswith(MEM)][:2] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    assert f["memory", "memory.limit_in_bytes"] == [str(20 * MiB)]
    assert f["memory", "memory.soft_limit_in_bytes"] == [str(10 * MiB)]
    assert f["memory", "memory.kmem.tcp.limit_in_bytes"] == [str(MiB)]
    assert f["memory", "memory.swappiness"] == ["0"] and f["memory", "memory.oom_control"] == ["1"]
    assert f["memory", "memory.use_hierarchy"] == ["1"]
    assert f["cpu", "cpu.shares"] == ["512"] and f["cpu", "cpu.cfs_period_us"] == ["100000"]
    assert f["cpu", "cpu.cfs_quota_us"] == ["50000"] and f["cpu", "cpu.cfs_burst_us"] == ["1000"]
    assert f["cpu", "cpu.rt_period_us"] == ["1000000"] and f["cpu", "cpu.rt_runtime_us"] == ["5000"]
    assert f["cpu", "cpu.idle"] == ["1"]
    assert f["cpuset", "cpuset.cpus"] == ["1"] and f["cpuset", "cpuset.mems"] == ["0"]
    assert f["pids", "pids.max"] == ["16"]
    assert f["blkio", "blkio.bfq.weight"] == ["500"]                       # no blkio.weight: BFQ's file
    assert f["blkio", "blkio.bfq.weight_device"] == ["8:0 200"]
    assert f["blkio", "blkio.throttle.read_bps_device"] == ["8:0 1048576"]
    assert f["blkio", "blkio.throttle.write_iops_device"] == ["8:16 30"]
    devs = [(p.split("/")[-1], v) for p, v in k.writes if "/devices/" in p]
    # from the new cgroup's blacklist: reset to a whitelist, then the rules' net effect (c 1:3 lost its w)
    assert devs == [("devices.deny", "a"), ("devices.allow", "c 1:3 r"), ("devices.allow", "c 136:* r"),
                    ("devices.allow", "b 136:* r")]
    assert open(os.path.join(cg.paths["devices"], "devices.list")).read() == "c 1:3 r\nc 136:* r\nb 136:* r\n"


def test_memory_and_swap_order_follows_the_current_limits(host):
    k, cg = made(host)
    cg.update(Resources.from_oci({"memory": {"limit": 20 * MiB, "swap": 30 * MiB}}))
    k.writes.clear()
    cg.update(Resources.from_oci({"memory": {"limit": 40 * MiB, "swap": 60 * MiB}}))   # raising: memsw first
    assert [(p.split("/")[-1], v) for p, v in k.writes] == [("memory.memsw.limit_in_bytes", str(60 * MiB)),
                                                            ("memory.limit_in_bytes", str(40 * MiB))]
    k.writes.clear()
    cg.update(Resources.from_oci({"memory": {"limit": -1}}))      # unlimited memory lifts memory+swap as well
    assert [(p.split("/")[-1], v) for p, v in k.writes] == [("memory.memsw.limit_in_bytes", "-1"),
                                                            ("memory.limit_in_bytes", "-1")]
    assert open(f"{cg.paths['memory']}/memory.limit_in_bytes").read() == str(UNL)


def test_swap_without_swap_accounting(host):
    k, cg = made(host)
    os.unlink(f"{cg.paths['memory']}/memory.memsw.limit_in_bytes")
    cg.update(Resources.from_oci({"memory": {"limit": 20 * MiB, "swap": 20 * MiB}}))   # "no swap": nothing to do
    assert [p.split("/")[-1] for p, _ in k.writes] == ["memory.limit_in_bytes"]
    with pytest.raises(KernelMissing, match=r"memory.swap: .*memory.memsw.limit_in_bytes does not exist: swap accounting is off"):
        cg.update(Resources.from_oci({"memory": {"limit": 20 * MiB, "swap": 40 * MiB}}))


def test_apply_resets_what_is_unset(host):
    k, cg = made(host)
    cg.apply(Resources())
    got = {(p.split("/")[-1], v) for p, v in k.writes}
    assert got == {("memory.limit_in_bytes", "-1"), ("memory.memsw.limit_in_bytes", "-1"),
                   ("memory.soft_limit_in_bytes", "-1"), ("cpu.shares", "1024"), ("cpu.cfs_quota_us", "-1"),
                   ("cpu.cfs_burst_us", "0"), ("pids.max", "max")}


def test_apply_resets_cpuset_throttles_and_hugetlb_left_unset(tmp_path):
    """What an earlier apply or update set and this one leaves out: the parent's cpuset, no throttle, no hugetlb limit."""
    k, layout = v1_host(str(tmp_path), mounts=V1_MOUNTS + ("hugetlb",), hybrid=None)
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    open(os.path.join(cg.paths["hugetlb"], "hugetlb.1GB.limit_in_bytes"), "w").write(str(UNL))
    cg.update(Resources.from_oci({
        "cpu": {"cpus": "1", "mems": "0"},
        "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 30}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}, {"pageSize": "1GB", "limit": 0}]}))
    k.writes.clear()
    cg.apply(Resources.from_oci({"blockIO": {"throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 40}]},
                                 "hugepageLimits": [{"pageSize": "2MB", "limit": 8 * MiB}]}))
    f = files(k, cg)
    assert f["cpuset", "cpuset.cpus"] == ["0-3"] and "cpuset.mems" not in {n for _, n in f}   # mems was the parent's
    assert f["blkio", "blkio.throttle.read_bps_device"] == ["8:0 0"]
    assert f["blkio", "blkio.throttle.write_iops_device"] == ["8:16 40"]
    assert f["hugetlb", "hugetlb.2MB.limit_in_bytes"] == [str(8 * MiB)]
    assert f["hugetlb", "hugetlb.1GB.limit_in_bytes"] == ["-1"]          # a limit of 0 is a limit too
    k.writes.clear()
    cg.update(Resources())                                                 # update resets nothing
    assert k.writes == []


def test_update_only_what_is_set(host):
    k, cg = made(host)
    cg.update(Resources.from_oci({"pids": {"limit": 0}}))
    assert k.writes == [("fs/sys/fs/cgroup/pids/jaula/jaula-t1/pids.max", "max")]


def test_period_quota_retried_in_the_other_order(host):
    k, cg = made(host)
    real = k.write
    refused = []

    def parent_check(path, value):     # the kernel checks the quota/period ratio against the parent
        if path.endswith("cpu.cfs_period_us") and not refused:
            refused.append(value)
            raise OSError(22, "Invalid argument", path)
        real(path, value)
    k.write = parent_check
    cg.update(Resources.from_oci({"cpu": {"quota": 20000, "period": 50000}}))
    assert [(p.split("/")[-1], v) for p, v in k.writes] == [("cpu.cfs_quota_us", "20000"), ("cpu.cfs_period_us", "50000")]


def test_write_errors_name_file_value_and_field(host):
    k, cg = made(host)
    real = k.write

    def busy(path, value):
        if path.endswith("cpuset.cpus"):
            raise OSError(16, "Device or resource busy", path)
        real(path, value)
    k.write = busy
    with pytest.raises(OSError) as e:
        cg.update(Resources.from_oci({"cpu": {"cpus": "7"}}))
    assert "write '7' to" in str(e.value) and "cpuset.cpus' for linux.resources.cpu.cpus" in str(e.value)
    assert e.value.errno == 16


def test_missing_controllers_are_errors_never_ignored(tmp_path):
    k, layout = v1_host(str(tmp_path), mounts=("cpu", "memory"), hybrid=None)
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    k.writes.clear()
    with pytest.raises(KernelMissing) as e:
        cg.apply(Resources.from_oci({"memory": {"limit": MiB}, "pids": {"limit": 3}, "cpu": {"cpus": "0"},
                                     "hugepageLimits": [{"pageSize": "2MB", "limit": 0}], "network": {"classID": 1},
                                     "devices": [{"allow": True}]}))
    msg = str(e.value)
    for ctl, field in (("pids", "pids"), ("cpuset", "cpu.cpus/mems"), ("hugetlb", "hugepageLimits"),
                       ("net_cls", "network.classID"), ("devices", "devices")):
        assert f"linux.resources.{field}: the {ctl} controller is not mounted on this host" in msg
    assert k.writes == []


def test_missing_files_get_a_reason(host):
    k, cg = made(host)
    os.unlink(f"{cg.paths['blkio']}/blkio.bfq.weight")
    with pytest.raises(KernelMissing) as e:
        cg.update(Resources.from_oci({"blockIO": {"weight": 100, "leafWeight": 100}}))
    assert "blockIO.weight: " in str(e.value) and "needs the BFQ I/O scheduler" in str(e.value)
    assert "leaf weights went away with CFQ" in str(e.value)


def test_kernel_memory_is_a_warning_when_the_kernel_dropped_it(host, caplog):
    k, cg = made(host)
    cg.update(Resources.from_oci({"memory": {"kernel": MiB}}))
    assert "memory.kernel ignored" in caplog.text and k.writes == []


def test_hybrid_hugetlb_goes_to_the_cgroup2_mount(host):
    k, cg = made(host)
    cg.update(Resources.from_oci({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]}))
    assert k.written("unified/cgroup.subtree_control") == ["+hugetlb"]          # the caller's (root) delegates
    assert k.written("unified/jaula/cgroup.subtree_control") == ["+hugetlb"]
    assert k.written("unified/jaula/jaula-t1/hugetlb.2MB.max") == [str(4 * MiB)]


def test_hybrid_devices_fall_back_to_ebpf_when_v1_lacks_them(tmp_path):
    k, layout = v1_host(str(tmp_path), mounts=("memory", "pids"), hybrid="hugetlb")
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    cg.update(Resources.from_oci({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 3}]}))
    assert cg.paths["unified"] in k.programs


def test_unified_keys(host, tmp_path):
    k, cg = made(host)
    with pytest.raises(ConfigError, match="the memory controller is bound to cgroup v1 on this host"):
        cg.update(Resources.from_oci({"unified": {"memory.high": "5"}}))
    cg.update(Resources.from_oci({"unified": {"hugetlb.2MB.max": "0"}}))
    assert k.written("unified/jaula/jaula-t1/hugetlb.2MB.max") == ["0"]
    k1, l1 = v1_host(str(tmp_path / "pure"), hybrid=None)
    cg1 = open_cgroup(None, "x", layout=l1, fs=k1)
    with pytest.raises(ConfigError, match="unified: needs cgroup v2; this host mounts cgroup v1 only"):
        cg1.update(Resources.from_oci({"unified": {"pids.max": "5"}}))


def test_network_classid_and_priorities(tmp_path):
    k, layout = v1_host(str(tmp_path), mounts=("net_cls", "net_prio"), hybrid=None)
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    cg.update(Resources.from_oci({"network": {"classID": 0x100001, "priorities": [{"name": "eth0", "priority": 5},
                                                                                  {"name": "lo", "priority": 2}]}}))
    assert k.written("net_cls.classid") == ["1048577"]
    assert k.written("net_prio.ifpriomap") == ["eth0 5", "lo 2"]


# ---- processes, freezer, kill, remove, stats --------------------------------------------------------

def test_freeze_rewrites_frozen_until_it_sticks(host):
    k, cg = made(host)
    k.freezing_reads = 3
    cg.freeze(timeout=2)
    assert cg.frozen() and set(k.written("freezer.state")) == {"FROZEN"}
    cg.thaw()
    assert not cg.frozen() and k.written("freezer.state")[-1] == "THAWED"


def test_kill_freezes_signals_and_thaws(host):
    k, cg = made(host)
    cg.add_pid(10)
    cg.add_pid(11)
    assert cg.pids() == [10, 11]
    k.writes.clear()
    cg.kill()
    assert sorted(k.signals) == [(10, 9), (11, 9)]
    assert k.written("freezer.state") == ["FROZEN", "THAWED"]
    k.signals.clear()
    cg.add_pid(12)
    cg.kill(signal.SIGTERM)
    assert k.signals == [(12, 15)]


def test_remove_everywhere_and_prune(host, tmp_path):
    k, cg = made(host)
    os.mkdir(f"{cg.paths['pids']}/nested")
    open(f"{cg.paths['pids']}/nested/cgroup.procs", "w").write("")
    cg.remove()
    assert not cg.exists()
    for d in set(cg.paths.values()):
        assert not os.path.exists(d) and not os.path.exists(os.path.dirname(d))
    assert os.path.isdir(f"{tmp_path}/fs/sys/fs/cgroup/memory/process_api/abc")
    cg.remove()


def test_remove_keeps_a_shared_parent_in_use(host):
    k, layout = host
    a, b = open_cgroup(None, "jaula-a", layout=layout, fs=k), open_cgroup(None, "jaula-b", layout=layout, fs=k)
    a.create()
    b.create()
    a.remove()
    assert b.exists() and os.path.isdir(os.path.dirname(b.paths["pids"]))
    b.remove()
    assert not os.path.exists(os.path.dirname(b.paths["pids"]))


def test_reopen(host):
    k, cg = made(host)
    again = reopen(cg.paths, layout=host[1], fs=k)
    assert again.paths == cg.paths
    again.remove()
    assert not cg.exists()


def test_stats_rows(host):
    k, cg = made(host)
    p = cg.paths
    data = {("memory", "memory.usage_in_bytes"): "1000", ("memory", "memory.max_usage_in_bytes"): "4000",
            ("memory", "memory.limit_in_bytes"): "20971520", ("memory", "memory.failcnt"): "12",
            ("memory", "memory.memsw.usage_in_bytes"): "1500", ("memory", "memory.memsw.limit_in_bytes"): "31457280",
            ("memory", "memory.oom_control"): "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ("pids", "pids.current"): "2", ("pids", "pids.peak"): "9", ("pids", "pids.max"): "16",
            ("pids", "pids.events"): "max 5\n", ("cpuacct", "cpuacct.usage"): "123456789",
            ("cpu", "cpu.stat"): "nr_periods 4\nnr_throttled 2\nthrottled_time 77\n",
            ("cpu", "cpu.cfs_quota_us"): "50000", ("cpu", "cpu.cfs_period_us"): "100000",
            ("blkio", "blkio.throttle.io_service_bytes_recursive"): "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\nTotal 150\n"}
    for (c, f), v in data.items():
        open(os.path.join(p[c], f), "w").write(v)
    open(os.path.join(p["unified"], "hugetlb.2MB.max"), "w").write("4194304\n")
    open(os.path.join(p["unified"], "hugetlb.2MB.current"), "w").write("0\n")
    st = cg.stats()
    m = st.row("memory")
    assert (m.held, m.maxheld, m.limit, m.failcnt, m.details["oom_kill"]) == (1000, 4000, 20971520, 12, 3)
    sw = st.row("swap")
    assert (sw.held, sw.limit) == (500, 10 * MiB)
    assert (st.row("pids").held, st.row("pids").maxheld, st.row("pids").failcnt) == (2, 9, 5)
    assert st.cpu_usage_ns == 123456789 and st.row("cpu").failcnt == 2 and st.row("cpu").limit == 500
    assert st.row("hugetlb.2MB").limit == 4194304
    assert st.row("io").held == 150 and st.row("io").details == {"read_bytes": 100, "write_bytes": 50}
    assert st.as_dict()["cpu_usage_ns"] == 123456789
