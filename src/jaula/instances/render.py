"""An instance's OCI config.json: instance settings + template metadata + its mounted root.

Pure (no kernel call) so that every choice is unit-tested: namespaces (a user namespace mapping
0..65535 to the instance's range unless security.privileged), capabilities (the full set for a
system instance, root of its own server, less SYSTEM_DROP; docker's reduced set for an app), no_new_privs for
apps, masked and read-only paths from jaula.oci.spec, a pids limit always, and the limits.
"""

from __future__ import annotations

import os
from typing import Any

from jaula.errors import ConfigError
from jaula.instances import settings
from jaula.instances.model import ID_RANGE, Instance
from jaula.record import Record

ANNOTATION = "org.jaula."
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_INIT = "/sbin/init"
CPU_PERIOD = 100000
DEFAULT_SHARES = 1024       # cgroup v1's cpu.shares default (limits.cpu.weight unset)

# Docker's default set (moby's oci/caps/defaults.go): enough for an app to drop root itself.
APP_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
# Dropped from a system instance's full set (Incus/LXC's lxc.cap.drop): without a user namespace
# they would reach the host's global state; inside one they grant nothing (the kernel checks them
# against the host's namespace) but make an init try what must fail (systemd mounts debugfs and
# tracefs when it holds CAP_SYS_RAWIO, loads modules with CAP_SYS_MODULE, sets the clock with
# CAP_SYS_TIME: failed units, a "degraded" system).
SYSTEM_DROP = {"CAP_SYS_MODULE", "CAP_SYS_TIME", "CAP_SYS_RAWIO", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE"}


class InitKind(Record, frozen=True):
    """An init system and the signal that asks it to power off (what `stop` sends)."""

    name: str
    stop_signal: int
    why: str


# busybox init(8): SIGUSR1 halts, SIGUSR2 powers off, SIGTERM reboots (init/init.c); each runs
# the inittab's shutdown actions, then SIGTERM/SIGKILL to all. systemd: SIGRTMIN+4 starts
# poweroff.target (systemd(1); glibc's SIGRTMIN is 34). sysvinit: SIGPWR runs the inittab's
# powerfail entry, which a container's inittab points at `init 0` (LXC's default halt signal).
INITS = {
    "busybox": InitKind("busybox", 12, "busybox init powers off on SIGUSR2"),
    "systemd": InitKind("systemd", 38, "systemd powers off on SIGRTMIN+4"),
    "sysvinit": InitKind("sysvinit", 30, "sysvinit runs its powerfail action on SIGPWR"),
    "unknown": InitKind("unknown", 15, "an unknown init gets SIGTERM"),
    "app": InitKind("app", 15, "an app gets SIGTERM"),
}


def detect_init(rootfs: str, path: str = SYSTEM_INIT) -> InitKind:
    """Which init `path` is in the tree at `rootfs`: its symlinks followed inside the tree (as
    the instance sees them, never the host's), then the binary's own markers (a copied busybox,
    sysvinit's INIT_VERSION)."""
    target = resolve_in_tree(rootfs, path)
    if target is None:
        return INITS["unknown"]
    if os.path.basename(target) == "busybox":
        return INITS["busybox"]
    if "systemd" in target:
        return INITS["systemd"]
    data = _read(rootfs, target, 8 << 20)
    if data is None:
        return INITS["unknown"]
    if b"BusyBox v" in data:
        return INITS["busybox"]
    if b"INIT_VERSION" in data:
        return INITS["sysvinit"]
    if b"systemd" in data:
        return INITS["systemd"]
    return INITS["unknown"]


def resolve_in_tree(rootfs: str, path: str, hops: int = 40) -> str | None:
    """`path` with every symlink followed as inside the tree (absolute links and '..' stop at its
    root); None for a link loop."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(rootfs, *done, part)
        if os.path.islink(host):
            hops -= 1
            if hops < 0:
                return None
            link = os.readlink(host)
            if link.startswith("/"):
                done = []
            parts = [p for p in link.split("/") if p] + parts
        else:
            done.append(part)
    return "/" + "/".join(done)


def _read(rootfs: str, path: str, limit: int) -> bytes | None:
    """A file of the tree, resolved inside it (openat2 RESOLVE_IN_ROOT)."""
    from pathlib import Path

    from jaula.storage.templates import read_in_root

    try:
        return read_in_root(Path(rootfs), path, limit)
    except OSError:
        return None


def all_caps() -> list[str]:
    """Every capability this kernel knows (the bounding set refuses higher numbers)."""
    from jaula.linux.caps import NAMES, last_cap

    return NAMES[: last_cap() + 1]


def capabilities(mode: str, known: list[str] | None = None) -> list[str]:
    if mode == "app":
        return list(APP_CAPS)
    caps = known if known is not None else all_caps()
    return [c for c in caps if c not in SYSTEM_DROP]


# The kernel lets a user namespace mount proc or sysfs only where one of them is already fully
# visible to it: no locked mount over a file or a non-empty folder (fs/namespace.c,
# mount_too_revealing; a nested user namespace locks every mount it inherits). /proc carries the
# masked paths and lxcfs's files, /sys lxcfs's cpu folder: a nesting instance gets a spare, bare
# proc and sysfs under /dev/.jaula (LXC's nesting.conf mounts /dev/.lxc/proc and /dev/.lxc/sys).
NESTING_PROC = "/dev/.jaula/proc"
NESTING_SYS = "/dev/.jaula/sys"


def nesting_mounts(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spare proc (and sysfs, when the instance has /sys) of a nesting instance."""
    out = [{"destination": NESTING_PROC, "type": "proc", "source": "proc", "options": ["nosuid", "nodev", "noexec"]}]
    if any(mt["destination"] == "/sys" for mt in mounts):
        out.append({"destination": NESTING_SYS, "type": "sysfs", "source": "sysfs",
                    "options": ["nosuid", "nodev", "noexec"]})
    return out


def has_time_namespaces() -> bool:
    """Whether this kernel has time namespaces (CONFIG_TIME_NS, Linux 5.6)."""
    return os.path.exists("/proc/self/ns/time")


def boot_clock_from_zero(boottime_ns: int | None = None) -> dict[str, Any]:
    """linux.timeOffsets that start a new time namespace's CLOCK_BOOTTIME at 0 now: uptime inside
    (sysinfo(2), the kernel's /proc/uptime, /proc/PID/stat's start times) is the instance's.

    Boottime only. CLOCK_MONOTONIC stays the host's: what comes in from outside keeps meaning
    what it meant (kernel log and journal timestamps, a monotonic time sent over a socket or in a
    file, SO_TIMESTAMPING); and since monotonic leaves out the time the host was suspended,
    minus the boottime could take it below 0, which the kernel refuses (ERANGE). The offset is a
    whole negative second plus nanoseconds in 0..999999999, as the kernel wants it."""
    if boottime_ns is None:
        import time

        boottime_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    secs, nsecs = divmod(-boottime_ns, 10**9)
    return {"boottime": {"secs": secs, "nanosecs": nsecs}}


def resources(cfg: dict[str, Any]) -> dict[str, Any]:
    """The OCI linux.resources of an effective config (settings.effective)."""
    r: dict[str, Any] = {}
    mem = cfg.get("limits.memory")
    if mem is not None:
        swap = cfg.get("limits.memory.swap")
        r["memory"] = {"limit": mem, "swap": -1 if swap is None else mem + swap}
    cpu: dict[str, Any] = {}
    if cfg.get("limits.cpu") is not None:
        from jaula.cgroups.resources import cpus_to_quota

        cpu["quota"], cpu["period"] = cpus_to_quota(cfg["limits.cpu"], CPU_PERIOD)
    if cfg.get("limits.cpu.weight") is not None:
        cpu["shares"] = weight_to_shares(cfg["limits.cpu.weight"])
    if cfg.get("limits.cpuset") is not None:
        cpu["cpus"] = cfg["limits.cpuset"]
    if cpu:
        r["cpu"] = cpu
    r["pids"] = {"limit": cfg.get("limits.processes", settings.DEFAULT_PROCESSES)}
    return r


def weight_to_shares(weight: int) -> int:
    """limits.cpu.weight (v2's 1..10000, default 100) as v1 shares, 100 -> 1024 (proportional)."""
    return max(2, min(262144, weight * DEFAULT_SHARES // 100))


def resources_update(old: dict[str, Any], new: dict[str, Any], online_cpus: str | None = None) -> dict[str, Any]:
    """The linux.resources that take a running instance from effective config `old` to `new`;
    a limit removed goes back to none (the cpuset to every online cpu)."""
    r: dict[str, Any] = {}
    changed = set(settings.changed_keys(old, new))
    want = resources(new)
    if changed & {"limits.memory", "limits.memory.swap"}:
        r["memory"] = want.get("memory", {"limit": -1, "swap": -1})
    cpu: dict[str, Any] = {}
    if "limits.cpu" in changed:
        c = want.get("cpu", {})
        cpu.update(quota=c.get("quota", -1), period=c.get("period", CPU_PERIOD))
    if "limits.cpu.weight" in changed:
        cpu["shares"] = want.get("cpu", {}).get("shares", DEFAULT_SHARES)
    if "limits.cpuset" in changed:
        cpu["cpus"] = want.get("cpu", {}).get("cpus") or online_cpus or _online_cpus()
    if cpu:
        r["cpu"] = cpu
    if "limits.processes" in changed:
        r["pids"] = want["pids"]
    return r


def _online_cpus() -> str:
    with open("/sys/devices/system/cpu/online") as f:
        return f.read().strip()


def process_user(spec_user: str, rootfs: str) -> tuple[int, int]:
    """An image's User ("1000", "1000:100", "app", "app:grp") as uid, gid, names looked up in the
    tree's /etc/passwd and /etc/group."""
    if not spec_user:
        return 0, 0
    user, _, group = spec_user.partition(":")

    def lookup(name: str, table: str, field: int) -> int:
        if name.isdigit():
            return int(name)
        for line in (_read(rootfs, f"/etc/{table}", 1 << 20) or b"").decode(errors="replace").splitlines():
            parts = line.split(":")
            if parts[0] == name and len(parts) > field and parts[field].isdigit():
                return int(parts[field])
        raise ConfigError(f"the template's user {spec_user!r}: no {name!r} in its /etc/{table}")

    uid = lookup(user, "passwd", 2)
    if group:
        return uid, lookup(group, "group", 2)
    if user.isdigit():
        return uid, uid
    for line in (_read(rootfs, "/etc/passwd", 1 << 20) or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if parts[0] == user and len(parts) > 3 and parts[3].isdigit():
            return uid, int(parts[3])
    return uid, uid


def process_env(template_env: list[str], cfg: dict[str, Any], mode: str) -> list[str]:
    """The template's environment, then the instance's environment.* over it; PATH always set."""
    env: dict[str, str] = {}
    for line in [DEFAULT_PATH] + list(template_env):
        k, _, v = line.partition("=")
        env[k] = v
    if mode == "system":
        env["container"] = "jaula"  # systemd and others look for it
    for line in settings.environment(cfg):
        k, _, v = line.partition("=")
        env[k] = v
    return [f"{k}={v}" for k, v in env.items()]


def render(inst: Instance, cfg: dict[str, Any], template: Any, rootfs: str, init: InitKind,
           cgroups_path: str | None = None, known_caps: list[str] | None = None,
           nofile: tuple[int, int] | None = None, lxcfs: str | None = None,
           boottime_ns: int | None = None, sysinfo_agent: str | None = None) -> dict[str, Any]:
    """The config.json of `inst` (effective config `cfg`) on its mounted root `rootfs`.

    `template`: its Template (command, env, workdir, user); `init`: what runs as pid 1;
    `nofile`: RLIMIT_NOFILE (soft, hard), by default the caller's; `lxcfs`: a live lxcfs mount
    whose files go over /proc's and /sys's (jaula.instances.lxcfs_view), None for none;
    `boottime_ns`: the host's CLOCK_BOOTTIME now, by default read (see time_namespace);
    `sysinfo_agent`: the seccomp agent's socket (the console keeper's, jaula.daemon.sysinfo_notify)
    that answers sysinfo(2) when security.syscalls.intercept.sysinfo is on, None for none.
    """
    if nofile is None:
        import resource

        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = tuple(2**64 - 1 if n < 0 else n for n in nofile)  # RLIM_INFINITY reads as -1
    from jaula.oci.spec import default_spec

    privileged = cfg.get("security.privileged") is True
    nesting = cfg.get("security.nesting") is True
    if inst.mode == "app":
        args = list(inst.command) or list(template.command)
        if not args:
            raise ConfigError(f"template {inst.template!r} has no command (entrypoint or cmd): "
                              "give the app instance one")
        uid, gid = process_user(template.user, str(template.rootfs))
        cwd = template.workdir or "/"
    else:
        args, uid, gid, cwd = [SYSTEM_INIT], 0, 0, "/"
    if not privileged and inst.idmap_base is None:
        raise ConfigError(f"instance {inst.name!r} has no id range (idmap_base): allocate one, "
                          "or set security.privileged=true")
    spec = default_spec(args=args)
    caps = capabilities(inst.mode, known_caps)
    p = spec["process"]
    p.update(terminal=False, cwd=cwd, env=process_env(template.env, cfg, inst.mode), user={"uid": uid, "gid": gid},
             capabilities={k: list(caps) for k in ("bounding", "effective", "permitted")},
             noNewPrivileges=inst.mode == "app")
    # jaulad's own (its LimitNOFILE): a hard limit above it cannot be raised inside a user namespace
    p["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": nofile[0], "hard": nofile[1]}]
    # RLIMIT_NPROC at the pids limit: the kernel refuses a fork over it early in copy_process,
    # before the address space is copied and a pid allocated (the pids cgroup refuses last), so
    # a fork bomb's refused forks cost its neighbours far less (docs/security.md, measured)
    nproc = cfg.get("limits.processes", settings.DEFAULT_PROCESSES)
    p["rlimits"].append({"type": "RLIMIT_NPROC", "soft": nproc, "hard": nproc})
    spec["root"] = {"path": rootfs, "readonly": False}
    spec["hostname"] = inst.name
    lx = spec["linux"]
    if cfg.get("network.mode") == "host":  # the host's network stack (privileged only: settings.py)
        lx["namespaces"] = [n for n in lx["namespaces"] if n["type"] != "network"]
    if not privileged:
        lx["namespaces"].append({"type": "user"})
        lx["uidMappings"] = [{"containerID": 0, "hostID": inst.idmap_base, "size": ID_RANGE}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": inst.idmap_base, "size": ID_RANGE}]
    if nesting:
        for mt in spec["mounts"]:
            if mt["destination"] == "/sys/fs/cgroup":
                mt["options"] = [o for o in mt["options"] if o != "ro"] + ["rw"]
        lx["readonlyPaths"] = [x for x in lx["readonlyPaths"] if x != "/proc/sys"]
        spec["mounts"] += nesting_mounts(spec["mounts"])
    if lxcfs:
        from jaula.instances import lxcfs_view

        spec["mounts"] += lxcfs_view.mounts(lxcfs)
    if inst.mode == "system" and cfg.get("security.timens") is not False and has_time_namespaces():
        lx["namespaces"].append({"type": "time"})
        lx["timeOffsets"] = boot_clock_from_zero(boottime_ns)
    lx["resources"].update(resources(cfg))
    if sysinfo_agent and cfg.get("security.syscalls.intercept.sysinfo") is not False and lx.get("seccomp"):
        from jaula.oci.seccomp_profile import notify_sysinfo

        notify_sysinfo(lx["seccomp"], sysinfo_agent, inst.name)
    if cgroups_path:
        lx["cgroupsPath"] = cgroups_path
    spec["annotations"] = {
        ANNOTATION + "instance": inst.name, ANNOTATION + "mode": inst.mode, ANNOTATION + "init": init.name,
        ANNOTATION + "stop-signal": str(init.stop_signal),
    }
    from jaula.instances import cgroup_delegation

    if cgroup_delegation.writable(init.name):  # systemd's own cgroups: read-write
        spec["annotations"][cgroup_delegation.WRITABLE] = ",".join(cgroup_delegation.writable(init.name))
    return spec
