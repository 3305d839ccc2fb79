"""The default config.json that `jaula-runtime spec` writes (runc's defaults, plus --rootless, plus
jaula's seccomp profile), also the base of every instance's config (instances/render.py)."""

from __future__ import annotations

import os

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def _thermal_throttle() -> list[str]:
    """Each CPU's thermal_throttle of this host: docker (moby#49560) and podman (containers/common#2375)
    mask them with /proc/interrupts since 2025, a thermal side channel (GHSA-6fw5-f8r9-fgfm)."""
    top = "/sys/devices/system/cpu"
    try:
        cpus = sorted(n for n in os.listdir(top) if n.startswith("cpu") and n[3:].isdigit())
    except OSError:
        return []
    return [p for n in cpus if os.path.isdir(p := f"{top}/{n}/thermal_throttle")]


MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/dev/block", "/sys/block", "/sys/fs/selinux",  # + podman's /sys/fs/selinux: the union of docker's and podman's
    *_thermal_throttle(),
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


_profile: dict | None = None  # jaula's seccomp profile, built once: ~0.05 ms each time (its name lists)


def _seccomp_profile() -> dict:
    """A copy of jaula's default seccomp profile that its caller may change (jaulad's driver adds
    a rule and a listener to it): the dicts and lists copied, the strings shared."""
    global _profile
    if _profile is None:
        from jaula.oci.seccomp_profile import default_profile

        _profile = default_profile()
    p = _profile
    rules = []
    for r in p["syscalls"]:
        rule = {**r, "names": list(r["names"])}
        if "args" in r:
            rule["args"] = [dict(a) for a in r["args"]]
        rules.append(rule)
    return {**p, "architectures": list(p["architectures"]), "syscalls": rules}


def default_spec(rootless: bool = False, args: list[str] | None = None) -> dict:
    caps = list(DEFAULT_CAPS)
    spec: dict = {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": args or ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "jaula",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            # jaula's default profile: kernel-global calls EPERM, unknown ones ENOSYS (docs/security.md)
            "seccomp": _seccomp_profile(),
        },
    }
    if rootless:
        lx = spec["linux"]
        lx["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup", "user")]
        lx["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        lx.pop("resources")
        spec["mounts"] = [mt for mt in spec["mounts"] if mt["destination"] not in ("/sys", "/sys/fs/cgroup")]
        spec["mounts"].append({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        for mt in spec["mounts"]:
            if mt["destination"] == "/dev/pts":
                mt["options"] = [o for o in mt["options"] if o != "gid=5"]
    return spec
