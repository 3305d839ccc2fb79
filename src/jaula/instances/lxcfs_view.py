"""An instance's honest /proc: lxcfs's files bound over the kernel's (as LXC's lxcfs hook does).

lxcfs (a FUSE filesystem, run and supervised by jaulad: jaula.daemon.lxcfs) answers each read
of its proc/meminfo, proc/uptime... from the cgroups and the pid namespace of the process that
reads, so `free`, `top` and `uptime` inside an instance show its limits and its own uptime.
The mount lives at `mountpoint(<driver root>)`; `usable` says whether a live lxcfs serves it there,
`mounts` are the OCI bind mounts that put its files over the instance's /proc and /sys.
"""

from __future__ import annotations

import os

# What lxcfs 5.0 (Debian 12) virtualizes and the instance gets: the files LXC binds.
PROC_FILES = ("cpuinfo", "meminfo", "stat", "uptime", "loadavg", "diskstats", "swaps")
SYS_CPU = "sys/devices/system/cpu"
FSTYPE = "fuse.lxcfs"


# Outside jaulad's root: the root holds instances' trees and is checked for stray mounts (the
# orphan sweep, tests), and lxcfs's mount outlives a jaulad (live restore). One per root.
RUN_DIR = "/run/jaula/lxcfs"


def mountpoint(driver_root: str) -> str:
    """Where jaulad mounts lxcfs for the driver at `driver_root`: RUN_DIR/<digest of the root>
    (its pid record, lock and log beside it, with .pid, .lock and .log appended)."""
    import hashlib

    digest = hashlib.sha256(os.path.abspath(driver_root).encode()).hexdigest()[:16]
    return os.path.join(RUN_DIR, digest)


def mounted(path: str) -> bool:
    """Whether `path` is an lxcfs FUSE mount in this mount namespace."""
    path = os.path.abspath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and _unescape(fields[4]) == path and right.split(" ", 1)[0] == FSTYPE:
                    return True
    except OSError:
        return False
    return False


def _unescape(s: str) -> str:
    """mountinfo's octal escapes (\\040 for a space)."""
    return s.encode().decode("unicode_escape") if "\\" in s else s


# mount point -> st_dev of the lxcfs `usable` found there whole (mounted, every file answering)
_seen: dict[str, int] = {}


def usable(path: str) -> str | None:
    """`path` when a live lxcfs serves it (mounted, and its files answer), else None: a dead
    lxcfs leaves its mount behind, answering ENOTCONN.

    Once an lxcfs was found there whole, the next calls stat one of its files only (one FUSE
    round trip, where the whole check reads the mount table, which grows with every instance,
    and makes eight: ~0.2 ms of each start): answering, on the same device, it is that lxcfs
    still; an error, or another device (a new lxcfs: jaulad's watcher restarted it), and the
    whole check runs again."""
    dev = _seen.get(path)
    if dev is not None:
        try:
            if os.stat(os.path.join(path, "proc", PROC_FILES[1])).st_dev == dev:
                return path
        except OSError:
            pass
        del _seen[path]
    if not mounted(path):
        return None
    try:
        for name in PROC_FILES:
            st = os.stat(os.path.join(path, "proc", name))
        os.stat(os.path.join(path, SYS_CPU))
    except OSError:
        return None
    _seen[path] = st.st_dev
    return path


def mounts(lxcfs: str) -> list[dict]:
    """The OCI mounts that bind lxcfs at `lxcfs` over an instance's /proc files and its
    /sys/devices/system/cpu (read-only, nosuid, nodev, noexec); they come after /proc and /sys."""
    opts = ["bind", "ro", "nosuid", "nodev", "noexec"]
    out = [{"destination": f"/proc/{n}", "type": "bind", "source": os.path.join(lxcfs, "proc", n),
            "options": list(opts)} for n in PROC_FILES]
    out.append({"destination": "/" + SYS_CPU, "type": "bind", "source": os.path.join(lxcfs, SYS_CPU),
                "options": list(opts)})
    return out


def for_instance(driver_root: str, name: str, cfg: dict) -> str | None:
    """The lxcfs mount an instance starting now gets: None when security.lxcfs is false, or
    (with a warning: the instance still starts, with the kernel's /proc files) when no live
    lxcfs serves the driver's mount point."""
    if cfg.get("security.lxcfs") is False:
        return None
    found = usable(mountpoint(driver_root))
    if found is None:
        import logging

        logging.getLogger("jaula.instances").warning(
            "instance %s starts without lxcfs (no live lxcfs at %s): free, top and uptime inside show the "
            "host's figures", name, mountpoint(driver_root))
    return found
