"""The secure defaults without a kernel: the seccomp profile (jaula.oci.seccomp_profile) as
compiled, run through the classic BPF interpreter of tests/unit/test_seccomp.py (what it denies
with EPERM, allows, answers ENOSYS); that every instance and `jaula-runtime spec` carry it; the
masked and read-only paths; that docs/security.md gives the reason of each choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaula.linux import seccomp as sc
from jaula.oci import seccomp as oci
from jaula.oci.seccomp import Seccomp
from jaula.oci.seccomp_profile import (
    AF_ALG,
    AF_VSOCK,
    DENIED,
    DENIED_ARGS,
    TIOCSTI,
    default_profile,
)
from jaula.oci.spec import MASKED_PATHS, READONLY_PATHS, default_spec
from tests.unit.test_seccomp import run

X86_64 = sc.syscall_numbers("x86_64")
I386 = sc.syscall_numbers("x86")
ALLOW = sc.SECCOMP_RET_ALLOW
EPERM = sc.SECCOMP_RET_ERRNO | 1
ENOSYS = sc.SECCOMP_RET_ERRNO | 38
DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@pytest.fixture(scope="module")
def prog() -> bytes:
    return oci.compile(Seccomp.from_json(default_profile("x86_64")), "x86_64")


@pytest.mark.parametrize("name", sorted(n for n in DENIED if n in X86_64))
def test_denied_calls_get_eperm(prog: bytes, name: str) -> None:
    assert run(prog, X86_64[name]) == EPERM
    if name in I386:  # a 32-bit binary gets the same answer
        assert run(prog, I386[name], sc.AUDIT_ARCH_I386) == EPERM


@pytest.mark.parametrize("name", ["read", "write", "openat2", "mount", "umount2", "unshare", "clone3", "setns",
                                  "ptrace", "pivot_root", "sethostname", "mknodat", "seccomp", "execveat",
                                  "mount_setattr", "landlock_create_ruleset", "pidfd_open"])
def test_ordinary_calls_are_allowed(prog: bytes, name: str) -> None:
    assert run(prog, X86_64[name]) == ALLOW


def test_unknown_numbers_get_enosys(prog: bytes) -> None:
    known = set(X86_64.values())
    for nr in (max(known) + 1, 999, 4000, 0x3FFFFFFF):
        assert nr not in known
        assert run(prog, nr) == ENOSYS
    assert run(prog, -1 & 0xFFFFFFFF) == ENOSYS


def test_argument_rules(prog: bytes) -> None:
    socket, ioctl = X86_64["socket"], X86_64["ioctl"]
    assert run(prog, socket, args=(AF_VSOCK, 1, 0)) == EPERM
    assert run(prog, socket, args=(AF_ALG, 5, 0)) == EPERM
    assert run(prog, socket, args=((1 << 32) | AF_VSOCK, 1, 0)) == EPERM  # an int: the upper half is noise
    for family in (1, 2, 10, 16, 17):  # unix, inet, inet6, netlink, packet
        assert run(prog, socket, args=(family, 1, 0)) == ALLOW
    assert run(prog, ioctl, args=(0, TIOCSTI, 0)) == EPERM
    assert run(prog, ioctl, args=(0, 0x5401, 0)) == ALLOW  # TCGETS
    assert run(prog, I386["socketcall"], sc.AUDIT_ARCH_I386) == ALLOW  # (socketcall's args are in memory)


def test_every_instance_and_the_runtime_spec_carry_it() -> None:
    for spec in (default_spec(), default_spec(rootless=True)):
        assert spec["linux"]["seccomp"] == default_profile()
    Seccomp.from_json(default_profile())  # valid as OCI linux.seccomp


def test_render_gives_every_instance_the_profile() -> None:
    from types import SimpleNamespace

    from jaula.instances import render
    from jaula.instances.model import Instance

    tpl = SimpleNamespace(command=["/bin/sh"], env=[], workdir="/", user="", rootfs="/nonexistent")
    for mode, cfg in (("system", {}), ("app", {}), ("system", {"security.privileged": "true"})):
        inst = Instance.new("x", "t", mode=mode, config=cfg,
                            idmap_base=None if cfg else 65536 * 10, command=["/bin/true"] if mode == "app" else None)
        spec = render.render(inst, inst.config, tpl, "/r", render.INITS["busybox"], known_caps=["CAP_CHOWN"],
                             nofile=(1024, 1024))
        assert spec["linux"]["seccomp"] == default_profile(), (mode, cfg)


def test_render_sets_rlimit_nproc_at_the_pids_limit() -> None:
    """A fork over RLIMIT_NPROC is refused before the kernel copies the address space and
    allocates a pid (the pids cgroup refuses last): a fork bomb costs its neighbours less
    (docs/security.md, "Exhaustion and the neighbour's latency")."""
    from types import SimpleNamespace

    from jaula.instances import render, settings
    from jaula.instances.model import Instance

    tpl = SimpleNamespace(command=["/bin/sh"], env=[], workdir="/", user="", rootfs="/nonexistent")
    for mode, cfg, want in (("system", {}, settings.DEFAULT_PROCESSES), ("app", {"limits.processes": "100"}, 100),
                            ("system", {"limits.processes": "300", "security.privileged": "true"}, 300)):
        inst = Instance.new("x", "t", mode=mode, config=cfg, idmap_base=None if "security.privileged" in cfg else 65536 * 10,
                            command=["/bin/true"] if mode == "app" else None)
        spec = render.render(inst, settings.effective(inst.config), tpl, "/r", render.INITS["busybox"],
                             known_caps=["CAP_CHOWN"], nofile=(1024, 1024))
        rl = {r["type"]: (r["soft"], r["hard"]) for r in spec["process"]["rlimits"]}
        assert rl["RLIMIT_NPROC"] == (want, want), (mode, cfg, rl)
        assert spec["linux"]["resources"]["pids"]["limit"] == want
        assert rl["RLIMIT_NOFILE"] == (1024, 1024)


def test_docs_give_every_choice() -> None:
    text = DOC.read_text()
    missing = [n for n in DENIED if f"`{n}`" not in text]
    missing += [f"{n}/{v}" for n, _, v, _ in DENIED_ARGS if f"`{n}`" not in text]
    assert not missing, f"docs/security.md does not explain: {missing}"
    assert "ENOSYS" in text and "EPERM" in text


# docker's (moby oci/defaults.go) and podman's (containers/common pkg/config) defaults; both added
# /proc/interrupts and each CPU's thermal_throttle in 2025 (moby#49560, containers/common#2375)
THERMAL = sorted(str(p) for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/thermal_throttle") if p.is_dir())
DOCKER_MASKED = {"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                 "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                 "/sys/devices/virtual/powercap", *THERMAL}
PODMAN_MASKED = {"/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                 "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats", "/sys/dev/block",
                 "/sys/devices/virtual/powercap", "/sys/firmware", "/sys/fs/selinux", *THERMAL}
READONLY = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}  # both


def test_masked_and_readonly_paths_are_at_least_dockers_and_podmans() -> None:
    assert DOCKER_MASKED | PODMAN_MASKED <= set(MASKED_PATHS)
    assert READONLY <= set(READONLY_PATHS)
