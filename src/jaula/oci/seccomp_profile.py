"""The default seccomp profile of jaula instances and of `jaula-runtime spec` (OCI linux.seccomp).

Every syscall this kernel generation knows is allowed, except those that reach the host kernel's
global state, which fail with EPERM (each with its reason in DENIED, and in docs/security.md);
any other number (a syscall newer than our table, or none) fails with ENOSYS, so a libc falls
back to an older call as it does on an older kernel. The instance's user namespace already keeps
most of the denied calls from doing harm; the filter also shuts their code paths, where most
kernel bugs reachable from a container have been (io_uring, keyrings, bpf, perf, userfaultfd).
"""

from __future__ import annotations

import os
from typing import Any

from jaula.linux import seccomp as sc

ENOSYS = 38
EPERM = 1
AF_ALG = 38
AF_VSOCK = 40
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

# name -> why it is denied (EPERM). Not reboot: from the instance's own pid namespace (it always has
# one) the kernel only ends that namespace's init, SIGHUP for a restart, SIGINT for a halt or power
# off (reboot_pid_ns in kernel/pid_namespace.c), which is how a system instance's init says which.
DENIED: dict[str, str] = {
    "init_module": "loads code into the host kernel",
    "finit_module": "loads code into the host kernel",
    "delete_module": "unloads host kernel modules",
    "create_module": "obsolete module loading",
    "get_kernel_syms": "obsolete module interface",
    "query_module": "obsolete module interface",
    "kexec_load": "replaces the host kernel",
    "kexec_file_load": "replaces the host kernel",
    "keyctl": "the kernel keyrings are not isolated per instance (keys, quotas, request_key upcalls)",
    "add_key": "the kernel keyrings are not isolated per instance",
    "request_key": "the kernel keyrings are not isolated per instance; may run a host upcall",
    "bpf": "loads programs into the host kernel",
    "perf_event_open": "observes the host's CPUs and kernel; a frequent source of kernel bugs",
    "open_by_handle_at": "opens files of the host by handle, past the instance's root (shocker)",
    "userfaultfd": "stalls kernel page faults at will (a tool of kernel exploits)",
    "io_uring_setup": "io_uring: a large kernel surface that bypasses the filter for its operations",
    "io_uring_enter": "io_uring",
    "io_uring_register": "io_uring",
    "swapon": "changes the host's swap",
    "swapoff": "changes the host's swap",
    "settimeofday": "sets the host's clock (there is one clock)",
    "clock_settime": "sets the host's clock",
    "clock_adjtime": "adjusts the host's clock",
    "adjtimex": "adjusts the host's clock",
    "stime": "sets the host's clock",
    "acct": "process accounting of the host",
    "iopl": "raw I/O port access",
    "ioperm": "raw I/O port access",
    "syslog": "the host kernel's log (read and clear)",
    "lookup_dcookie": "profiling of the host kernel",
    "nfsservctl": "the host's NFS server",
    "uselib": "obsolete, a past source of kernel bugs",
    "vm86": "obsolete 16-bit mode",
    "vm86old": "obsolete 16-bit mode",
    "quotactl": "disk quotas of host file systems",
    "quotactl_fd": "disk quotas of host file systems",
    "fanotify_init": "watches file systems wider than the instance's tree",
    "pciconfig_read": "PCI configuration space",
    "pciconfig_write": "PCI configuration space",
    "pciconfig_iobase": "PCI configuration space",
}
# (syscall, argument index, value, why): the call is allowed except with this argument
DENIED_ARGS: list[tuple[str, int, int, str]] = [
    ("socket", 0, AF_VSOCK, "AF_VSOCK talks to the hypervisor and the host's VM sockets"),
    ("socket", 0, AF_ALG, "AF_ALG exposes the kernel's crypto API (a frequent source of kernel bugs)"),
    ("ioctl", 1, TIOCSTI, "TIOCSTI pushes input into a terminal that may be the host's"),
    ("ioctl", 1, TIOCLINUX, "TIOCLINUX reads and pastes the host's virtual console"),
]
# With a 32-bit companion ABI the profile covers 32-bit binaries too (docker's list per arch)
COMPANIONS = {"SCMP_ARCH_X86_64": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"], "SCMP_ARCH_AARCH64": ["SCMP_ARCH_ARM"]}


def architectures(native: str | None = None) -> list[str]:
    from jaula.oci.seccomp import scmp_arch

    arch = scmp_arch(native or os.uname().machine)
    return [arch, *COMPANIONS.get(arch, [])]


def allowed_names(arches: list[str]) -> list[str]:
    """Every syscall name of these ABIs' tables that is not denied outright, sorted."""
    names: set[str] = set()
    for arch in arches:
        table = sc.ABIS[arch].table
        if table:
            names |= set(sc.syscall_numbers(table))
    return sorted(names - set(DENIED))


def default_profile(native: str | None = None) -> dict[str, Any]:
    """The profile as OCI JSON (what config.json holds; oci.seccomp.Seccomp.from_json reads it)."""
    arches = architectures(native)
    rules: list[dict[str, Any]] = [
        {"names": sorted(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
    ]
    # a 32-bit compare (MASKED_EQ of the low word): socket's domain and ioctl's request are ints,
    # whatever the upper half of the register holds
    for name, index, value, _why in DENIED_ARGS:
        rules.append({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                      "args": [{"index": index, "value": 0xFFFFFFFF, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}]})
    rules.append({"names": allowed_names(arches), "action": "SCMP_ACT_ALLOW"})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": ENOSYS, "architectures": arches, "syscalls": rules}


def notify_sysinfo(profile: dict[str, Any], listener_path: str, metadata: str | None = None) -> None:
    """Send sysinfo(2) to the seccomp agent at `listener_path` (SCMP_ACT_NOTIFY, OCI listenerPath):
    the rule goes first, before the rule that allows it (the first matching rule wins)."""
    profile["syscalls"].insert(0, {"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"})
    profile["listenerPath"] = listener_path
    if metadata:
        profile["listenerMetadata"] = metadata
