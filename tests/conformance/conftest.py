"""podman (from Debian) driving jaula-runtime, with a store of its own under a temporary folder.

Containers get no network (`--network none`: netavark would add a bridge and firewall rules to the
host) and their cgroups go under a parent of this session's, removed at the end. The image is
`podman import` of a tarball of the busybox root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bundle import ROOTFS, assets_missing
from tests.support.podman import IMAGE, Podman
from tests.support.runtime import LAUNCHER

CAP_SYS_RESOURCE = 24


def _has_cap(cap: int) -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def _host_mounts(below: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(below))]


def _cgroup_dirs(parent: str) -> list[Path]:
    """The cgroup parent's folder in each mounted hierarchy, deepest first (for rmdir)."""
    found: list[Path] = []
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if " - cgroup" in line]  # cgroup and cgroup2
    for point in points:
        top = Path(point) / parent.lstrip("/")
        if top.is_dir():
            found += sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            found.append(top)
    return found


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """An isolated podman whose runtime is jaula-runtime, with IMAGE imported from the busybox root."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed: run scripts/setup (apt install podman)")
    if os.geteuid() != 0:
        pytest.skip("needs root: podman drives jaula-runtime as root here")
    if why := assets_missing():
        pytest.skip(why)
    if not os.access(LAUNCHER, os.X_OK):
        pytest.skip(f"{LAUNCHER} missing: run scripts/setup")
    # Not pytest's tmp_path: the overlay driver refuses a --runroot longer than 50 characters.
    base = Path(tempfile.mkdtemp(prefix="jaula-pm-", dir="/tmp"))
    tarball = base / "busybox.tar"
    subprocess.run(["tar", "-C", str(ROOTFS), "-cf", str(tarball), "."], check=True)
    cgroup_parent = f"/jaula-conformance-{os.getpid()}"
    flags = ["--network", "none", "--cgroup-parent", cgroup_parent]
    if not _has_cap(CAP_SYS_RESOURCE):
        # podman asks for RLIMIT_NOFILE 1048576 as root; without CAP_SYS_RESOURCE (as in some
        # sandboxes) no runtime may raise the hard limit, runc and crun included: ask for less.
        flags += ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
    errors = []
    for driver in ("overlay", "vfs"):  # overlay fails where /tmp is itself on overlayfs
        pm = Podman(base=base / driver, storage_driver=driver, cgroup_parent=cgroup_parent, run_flags=flags)
        imported = pm("import", str(tarball), IMAGE)
        if imported.returncode == 0:
            break
        errors.append(f"{driver}: {imported.stderr.strip()}")
        _cleanup(pm)
    else:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail("podman import failed with every storage driver:\n" + "\n".join(errors))
    tarball.unlink()
    yield pm
    leftovers = _cleanup(pm)
    shutil.rmtree(base, ignore_errors=True)
    assert not leftovers, f"left behind by podman and jaula-runtime (now removed): {leftovers}"


def _runtime_states(pm: Podman) -> list[str]:
    """Ids under the runtime's state folder whose bundle is in this store (not anyone else's)."""
    ids = []
    for d in pm.runtime_root.glob("*/state.json"):
        try:
            bundle = json.loads(d.read_text()).get("bundle", "")
        except (OSError, ValueError):
            continue
        if bundle.startswith(str(pm.base) + "/"):
            ids.append(d.parent.name)
    return sorted(ids)


def _cleanup(pm: Podman) -> list[str]:
    """Remove every container and image of the store, then the store; return what had to be forced."""
    leftovers: list[str] = []
    left = pm("ps", "-aq").stdout.split()
    if left:
        leftovers.append(f"containers {left}")
        pm("rm", "--all", "--force", "--time", "0", timeout=120)
    pm("rmi", "--all", "--force", timeout=120)
    if states := _runtime_states(pm):
        leftovers.append(f"runtime state {states}")
        for cid in states:
            pm.runtime("delete", "--force", cid)
    for mnt in sorted(_host_mounts(pm.base), key=len, reverse=True):
        leftovers.append(f"mount {mnt}")
        subprocess.run(["umount", "-l", mnt], check=False)
    for d in _cgroup_dirs(pm.cgroup_parent):
        if (d / "cgroup.procs").read_text().strip():
            leftovers.append(f"cgroup {d} still has processes")
            continue
        try:
            d.rmdir()
        except OSError as e:
            leftovers.append(f"rmdir {d}: {e}")
    shutil.rmtree(pm.base, ignore_errors=True)
    return leftovers
