"""The cgroup v2 driver on a synthetic unified tree, and its eBPF device program run by a small interpreter."""

from __future__ import annotations

import os
import random
import signal

import pytest
from cgroupfs_fake import v2_host
from ebpf_interp import check_cfg, run

from jaula.cgroups import bpf
from jaula.cgroups.base import SYSTEMD_PATH, open_cgroup, reopen
from jaula.cgroups.resources import DeviceRule, Resources
from jaula.errors import ConfigError, JaulaError, KernelMissing

MiB = 2**20
CALLER = "fs/sys/fs/cgroup/user.slice/jaula-test.scope"


@pytest.fixture
def host(tmp_path):
    return v2_host(str(tmp_path))


def made(host, path=None, name="jaula-t1"):
    k, layout = host
    cg = open_cgroup(path, name, layout=layout, fs=k)
    cg.create()
    k.writes.clear()
    return k, cg


# ---- probing and paths ---------------------------------------------------------------------------

def test_probe_pure_v2(host):
    _, layout = host
    assert layout.mode == "v2" and layout.v1 == {}
    assert layout.unified.current == "/user.slice/jaula-test.scope"
    assert set(layout.unified.controllers) == {"cpuset", "cpu", "io", "memory", "hugetlb", "pids"}


def test_default_path_is_below_the_caller(host, tmp_path):
    k, layout = host
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    assert cg.paths == {"unified": f"{tmp_path}/{CALLER}/jaula/jaula-t1"}


def test_relative_and_absolute_paths(host, tmp_path):
    k, layout = host
    assert open_cgroup("pods/c1", "x", layout=layout, fs=k).paths["unified"] == f"{tmp_path}/{CALLER}/pods/c1"
    assert open_cgroup("/machine/c1", "x", layout=layout, fs=k).paths["unified"] == f"{tmp_path}/fs/sys/fs/cgroup/machine/c1"


@pytest.mark.parametrize("path,msg", [
    ("system.slice:jaula:c1", SYSTEMD_PATH),
    ("a/../../b", "use a path without '..'"),
    ("/", "use a path without '..' below the cgroup root"),
])
def test_refused_paths(host, path, msg):
    k, layout = host
    with pytest.raises(ConfigError) as e:
        open_cgroup(path, "c1", layout=layout, fs=k)
    assert msg in str(e.value) and repr(path) in str(e.value)


def test_refused_names_and_the_callers_own_cgroup(host):
    k, layout = host
    with pytest.raises(ConfigError, match="cgroup name '../x'"):
        open_cgroup(None, "../x", layout=layout, fs=k)
    with pytest.raises(ConfigError, match="the caller's own cgroup or holds it"):
        open_cgroup("/user.slice", "c1", layout=layout, fs=k)


# ---- create and delegation -----------------------------------------------------------------------

def test_create_delegates_in_directories_it_made_only(host, tmp_path):
    k, layout = host
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    assert cg.exists()
    jaula = f"{CALLER}/jaula/cgroup.subtree_control"
    assert k.written(jaula) == ["+cpu", "+cpuset", "+io", "+memory", "+pids"]
    assert not k.written(f"{CALLER}/cgroup.subtree_control")       # the caller's own cgroup is left alone
    leaf = cg.paths["unified"]
    assert set(open(f"{leaf}/cgroup.controllers").read().split()) == {"cpuset", "cpu", "io", "memory", "pids"}
    cg.create()                                                     # again: nothing new, no error


def test_apply_enables_a_needed_controller_from_the_caller_down(host):
    k, cg = made(host)
    cg.apply(Resources.from_oci({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]}))
    assert k.written(f"{CALLER}/cgroup.subtree_control") == ["+hugetlb"]
    assert k.written(f"{CALLER}/jaula/cgroup.subtree_control") == ["+hugetlb"]
    assert k.written("jaula-t1/hugetlb.2MB.max") == [str(4 * MiB)]


def test_delegation_refused_when_the_caller_has_processes(tmp_path):
    k, layout = v2_host(str(tmp_path), caller_subtree="")
    open(f"{tmp_path}/{CALLER}/cgroup.procs", "w").write("4242\n")
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    k.writes.clear()
    with pytest.raises(KernelMissing) as e:
        cg.apply(Resources.from_oci({"memory": {"limit": 20 * MiB}}))
    msg = str(e.value)
    assert "cannot write '+memory' to" in msg and "cgroup.subtree_control" in msg
    assert "has processes of its own" in msg
    assert not [w for w in k.writes if not w[0].endswith("cgroup.subtree_control")]


# ---- resources -----------------------------------------------------------------------------------

def test_apply_writes_every_value_converted_for_v2(host):
    k, cg = made(host)
    cg.apply(Resources.from_oci({
        "memory": {"limit": 20 * MiB, "swap": 30 * MiB, "reservation": 10 * MiB},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 1000, "cpus": "0-1", "mems": "0", "idle": 0},
        "pids": {"limit": 16},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 0}]},
        "hugepageLimits": [{"pageSize": "1GB", "limit": 0}],
        "unified": {"memory.high": "18000000"},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}],
    }))
    w = dict((p.split("/jaula-t1/")[-1], v) for p, v in k.writes if "/jaula-t1/" in p)
    assert w["memory.max"] == str(20 * MiB)
    assert w["memory.swap.max"] == str(10 * MiB)              # OCI memory+swap minus memory
    assert w["memory.low"] == str(10 * MiB)
    assert w["cpu.weight"] == "20"                            # 1 + (510 * 9999) // 262142
    assert w["cpu.max"] == "50000 100000"
    assert w["cpu.max.burst"] == "1000"
    assert (w["cpuset.cpus"], w["cpuset.mems"], w["cpu.idle"]) == ("0-1", "0", "0")
    assert w["pids.max"] == "16"
    assert k.written("jaula-t1/io.weight") == ["default 4950", "8:0 10000"]
    assert k.written("jaula-t1/io.max") == ["8:0 rbps=1048576", "8:16 wiops=max"]
    assert w["hugetlb.1GB.max"] == "0"
    assert w["memory.high"] == "18000000"
    assert w["<bpf>"] == "2 rules"
    assert k.writes[-1][0].endswith("<bpf>")                 # devices after the limits
    assert k.writes[-2][0].endswith("memory.high")          # unified keys last: they override


def test_io_weight_goes_to_bfq_unconverted_when_present(host):
    k, cg = made(host)
    open(os.path.join(cg.paths["unified"], "io.bfq.weight"), "w").write("default 100\n")
    cg.update(Resources.from_oci({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 20}]}}))
    assert k.written("io.bfq.weight") == ["500", "8:0 20"]
    assert not k.written("io.weight")


def test_update_writes_only_what_is_set(host):
    k, cg = made(host)
    open(os.path.join(cg.paths["unified"], "cpu.max"), "w").write("20000 50000\n")
    cg.update(Resources.from_oci({"cpu": {"quota": 30000}}))
    assert k.writes == [(f"{CALLER}/jaula/jaula-t1/cpu.max", "30000 50000")]    # period kept
    k.writes.clear()
    cg.update(Resources.from_oci({"cpu": {"period": 200000}}))
    assert k.writes == [(f"{CALLER}/jaula/jaula-t1/cpu.max", "30000 200000")]
    k.writes.clear()
    open(os.path.join(cg.paths["unified"], "memory.max"), "w").write(f"{20 * MiB}\n")
    k.writes.clear()
    cg.update(Resources.from_oci({"memory": {"swap": 50 * MiB}}))
    assert k.writes == [(f"{CALLER}/jaula/jaula-t1/memory.swap.max", str(30 * MiB))]


def test_swap_without_any_memory_limit_is_refused(host):
    k, cg = made(host)
    with pytest.raises(ConfigError, match=r"memory.swap: a swap limit needs a memory limit"):
        cg.update(Resources.from_oci({"memory": {"swap": 50 * MiB}}))
    assert k.writes == []


def test_apply_resets_what_is_unset(host):
    k, cg = made(host)
    cg.apply(Resources())
    w = dict((os.path.basename(p), v) for p, v in k.writes)
    assert w == {"memory.max": "max", "memory.swap.max": "max", "memory.low": "0", "cpu.weight": "100",
                 "cpu.max": "max", "cpu.max.burst": "0", "pids.max": "max", "io.weight": "default 100"}


def test_apply_resets_cpuset_throttles_and_hugetlb_left_unset(host):
    k, cg = made(host)
    cg.update(Resources.from_oci({"cpu": {"cpus": "1"}, "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB},
                                                                           {"pageSize": "1GB", "limit": 0}]}))
    d = cg.paths["unified"]
    open(os.path.join(d, "io.max"), "w").write("8:0 rbps=1048576 wbps=max riops=max wiops=30\n8:16 rbps=max wbps=max riops=7 wiops=max\n")
    k.writes.clear()
    cg.apply(Resources.from_oci({"blockIO": {"throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 40}]},
                                 "hugepageLimits": [{"pageSize": "2MB", "limit": 8 * MiB}]}))
    w = [(os.path.basename(p), v) for p, v in k.writes]
    assert ("cpuset.cpus", "\n") in w and not any(n == "cpuset.mems" for n, _ in w)
    assert [v for n, v in w if n == "io.max"] == ["8:0 wiops=40", "8:0 rbps=max", "8:16 riops=max"]
    assert [v for n, v in w if n.startswith("hugetlb.")] == [str(8 * MiB), "max"]
    assert ("hugetlb.1GB.max", "max") in w
    k.writes.clear()
    cg.update(Resources())
    assert k.writes == []


def test_unlimited_values_are_max(host):
    k, cg = made(host)
    cg.update(Resources.from_oci({"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}}))
    w = dict((os.path.basename(p), v) for p, v in k.writes)
    assert w == {"memory.max": "max", "memory.swap.max": "max", "pids.max": "max", "cpu.max": "max 100000"}


def test_knobs_v2_lacks(host, caplog):
    k, cg = made(host)
    with pytest.raises(KernelMissing) as e:
        cg.update(Resources.from_oci({"cpu": {"realtimeRuntime": 100}, "network": {"classID": 5}}))
    assert "cgroup v2 has no realtime CPU bandwidth" in str(e.value)
    assert "net_cls and net_prio exist on cgroup v1 only" in str(e.value)
    cg.update(Resources.from_oci({"memory": {"swappiness": 10, "kernel": 100, "disableOOMKiller": True}}))
    assert "memory.swappiness=10 ignored" in caplog.text and "memory.kernel=100 ignored" in caplog.text
    with pytest.raises(ConfigError, match="cgroup v2 is always hierarchical"):
        cg.update(Resources.from_oci({"memory": {"useHierarchy": False}}))


def test_missing_controller_and_file_are_named(tmp_path):
    k, layout = v2_host(str(tmp_path), root_subtree="cpu memory", controllers="cpu memory", caller_subtree="cpu memory")
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    cg.create()
    k.writes.clear()
    with pytest.raises(KernelMissing) as e:
        cg.apply(Resources.from_oci({"pids": {"limit": 5}, "hugepageLimits": [{"pageSize": "64KB", "limit": 1}],
                                     "memory": {"limit": 5 * MiB}}))
    msg = str(e.value)
    assert "linux.resources: the pids controller is not available in" in msg
    assert "pids.max does not exist: the pids controller is not enabled for this cgroup" in msg
    assert "hugetlb.64KB.max does not exist" in msg
    assert k.writes == []                                     # nothing written when anything is wrong


def test_unified_key_that_does_not_exist(host):
    k, cg = made(host)
    with pytest.raises(KernelMissing, match=r"unified.memory.nosuch: .*memory.nosuch does not exist: no such interface file"):
        cg.update(Resources.from_oci({"unified": {"memory.nosuch": "1"}}))


def test_apply_before_create_says_so(host):
    k, layout = host
    cg = open_cgroup(None, "jaula-t1", layout=layout, fs=k)
    with pytest.raises(KernelMissing, match=r"create\(\) it first"):
        cg.update(Resources.from_oci({"pids": {"limit": 5}}))


def test_check_before_update(host):
    k, cg = made(host)
    open(os.path.join(cg.paths["unified"], "memory.current"), "w").write(f"{30 * MiB}\n")
    with pytest.raises(ConfigError, match="below the current usage 31457280"):
        cg.update(Resources.from_oci({"memory": {"limit": 20 * MiB, "checkBeforeUpdate": True}}))
    cg.update(Resources.from_oci({"memory": {"limit": 20 * MiB}}))
    assert k.written("memory.max") == [str(20 * MiB)]


# ---- processes, freezer, kill, remove -------------------------------------------------------------

def test_add_pid_pids_recursive_and_kill(host):
    k, cg = made(host)
    cg.add_pid(101)
    os.mkdir(os.path.join(cg.paths["unified"], "sub"))        # a cgroup the container made itself
    open(os.path.join(cg.paths["unified"], "sub", "cgroup.procs"), "w").write("202\n203\n")
    assert cg.pids() == [101, 202, 203]
    cg.kill(signal.SIGTERM)
    assert sorted(k.signals) == [(101, 15), (202, 15), (203, 15)]
    k.signals.clear()
    cg.kill(signal.SIGKILL)
    assert k.written("jaula-t1/cgroup.kill") == ["1"] and k.signals == []
    os.remove(os.path.join(cg.paths["unified"], "cgroup.kill"))   # before Linux 5.14: one signal per process
    open(os.path.join(cg.paths["unified"], "cgroup.procs"), "w").write("101\n")
    open(os.path.join(cg.paths["unified"], "sub", "cgroup.procs"), "w").write("202\n")
    cg.kill(signal.SIGKILL)
    assert sorted(k.signals) == [(101, 9), (202, 9)]


def test_freeze_thaw(host):
    k, cg = made(host)
    assert not cg.frozen()
    cg.freeze()
    assert k.written("cgroup.freeze") == ["1"] and cg.frozen()
    cg.thaw()
    assert k.written("cgroup.freeze") == ["1", "0"] and not cg.frozen()


def test_freeze_timeout_thaws_again(host):
    k, cg = made(host)
    real_write = k.write

    def stuck(path, value):        # the kernel never reports frozen
        real_write(path, value)
        if path.endswith("cgroup.freeze"):
            open(os.path.join(os.path.dirname(path), "cgroup.events"), "w").write("populated 1\nfrozen 0\n")
    k.write = stuck
    with pytest.raises(JaulaError, match="no 'frozen 1' after 0.05s"):
        cg.freeze(timeout=0.05)
    assert k.written("cgroup.freeze") == ["1", "0"]


def test_remove_is_leaf_first_waits_for_busy_and_prunes(host, tmp_path):
    k, cg = made(host)
    leaf = cg.paths["unified"]
    os.mkdir(os.path.join(leaf, "sub"))
    open(os.path.join(leaf, "sub", "cgroup.procs"), "w").write("")
    k.busy_rmdirs[leaf] = 3                                   # dying tasks keep it busy a little
    cg.remove()
    assert not os.path.exists(leaf) and not os.path.exists(os.path.dirname(leaf))
    assert os.path.isdir(f"{tmp_path}/{CALLER}")
    cg.remove()                                               # already gone: no error
    assert not cg.exists()


def test_remove_gives_up_naming_the_processes(host):
    k, cg = made(host)
    cg.add_pid(77)
    with pytest.raises(OSError, match=r"rmdir '.*jaula-t1' \(processes left: 77\)"):
        cg.remove(timeout=0.05)


def test_reopen_from_saved_paths(host):
    k, cg = made(host)
    again = reopen(cg.paths, layout=host[1], fs=k)
    assert again.paths == cg.paths
    again.update(Resources.from_oci({"pids": {"limit": 9}}))
    assert k.written("jaula-t1/pids.max") == ["9"]
    again.remove()
    assert not os.path.exists(os.path.dirname(cg.paths["unified"]))


def test_stats_rows(host):
    k, cg = made(host)
    d = cg.paths["unified"]
    files = {"memory.current": "1000", "memory.peak": "5000", "memory.max": "20971520",
             "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n", "memory.swap.current": "10",
             "memory.swap.max": "max", "pids.current": "3", "pids.max": "16", "pids.events": "max 4\n",
             "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 6\nthrottled_usec 9\n",
             "cpu.max": "150000 100000", "io.stat": "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n"}
    for name, text in files.items():
        open(os.path.join(d, name), "w").write(text)
    st = cg.stats()
    assert st.cpu_usage_ns == 1500000
    mem = st.row("memory")
    assert (mem.held, mem.maxheld, mem.limit, mem.failcnt) == (1000, 5000, 20971520, 7)
    assert mem.details == {"oom": 2, "oom_kill": 1, "high": 0}
    assert (st.row("swap").held, st.row("swap").limit) == (10, None)
    assert (st.row("pids").held, st.row("pids").limit, st.row("pids").failcnt) == (3, 16, 4)
    cpu = st.row("cpu")
    assert (cpu.held, cpu.limit, cpu.failcnt) == (1500000, 1500, 6)
    assert st.row("io").held == 123
    assert st.as_dict()["rows"][0]["resource"] == "memory"
    assert "memory" in st.beancounters() and "max" in st.beancounters()


# ---- the eBPF device program -----------------------------------------------------------------------

R, W_, M = bpf.ACC_READ, bpf.ACC_WRITE, bpf.ACC_MKNOD
C, B = bpf.DEV_CHAR, bpf.DEV_BLOCK
OCI_DEFAULT = [DeviceRule(False)] + [DeviceRule(True, "c", 1, n, "rwm") for n in (3, 5, 7, 8, 9)] + [
    DeviceRule(True, "c", 5, 0, "rwm"), DeviceRule(True, "c", 5, 2, "rwm"), DeviceRule(True, "c", 136, None, "rwm"),
    DeviceRule(True, "c", 1, 9, "r"), DeviceRule(False, "c", 1, 8, "w")]


def expected(rules: list[DeviceRule], t: int, acc: int, major: int, minor: int) -> int:
    """OCI semantics spelled plainly: the last rule that matches decides; none denies."""
    verdict = 0
    for r in rules:
        tmatch = r.type == "a" or {"c": C, "b": B}[r.type] == t
        amask = sum({"r": R, "w": W_, "m": M}[c] for c in r.access)
        if tmatch and acc & amask == acc and r.major in (None, major) and r.minor in (None, minor):
            verdict = 1 if r.allow else 0
    return verdict


def test_encoding_matches_the_kernel_layout():
    assert bpf.exit_().encode() == bytes.fromhex("9500000000000000")
    assert bpf.ldx_w(bpf.R2, bpf.R1, 4).encode() == bytes.fromhex("6112040000000000")
    assert bpf.jne_imm(bpf.R4, 136, 3).encode() == bytes.fromhex("5504030088000000")
    assert bpf.jne_reg(bpf.R1, bpf.R3, 2).encode() == bytes.fromhex("5d31020000000000")
    assert bpf.alu32(bpf.BPF_AND, bpf.R2, 0xFFFF).encode() == bytes.fromhex("54020000ffff0000")


@pytest.mark.parametrize("dev,want", [
    ((C, R | W_, 1, 3), 1),     # /dev/null read-write
    ((C, M, 1, 3), 1),          # mknod /dev/null
    ((C, R, 1, 9), 1),          # urandom
    ((C, W_, 1, 8), 0),         # /dev/random write: the later deny rule wins
    ((C, R, 1, 8), 1),
    ((C, R | W_, 136, 4), 1),   # any pts
    ((C, R, 1, 1), 0),          # /dev/mem
    ((B, R, 8, 0), 0),          # a disk
    ((B, R, 1, 3), 0),          # block 1:3 is not char 1:3
])
def test_default_device_list(dev, want):
    prog = bpf.device_program(OCI_DEFAULT)
    assert run(prog, *dev) == want == expected(OCI_DEFAULT, *dev)


def test_allow_all_then_deny_some():
    rules = [DeviceRule(True), DeviceRule(False, "b", 8, None, "w"), DeviceRule(False, "a", None, None, "m")]
    prog = bpf.device_program(rules)
    assert run(prog, B, W_, 8, 1) == 0
    assert run(prog, B, R, 8, 1) == 1
    assert run(prog, C, M, 1, 3) == 0 and run(prog, B, M, 1, 3) == 0
    assert run(prog, C, R | W_, 4, 1) == 1


def test_a_wildcard_rule_ends_the_program_without_unreachable_code():
    prog = bpf.device_program([DeviceRule(False, "c", 1, 3), DeviceRule(True)])
    check_cfg(prog)
    assert len(prog) == 6 + 2 and run(prog, C, R, 1, 3) == 1
    assert run(bpf.device_program([]), C, R, 1, 3) == 0       # no rules: deny


def test_random_rule_lists_agree_with_oci_semantics():
    rnd = random.Random(1234)
    for _ in range(300):
        rules = [DeviceRule(rnd.random() < 0.6, rnd.choice("abcc"), rnd.choice([None, 1, 5, 8]),
                            rnd.choice([None, 0, 3, 5]), "".join(c for c in "rwm" if rnd.random() < 0.6) or "r")
                 for _ in range(rnd.randint(0, 6))]
        prog = bpf.device_program(rules)
        for _ in range(20):
            dev = (rnd.choice([B, C]), rnd.choice([R, W_, M, R | W_, R | W_ | M]), rnd.choice([1, 5, 8]), rnd.choice([0, 3, 5]))
            assert run(prog, *dev) == expected(rules, *dev), (rules, dev)


def test_devices_update_replaces_the_program(host):
    k, cg = made(host)
    cg.update(Resources.from_oci({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]}))
    assert run(k.programs[cg.paths["unified"]], C, R, 1, 5) == 0
    cg.update(Resources.from_oci({"devices": [{"allow": True}]}))
    assert run(k.programs[cg.paths["unified"]], C, R, 1, 5) == 1
    k.writes.clear()
    cg.update(Resources.from_oci({"pids": {"limit": 3}}))      # no devices given: the program stays
    assert not [w for w in k.writes if w[0].endswith("<bpf>")]
