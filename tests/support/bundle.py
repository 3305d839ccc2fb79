"""OCI bundles for tests, the demo and the bench: the built busybox root plus a good default config.

The default config follows `runc spec` (terminal off, probe as the process) so that a test states
only what it changes: `make_bundle(tmp, args=["/usr/bin/probe", "info"], hostname="x",
process={"user": {"uid": 1000}})`. Dicts merge deeply; any other value (lists included) replaces;
a value of `None` deletes the key.

As a command: `python -m tests.support.bundle DIR [--userns] [-- ARGS...]` writes a bundle in DIR.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
ROOTFS = BUILD / "rootfs-busybox"
PROBE = "/usr/bin/probe"

# runc 1.1's default set (`runc spec`)
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

# The host range the demo's (and tests') user namespace maps to: 65536 ids from 100000.
USERNS_HOST_ID = 100000
USERNS_SIZE = 65536


def default_config() -> dict[str, Any]:
    """A fresh copy of the default config (runc spec's, with terminal off and the probe as process)."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [PROBE, "info"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPS),
                "effective": list(DEFAULT_CAPS),
                "permitted": list(DEFAULT_CAPS),
                "ambient": list(DEFAULT_CAPS),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "jaula",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }


def userns_overrides(host_id: int = USERNS_HOST_ID, size: int = USERNS_SIZE) -> dict[str, Any]:
    """Overrides for a user namespace mapping ids 0..size-1 to host_id.. (uid and gid alike)."""
    namespaces = default_config()["linux"]["namespaces"] + [{"type": "user"}]
    mapping = [{"containerID": 0, "hostID": host_id, "size": size}]
    return {"linux": {"namespaces": namespaces, "uidMappings": mapping, "gidMappings": mapping}}


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge overrides into base in place: dicts recurse, None deletes, anything else replaces."""
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def assets_missing() -> str | None:
    """Why the built assets cannot be used, or None when they are there."""
    if not (ROOTFS / PROBE.lstrip("/")).is_file():
        return f"test assets not built ({ROOTFS} has no {PROBE}): run scripts/setup"
    return None


def copy_rootfs(dest: Path, source: Path = ROOTFS) -> None:
    """A private copy of the built root (cp -a: 3 MB, a few ms), so a container may write to it."""
    subprocess.run(["cp", "-a", "--reflink=auto", f"{source}/.", str(dest)], check=True)


def shift_ownership(root: Path, offset: int) -> None:
    """Add offset to every owner uid and gid under root, for a user namespace mapping 0 to offset."""
    paths = [str(root)]
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into symlinked dirs
        paths.extend(os.path.join(dirpath, name) for name in dirnames + filenames)
    for path in paths:
        st = os.lstat(path)
        os.lchown(path, st.st_uid + offset, st.st_gid + offset)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o6000:
            os.chmod(path, stat.S_IMODE(st.st_mode))  # chown clears setuid and setgid bits


def make_bundle(tmpdir: os.PathLike[str] | str, args: list[str] | None = None, *,
                rootfs: os.PathLike[str] | str | None = None, **overrides: Any) -> Path:
    """Write tmpdir/rootfs (a copy of the built busybox root) and tmpdir/config.json; return tmpdir.

    args sets process.args; overrides are merged into the default config (see the module doc).
    """
    bundle = Path(tmpdir)
    source = Path(rootfs) if rootfs is not None else ROOTFS
    if rootfs is None and (why := assets_missing()):
        raise FileNotFoundError(why)
    bundle.mkdir(parents=True, exist_ok=True)
    root = bundle / "rootfs"
    root.mkdir(exist_ok=True)
    copy_rootfs(root, source)
    config = deep_merge(default_config(), overrides)
    if args is not None:
        config.setdefault("process", {})["args"] = list(args)
    write_config(bundle, config)
    return bundle


def write_config(bundle: Path, config: dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def read_config(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "config.json").read_text())


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.bundle", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="bundle folder to write (rootfs/ and config.json)")
    parser.add_argument("--userns", action="store_true",
                        help=f"add a user namespace mapping 0-{USERNS_SIZE - 1} to {USERNS_HOST_ID}+, "
                             "and shift the root's ownership to match")
    parser.add_argument("--hostname", default=None)
    parser.add_argument("args", nargs="*", help="process.args (after --)")
    opts = parser.parse_args(argv)
    overrides: dict[str, Any] = userns_overrides() if opts.userns else {}
    if opts.hostname:
        overrides["hostname"] = opts.hostname
    try:
        bundle = make_bundle(opts.dir, opts.args or None, **overrides)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    if opts.userns:
        shift_ownership(bundle / "rootfs", USERNS_HOST_ID)
    print(bundle)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
