"""The escape attempts of tests/probe/escape.c, all run once in a default system instance, a default
app instance, a system instance with security.nesting=true and a system instance with jaulad's
lxcfs files over its /proc (root inside, unprivileged), one test id each: blocked (the call
failed) or contained (it worked on the instance's own objects only), never an escape. Where the host can see the effect itself (its
host name, clock, core_pattern, a process of its own, its mount table) it checks that too."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.security.lab import Lab

pytestmark = pytest.mark.root

ATTEMPTS = ["mount_debugfs", "mount_tracefs", "mount_securityfs", "mount_bpf", "mount_configfs", "mount_pstore", "mount_efivarfs", "mount_fusectl", "mount_hugetlbfs", "mount_autofs", "mount_ext4", "mount_xfs", "mount_btrfs", "mount_vfat", "mount_iso9660", "mount_nfs", "mount_proc_unmasked", "mount_sysfs_unmasked", "bind_root", "mount_propagation", "remount_sys_rw", "remount_proc_sys_rw", "remount_cgroup_rw", "unmask_kcore", "unmask_sysrq", "unmask_proc_sys", "mknod_mem", "mknod_kmem", "mknod_port", "mknod_sda", "mknod_nvme", "mknod_loop0", "open_mem", "open_kmem", "open_port", "open_sda", "open_vda", "open_nvme0n1", "open_loop0", "open_kmsg", "open_dm-0", "block_device_nodes", "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot_cad_off", "keyctl", "add_key", "request_key", "bpf", "perf_event_open_cpu", "perf_event_open_self", "userfaultfd", "io_uring_setup", "socket_vsock", "socket_alg", "swapon", "swapoff", "acct", "iopl", "ioperm", "syslog_read", "syslog_clear", "open_by_handle_at", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "sethostname", "setdomainname", "sysrq_trigger", "core_pattern", "sysctl_kernel_modprobe", "sysctl_kernel_panic", "sysctl_kernel_hostname", "sysctl_kernel_randomize_va_space", "sysctl_vm_overcommit_memory", "sysctl_vm_drop_caches", "sysctl_net_core_rmem_max", "sysctl_net_ipv4_ip_forward", "sysctl_fs_file_max", "sys_uevent_helper", "sys_power_state", "sys_kernel_mm_thp", "sys_class_net_lo_mtu", "sys_module_param", "read_kcore", "read_proc_keys", "read_timer_list", "read_sched_debug", "read_sys_firmware", "kallsyms_addresses", "oom_score_adj", "release_agent_existing", "release_agent_new_mount", "cgroup_namespace", "cgroup_parent_procs", "cgroup_own_procs", "cgroup_own_tasks", "cgroup_raise_pids_max", "cgroup_raise_memory_limit", "cgroup_devices_allow", "host_pid_visible", "kill_host_pid", "ptrace_host_pid", "pidfd_open_host_pid", "process_vm_readv_host", "host_pid1", "host_namespaces_via_proc", "setns_leaked_fd", "ns_get_parent_userns", "ns_get_parent_of_netns_owner", "leaked_fds_exec", "leaked_fds_init", "sched_fifo", "nice_minus_20", "ioprio_realtime", "raise_nofile_hard", "abstract_unix_host", "raw_socket_host_ifs", "netlink_audit", "tiocsti_own_terminal", "tiocsti_console", "nested_userns_caps", "pivot_root_dot", "chroot_double",
            "sysctl_kernel_sysrq", "cwd_exec_inside", "cwd_init_inside", "root_init_inside", "kill_other_instance",
            "ptrace_other_instance", "pidfd_other_instance", "lxcfs_write_meminfo", "lxcfs_write_cpuinfo",
            "lxcfs_write_uptime", "lxcfs_write_sys_cpu_online", "lxcfs_remount_rw_write", "lxcfs_mount_over",
            "lxcfs_fuse_device_open", "lxcfs_fuse_mknod", "lxcfs_mount_fuse", "lxcfs_fuse_abort"]

# attempt -> host files that must read the same after the battery (restored if they did not)
HOST_FILES = {
    "core_pattern": ["/proc/sys/kernel/core_pattern"],
    "unmask_proc_sys": ["/proc/sys/kernel/core_pattern"],
    "sysctl_kernel_modprobe": ["/proc/sys/kernel/modprobe"],
    "sysctl_kernel_panic": ["/proc/sys/kernel/panic"],
    "sysctl_kernel_sysrq": ["/proc/sys/kernel/sysrq"],
    "sysctl_kernel_hostname": ["/proc/sys/kernel/hostname"],
    "sethostname": ["/proc/sys/kernel/hostname"],
    "setdomainname": ["/proc/sys/kernel/domainname"],
    "sysctl_kernel_randomize_va_space": ["/proc/sys/kernel/randomize_va_space"],
    "sysctl_vm_overcommit_memory": ["/proc/sys/vm/overcommit_memory"],
    "sysctl_net_core_rmem_max": ["/proc/sys/net/core/rmem_max"],
    "sysctl_net_ipv4_ip_forward": ["/proc/sys/net/ipv4/ip_forward"],
    "sysctl_fs_file_max": ["/proc/sys/fs/file-max"],
    "reboot_cad_off": ["/proc/sys/kernel/ctrl-alt-del"],
    "sys_uevent_helper": ["/sys/kernel/uevent_helper"],
    "sys_kernel_mm_thp": ["/sys/kernel/mm/transparent_hugepage/enabled"],
    "sys_module_param": ["/sys/module/printk/parameters/time"],
    "swapon": ["/proc/swaps"],
    "swapoff": ["/proc/swaps"],
    "cgroup_devices_allow": [],
}
CLOCK_ATTEMPTS = {"settimeofday", "clock_settime", "adjtimex", "clock_adjtime"}


class Result(NamedTuple):
    status: str
    detail: str


class Battery(NamedTuple):
    results: dict[str, Result]
    output: str
    before: dict[str, str | None]
    after: dict[str, str | None]
    clock_shift: float
    sleeper: subprocess.Popen
    sleeper_traced: bool
    host_mounts: str
    other: Other
    lxcfs: object | None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _clock_offset() -> float:
    return time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)


class Other(NamedTuple):
    """Another instance, running beside the one under attack: its init's host pid."""
    pid: int


@pytest.fixture(scope="module")
def other(lab: Lab) -> Iterator[Other]:
    inst = lab.new()
    pid = lab.start(inst)
    yield Other(pid)
    lab.remove(inst)


def _traced(pid: int) -> bool:
    return "TracerPid:\t0\n" not in (_read(f"/proc/{pid}/status") or "TracerPid:\t0\n")


@pytest.fixture(scope="module")
def lxcfs_service(lab: Lab) -> Iterator[object]:
    """jaulad's lxcfs (jaula.daemon.lxcfs) for the lab's driver: instances started now get its files."""
    import shutil

    from jaula.daemon.lxcfs import Lxcfs
    from jaula.instances import lxcfs_view

    if shutil.which("lxcfs") is None:
        pytest.skip("no lxcfs binary (Debian's lxcfs package)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: the kernel has no FUSE")
    svc = Lxcfs(lab.driver.root)
    try:
        assert svc.start(watch=False), f"lxcfs did not start: {_read(svc.logfile)}"
        yield svc
    finally:
        svc.close(stop=True)
    assert not lxcfs_view.mounted(svc.mnt), "lxcfs's mount left behind"


@pytest.fixture(scope="module")
def console_keeper(lab: Lab) -> Iterator[str]:
    """jaulad's console keeper (jaula.daemon.console_keeper) for the lab's driver: its socket."""
    from jaula.daemon.console_keeper_service import KeeperService

    root = Path(lab.top) / "keeper"
    root.mkdir(exist_ok=True)
    svc = KeeperService(root)
    assert svc.start(watch=False), f"the console keeper did not start: {_read(str(svc.logfile))}"
    try:
        yield svc.path
    finally:
        svc.close()


@pytest.fixture(scope="module", params=["system", "app", "nesting", "lxcfs", "console"])
def battery(lab: Lab, other: Other, request: pytest.FixtureRequest) -> Iterator[Battery]:
    """The battery in a default system instance (root with every capability of its user
    namespace), in a default app instance (docker's reduced set, no_new_privs), in a system
    instance with security.nesting=true (its cgroups and /proc/sys writable: for containers inside),
    in a default system instance started while jaulad's lxcfs runs (its files over /proc's), and
    in one whose console is a pty held by jaulad's console keeper (as jaulad starts them)."""
    svc = request.getfixturevalue("lxcfs_service") if request.param == "lxcfs" else None
    if request.param == "app":
        inst = lab.new(mode="app", command=["/bin/sleep", "3600"])
    elif request.param == "nesting":
        inst = lab.new(config={"security.nesting": "true"})
    else:
        inst = lab.new()
    if request.param == "console":
        lab.driver.console_keeper = request.getfixturevalue("console_keeper")
    try:
        pid = lab.start(inst)
    finally:
        lab.driver.console_keeper = None
    if request.param == "console":  # the control: the init's stdio is its own pty, nothing else is open
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert targets and all(t.startswith("/dev/pts/") or t == "/dev/console" for t in targets), targets
    if svc is not None:  # the control: lxcfs's files are there
        code, out = lab.sh(inst, "grep -c fuse.lxcfs /proc/self/mountinfo")
        assert code == 0 and int(out) >= 7, f"the instance has no lxcfs files: {out}"
    files = sorted({f for fs in HOST_FILES.values() for f in fs})
    before = {f: _read(f) for f in files}
    offset = _clock_offset()
    sleeper = subprocess.Popen(["sleep", "600"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"jaula-sec-{os.getpid()}"
    listener.bind("\0" + name)
    listener.listen()
    marker = Path(lab.top) / "host-marker"
    marker.write_text("the host's")
    ns = {k: os.stat(f"/proc/self/ns/{k}").st_ino for k in ("net", "pid", "mnt", "user")}
    ifs = [i for i in os.listdir("/sys/class/net") if i != "lo"]
    try:
        code, out = lab.run(inst, ["/usr/bin/escape", "all", f"marker={marker}", f"pid={sleeper.pid}",
                                   f"other={other.pid}", *[f"{k}={v}" for k, v in ns.items()], f"abstract={name}",
                                   "ifs=" + ",".join(ifs)])
        assert code == 0, f"the escape helper failed ({code}): {out}"
        shift = _clock_offset() - offset
        after = {f: _read(f) for f in files}
        traced = "TracerPid:\t0\n" not in (_read(f"/proc/{sleeper.pid}/status") or "TracerPid:\t0\n")
        results = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                results[parts[0]] = Result(parts[1], parts[2])
        yield Battery(results, out, before, after, shift, sleeper, traced, _read("/proc/self/mountinfo") or "", other, svc)
    finally:
        for f, old in before.items():  # an escape must not damage the host past the test
            if old is not None and _read(f) != old:
                try:
                    Path(f).write_text(old)
                except OSError:
                    pass
        listener.close()
        sleeper.kill()
        sleeper.wait()
        lab.remove(inst)


def test_the_battery_runs_every_attempt(battery: Battery) -> None:
    assert battery.results.get("done") == Result("contained", "all attempts ran"), battery.output
    assert sorted(set(battery.results) - {"done"}) == sorted(ATTEMPTS), battery.output


@pytest.mark.attempt
@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_escape_attempt(battery: Battery, attempt: str) -> None:
    r = battery.results.get(attempt)
    assert r is not None, f"{attempt} did not run: {battery.output}"
    assert r.status in ("blocked", "contained"), f"{attempt}: {r.status} ({r.detail})"
    for f in HOST_FILES.get(attempt, []):
        assert battery.after[f] == battery.before[f], f"{attempt} changed the host's {f}"
    if attempt in CLOCK_ATTEMPTS:
        assert abs(battery.clock_shift) < 5, f"the host's clock moved by {battery.clock_shift:.1f} s"
    if attempt in ("kill_host_pid", "host_pid_visible", "pidfd_open_host_pid"):
        assert battery.sleeper.poll() is None, "the host's process was killed"
    if attempt == "ptrace_host_pid":
        assert not battery.sleeper_traced, "the host's process is being traced"
    if attempt == "mount_propagation":
        assert "escape-propagation" not in battery.host_mounts, "a mount made inside appeared on the host"
    if attempt in ("kill_other_instance", "pidfd_other_instance"):
        assert os.path.exists(f"/proc/{battery.other.pid}"), "the other instance's init was killed"
    if attempt == "ptrace_other_instance":
        assert not _traced(battery.other.pid), "the other instance's init is being traced"
    if attempt.startswith("lxcfs_") and battery.lxcfs is not None:
        from jaula.instances import lxcfs_view

        svc = battery.lxcfs
        assert svc.pid and os.path.exists(f"/proc/{svc.pid}"), "lxcfs died"  # type: ignore[attr-defined]
        assert lxcfs_view.usable(svc.mnt), "lxcfs's mount no longer answers"  # type: ignore[attr-defined]
        meminfo = Path(svc.mnt, "proc/meminfo").read_text()  # type: ignore[attr-defined]
        assert meminfo.startswith("MemTotal:") and "MemTotal: 1 kB" not in meminfo, meminfo[:200]
    if attempt == "sethostname":
        assert socket.gethostname() != "escaped-host"
