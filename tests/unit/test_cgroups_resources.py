"""OCI linux.resources parsing, its error messages, and the v1 <-> v2 conversions."""

from __future__ import annotations

import pytest

from jaula.cgroups.resources import (
    DeviceRule, Resources, blkio_weight_to_io_weight, cpus_to_quota, quota_to_cpus, shares_to_weight,
    shares_to_weight_quadratic, swap_v2, weight_to_shares,
)
from jaula.errors import ConfigError

FULL = {
    "memory": {"limit": 536870912, "reservation": 268435456, "swap": 1073741824, "kernel": -1, "kernelTCP": 8388608,
               "swappiness": 10, "disableOOMKiller": True, "useHierarchy": True, "checkBeforeUpdate": False},
    "cpu": {"shares": 512, "quota": 150000, "burst": 10000, "period": 100000, "realtimeRuntime": 950, "realtimePeriod": 1000,
            "cpus": "0-1,3", "mems": "0", "idle": 1},
    "pids": {"limit": 64},
    "blockIO": {"weight": 500, "leafWeight": 300,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 600, "leafWeight": 200}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 2097152}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}],
    "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
    "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                {"allow": True, "type": "c", "major": 136, "access": "rwm"}],
    "unified": {"memory.high": "400000000"},
    "rdma": {"mlx5_1": {"hcaHandles": 3}},     # unknown to jaula: ignored, as the OCI spec requires
}


def test_full_object_parses_into_every_field():
    r = Resources.from_oci(FULL)
    assert r.memory.limit == 536870912 and r.memory.swap == 1073741824 and r.memory.kernel_tcp == 8388608
    assert r.memory.disable_oom_killer is True and r.memory.check_before_update is False
    assert (r.cpu.shares, r.cpu.quota, r.cpu.burst, r.cpu.period) == (512, 150000, 10000, 100000)
    assert (r.cpu.realtime_runtime, r.cpu.realtime_period, r.cpu.cpus, r.cpu.mems, r.cpu.idle) == (950, 1000, "0-1,3", "0", 1)
    assert r.pids.limit == 64
    b = r.block_io
    assert (b.weight, b.leaf_weight) == (500, 300)
    assert (b.weight_device[0].major, b.weight_device[0].weight, b.weight_device[0].leaf_weight) == (8, 600, 200)
    assert b.throttle_read_bps_device[0].rate == 1048576 and b.throttle_write_bps_device[0].minor == 16
    assert b.throttle_read_iops_device[0].rate == 100 and b.throttle_write_iops_device[0].rate == 0
    assert r.hugepage_limits[0].page_size == "2MB" and r.hugepage_limits[0].limit == 209715200
    assert r.network.class_id == 1048577 and r.network.priorities[0].name == "eth0"
    assert r.devices == [DeviceRule(False, "a", None, None, "rwm"), DeviceRule(True, "c", 1, 3, "rw"),
                         DeviceRule(True, "c", 136, None, "rwm")]
    assert r.unified == {"memory.high": "400000000"}


def test_unset_means_none_so_update_leaves_it():
    r = Resources.from_oci({})
    assert r.memory is None and r.cpu is None and r.pids is None and r.devices is None and r.unified == {}
    assert Resources.from_oci({"cpu": {"cpus": "", "mems": ""}}).cpu.cpus is None   # "" is "not set" for many tools


def test_every_problem_is_reported_at_once_naming_the_field():
    bad = {
        "memory": {"limit": -5, "swap": 100, "swappiness": 101, "disableOOMKiller": "yes"},
        "cpu": {"shares": 1, "quota": 10, "period": 999, "cpus": "0-a", "idle": 2},
        "pids": {"limit": -2},
        "blockIO": {"weight": 5, "throttleReadBpsDevice": [{"major": 8, "rate": 1}]},
        "hugepageLimits": [{"pageSize": "3XB", "limit": 1}],
        "devices": [{"allow": True, "type": "x", "access": "rwx"}, {"type": "c"}],
        "unified": {"cgroup.procs": "1", "a/b": "1", "memory.high": 5},
    }
    with pytest.raises(ConfigError) as e:
        Resources.from_oci(bad)
    p = e.value.problems
    assert "linux.resources.memory.limit: -5 is not allowed; use a positive byte count or -1 for unlimited" in p
    assert any(x.startswith("linux.resources.memory.swappiness: 101 is not allowed") for x in p)
    assert "linux.resources.memory.disableOOMKiller: 'yes' is not a boolean (true or false)" in p
    assert any(x.startswith("linux.resources.cpu.shares: 1 is not allowed; use 2 to 262144") for x in p)
    assert any(x.startswith("linux.resources.cpu.quota: 10 is not allowed") for x in p)
    assert any(x.startswith("linux.resources.cpu.period: 999") for x in p)
    assert "linux.resources.cpu.cpus: '0-a' is not a list like \"0-3,6\"" in p
    assert any(x.startswith("linux.resources.cpu.idle: 2") for x in p)
    assert any(x.startswith("linux.resources.pids.limit: -2 is not allowed") for x in p)
    assert any(x.startswith("linux.resources.blockIO.weight: 5 is not allowed; use 10 to 1000") for x in p)
    assert "linux.resources.blockIO.throttleReadBpsDevice[0].minor: missing" in p
    assert any(x.startswith("linux.resources.hugepageLimits[0].pageSize: '3XB'") for x in p)
    assert any(x.startswith("linux.resources.devices[0].type: 'x'") for x in p)
    assert any(x.startswith("linux.resources.devices[0].access: 'rwx'") for x in p)
    assert "linux.resources.devices[1].allow: missing; say true or false" in p
    assert any(x.startswith("linux.resources.unified.cgroup.procs: jaula manages this file") for x in p)
    assert any("'a/b' is not a cgroup v2 interface file name" in x for x in p)
    assert "linux.resources.unified.memory.high: 5 is not a string" in p
    assert len(p) >= 17
    assert str(e.value).count("; ") >= 16          # the message lists them all


def test_swap_below_limit_and_burst_above_quota_are_refused():
    with pytest.raises(ConfigError) as e:
        Resources.from_oci({"memory": {"limit": 200, "swap": 100}, "cpu": {"quota": 5000, "burst": 6000}})
    assert any("memory.swap: 100 is below memory.limit 200" in x for x in e.value.problems)
    assert any("cpu.burst: 6000 is above quota 5000" in x for x in e.value.problems)


def test_where_prefix_and_types():
    with pytest.raises(ConfigError) as e:
        Resources.from_oci({"memory": [1], "pids": {}, "devices": {}}, where="instance.limits")
    assert e.value.problems == ["instance.limits.memory: [1] is not an object",
                                "instance.limits.pids.limit: missing; use a number of tasks or -1 for unlimited",
                                "instance.limits.devices: {} is not an array"]
    with pytest.raises(ConfigError):
        Resources.from_oci({"memory": {"limit": True}})      # a bool is not a byte count
    with pytest.raises(ConfigError):
        Resources.from_oci("x")


def test_device_rules_wildcards_and_v1_lines():
    r = Resources.from_oci({"devices": [{"allow": True, "type": "b", "major": -1, "minor": 2, "access": "mr"}]})
    assert r.devices == [DeviceRule(True, "b", None, 2, "rm")]            # access normalised to rwm order
    assert r.devices[0].v1_lines() == ["b *:2 rm"]
    assert DeviceRule(False).v1_lines() == ["a"]
    assert DeviceRule(True, "a", 1, None, "r").v1_lines() == ["c 1:* r", "b 1:* r"]


def test_shares_to_weight_linear_like_runc():
    assert shares_to_weight(2) == 1
    assert shares_to_weight(1024) == 39
    assert shares_to_weight(262144) == 10000
    assert shares_to_weight(0) == 0
    assert weight_to_shares(1) == 2 and weight_to_shares(10000) == 262144
    assert weight_to_shares(shares_to_weight(512)) in range(500, 513)


def test_shares_to_weight_quadratic_like_new_crun():
    assert shares_to_weight_quadratic(2) == 1
    assert shares_to_weight_quadratic(1024) == 100
    assert shares_to_weight_quadratic(262144) == 10000
    values = [shares_to_weight_quadratic(s) for s in (2, 10, 100, 1000, 10000, 100000, 262144)]
    assert values == sorted(values)


def test_blkio_weight_to_io_weight():
    assert blkio_weight_to_io_weight(10) == 1
    assert blkio_weight_to_io_weight(500) == 4950
    assert blkio_weight_to_io_weight(1000) == 10000


def test_swap_v2_is_swap_minus_limit():
    assert swap_v2(100, 300) == 200
    assert swap_v2(100, 100) == 0          # memory+swap == memory: no swap at all
    assert swap_v2(100, -1) == -1
    assert swap_v2(-1, None) == -1         # unlimited memory, swap not given: unlimited swap too (runc)
    assert swap_v2(100, None) is None and swap_v2(100, 0) is None
    with pytest.raises(ValueError, match="needs a memory limit"):
        swap_v2(None, 300)
    with pytest.raises(ValueError, match="below memory limit"):
        swap_v2(300, 100)


def test_cpus_to_quota():
    assert cpus_to_quota(1.5, period=100000) == (150000, 100000)
    assert cpus_to_quota(0.5, period=50000) == (25000, 50000)
    assert cpus_to_quota(0.001) == (1000, 100000)      # the kernel's floor is 1 ms
    assert quota_to_cpus(150000, 100000) == 1.5 and quota_to_cpus(-1, 100000) is None
    with pytest.raises(ValueError):
        cpus_to_quota(0)
