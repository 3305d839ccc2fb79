"""config.json's Linux settings on real containers: each setting checked from inside (the probe)
and, where the host can see it, from outside (/proc/PID, the cgroup files, file owners).

Everything a test makes on the host (network namespaces, mounts, cgroups) is undone by a
fixture, also when the test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jaula.errors import ExitCode
from tests.support.bundle import (
    USERNS_HOST_ID,
    deep_merge,
    default_config,
    make_bundle,
    shift_ownership,
    userns_overrides,
)
from tests.support.containers import (
    PROBE,
    SLEEP,
    ConsoleSocket,
    assert_nothing_left,
    cgroup_dirs,
    cgroup_paths,
    mountinfo_of,
    read_cgroup,
    remove_cgroup_dirs,
    status,
    wait_until,
)
from tests.support.runtime import Runtime

pytestmark = pytest.mark.root

Bundle = Callable[..., Path]
DEFAULT_NS = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
_names = itertools.count(1)


def run_info(rt: Runtime, b: Path) -> dict[str, Any]:
    """Run the bundle (its process is `probe info`) and return what the probe saw."""
    return rt.run_json(b)


def run_out(rt: Runtime, b: Path) -> str:
    """Run the bundle in the foreground and return its stdout (the run must succeed)."""
    return rt.run(b, check=True).stdout


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def started(rt: Runtime, b: Path) -> str:
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    return cid


def exec_out(rt: Runtime, cid: str, *args: str) -> str:
    return rt("exec", cid, *args, check=True).stdout


def caps_mask(names: list[str]) -> int:
    from jaula.linux.caps import BY_NAME

    return sum(1 << BY_NAME[n] for n in set(names))


def ns_inode(path: str) -> str:
    """The inode of a namespace file, the number /proc/PID/ns/X shows: 'net:[<inode>]'."""
    st = os.stat(path)
    return str(st.st_ino)


@pytest.fixture
def netns() -> Iterator[Callable[[], Path]]:
    """Factory of named network namespaces (ip netns add), deleted at the end."""
    made: list[str] = []

    def make() -> Path:
        name = f"jaula-test-{os.getpid()}-{next(_names)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        made.append(name)
        return Path("/run/netns", name)

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


@pytest.fixture
def host_mounts() -> Iterator[Callable[..., Path]]:
    """Factory: mount(args..., target) on the host; every mount is lazily unmounted at the end."""
    made: list[Path] = []

    def mount(*args: str, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
        made.append(target)
        return target

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-R", "-l", str(target)], capture_output=True, check=False)


@pytest.fixture
def userns_bundle(rootfs_dir: Path) -> Iterator[Callable[..., Path]]:
    """Factory of bundles for a user namespace mapping 0-65535 to 100000+, their root shifted to match.

    They live in a folder under /tmp that every user may traverse: the container's root (host
    uid 100000) must reach the rootfs, and pytest's own tmp folder is private to the host's root.
    """
    top = Path(tempfile.mkdtemp(prefix="jaula-userns-"))
    top.chmod(0o711)
    count = itertools.count(1)

    def make(args: list[str] | None = None, **overrides: Any) -> Path:
        merged = deep_merge(userns_overrides(), overrides)
        b = make_bundle(top / f"bundle-{next(count)}", args, rootfs=rootfs_dir, **merged)
        shift_ownership(b / "rootfs", USERNS_HOST_ID)
        return b

    yield make
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def cgroup_cleanup(runtime: Runtime) -> Iterator[list[Path]]:
    """Test-made cgroup directories to remove at the end (only if empty, deepest first), after
    the containers that may still use them (a failed test leaves them running) are deleted."""
    dirs: list[Path] = []
    yield dirs
    runtime.cleanup()
    remove_cgroup_dirs(dirs)


# -- namespaces ------------------------------------------------------------------------------------

def test_new_namespaces(runtime: Runtime, bundle: Bundle) -> None:
    kinds = DEFAULT_NS + [{"type": "cgroup"}]
    info = run_info(runtime, bundle(linux={"namespaces": kinds}))
    for ns in ("pid", "net", "ipc", "uts", "mnt", "cgroup"):
        assert info["ns"][ns] != os.readlink(f"/proc/self/ns/{ns}"), f"{ns} namespace is the host's"
    assert info["ns"]["user"] == os.readlink("/proc/self/ns/user")
    assert info["pid"] == 1
    # in its own cgroup namespace the container's cgroup is the root of every hierarchy
    assert all(line.endswith(":/") for line in info["cgroup"]), info["cgroup"]


def test_namespaces_left_out_are_the_hosts(runtime: Runtime, bundle: Bundle) -> None:
    info = run_info(runtime, bundle(hostname=None, linux={"namespaces": [{"type": "pid"}, {"type": "mount"}]}))
    for ns in ("net", "ipc", "uts", "cgroup", "user"):
        assert info["ns"][ns] == os.readlink(f"/proc/self/ns/{ns}"), ns
    assert info["ns"]["pid"] != os.readlink("/proc/self/ns/pid")


def test_join_network_namespace_by_path(runtime: Runtime, bundle: Bundle, netns: Callable[[], Path]) -> None:
    path = netns()
    subprocess.run(["ip", "-n", path.name, "link", "set", "lo", "mtu", "1234"], check=True)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")] + [{"type": "network", "path": str(path)}]
    b = bundle(SLEEP, linux={"namespaces": namespaces})
    cid = started(runtime, b)
    init = runtime.state(cid)["pid"]
    assert os.stat(f"/proc/{init}/ns/net").st_ino == os.stat(path).st_ino
    # its sysfs shows that namespace's devices: the loopback we changed
    assert exec_out(runtime, cid, "/bin/cat", "/sys/class/net/lo/mtu").strip() == "1234"
    info = json.loads(exec_out(runtime, cid, PROBE, "info"))
    assert info["ns"]["net"] == f"net:[{ns_inode(str(path))}]"


def test_join_namespaces_of_another_container(runtime: Runtime, bundle: Bundle) -> None:
    a = started(runtime, bundle(SLEEP, hostname="first"))
    pid = runtime.state(a)["pid"]
    joined = [{"type": "mount"}, {"type": "network"}] + [
        {"type": t, "path": f"/proc/{pid}/ns/{n}"} for t, n in (("pid", "pid"), ("uts", "uts"), ("ipc", "ipc"))]
    info = run_info(runtime, bundle(hostname=None, linux={"namespaces": joined}))
    assert info["hostname"] == "first"
    for ns in ("pid", "uts", "ipc"):
        assert info["ns"][ns] == os.readlink(f"/proc/{pid}/ns/{ns}"), ns
    assert info["ns"]["net"] != os.readlink(f"/proc/{pid}/ns/net")
    assert info["pid"] != 1  # a second process in the first container's pid namespace


def test_join_a_namespace_path_that_does_not_exist(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    b = bundle(SLEEP, linux={"namespaces": DEFAULT_NS[:1] + [{"type": "network", "path": "/run/netns/jaula-none"}]
                             + DEFAULT_NS[2:]})
    result = runtime("create", "--bundle", b, cid)
    assert result.returncode == ExitCode.INVALID_CONFIG and "/run/netns/jaula-none" in result.stderr
    assert_nothing_left(runtime, cid)


def test_user_namespace_maps_ids(runtime: Runtime, userns_bundle: Bundle) -> None:
    b = userns_bundle(root={"readonly": False})
    info = run_info(runtime, b)
    assert [line.split() for line in info["uid_map"]] == [["0", str(USERNS_HOST_ID), "65536"]]
    assert [line.split() for line in info["gid_map"]] == [["0", str(USERNS_HOST_ID), "65536"]]
    assert info["ns"]["user"] != os.readlink("/proc/self/ns/user")
    assert info["uid"] == 0 and info["gid"] == 0

    # what the container's root and its uid 1000 create is owned by the shifted host ids
    config = json.loads((b / "config.json").read_text())
    config["process"]["args"] = sh("touch /tmp/by-root && mkdir -m 1777 /tmp/d")
    (b / "config.json").write_text(json.dumps(config))
    run_out(runtime, b)
    st = os.stat(b / "rootfs/tmp/by-root")
    assert (st.st_uid, st.st_gid) == (USERNS_HOST_ID, USERNS_HOST_ID)
    config["process"]["args"] = sh("touch /tmp/d/by-user")
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    (b / "config.json").write_text(json.dumps(config))
    run_out(runtime, b)
    st = os.stat(b / "rootfs/tmp/d/by-user")
    assert (st.st_uid, st.st_gid) == (USERNS_HOST_ID + 1000, USERNS_HOST_ID + 1000)


def test_user_namespace_with_several_ranges(runtime: Runtime, userns_bundle: Bundle) -> None:
    b = userns_bundle(linux={
        "uidMappings": [{"containerID": 0, "hostID": USERNS_HOST_ID, "size": 1000},
                        {"containerID": 1000, "hostID": 300000, "size": 10}],
        "gidMappings": [{"containerID": 0, "hostID": USERNS_HOST_ID, "size": 2000}]})
    info = run_info(runtime, b)
    assert [line.split() for line in info["uid_map"]] == [["0", str(USERNS_HOST_ID), "1000"],
                                                        ["1000", "300000", "10"]]
    assert [line.split() for line in info["gid_map"]] == [["0", str(USERNS_HOST_ID), "2000"]]


# -- the root and mounts ---------------------------------------------------------------------------

@pytest.mark.parametrize("readonly", [True, False])
def test_root_readonly(runtime: Runtime, bundle: Bundle, readonly: bool) -> None:
    b = bundle([PROBE, "open", "/etc/hostname", "w"], root={"readonly": readonly})
    result = runtime.run(b)
    if readonly:
        assert (result.returncode, result.stdout.strip()) == (1, "EROFS")
    else:
        assert (result.returncode, result.stdout.strip()) == (0, "ok")


def test_mounts_of_the_default_config(runtime: Runtime, bundle: Bundle) -> None:
    mounts = mountinfo_of(run_info(runtime, bundle())["mountinfo"])
    assert mounts["/proc"]["fstype"] == "proc"
    assert mounts["/sys"]["fstype"] == "sysfs" and "ro" in mounts["/sys"]["options"]
    assert mounts["/dev"]["fstype"] == "tmpfs"
    assert mounts["/dev/pts"]["fstype"] == "devpts"
    assert {"ptmxmode=666", "mode=620", "gid=5"} <= set(mounts["/dev/pts"]["super"])
    assert mounts["/dev/shm"]["fstype"] == "tmpfs" and "noexec" in mounts["/dev/shm"]["options"]
    assert mounts["/dev/mqueue"]["fstype"] == "mqueue"
    cg = mounts["/sys/fs/cgroup"]
    assert cg["fstype"] in ("tmpfs", "cgroup2") and "ro" in cg["options"]
    v1 = [p for p, m in mounts.items() if p.startswith("/sys/fs/cgroup/") and m["fstype"] == "cgroup"]
    if cg["fstype"] == "tmpfs":  # cgroup v1: one mount per hierarchy, each read-only
        assert "/sys/fs/cgroup/memory" in v1 and "/sys/fs/cgroup/pids" in v1
        assert all("ro" in mounts[p]["options"] for p in v1)
    assert "ro" in mounts["/"]["options"]


def test_bind_mounts_rw_and_ro(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "file").write_text("host\n")
    single = tmp_path / "single-file"
    single.write_text("just a file\n")
    mounts = default_config()["mounts"] + [
        {"destination": "/mnt/rw", "type": "bind", "source": str(rw), "options": ["rbind", "rw"]},
        {"destination": "/mnt/ro", "type": "none", "source": str(ro), "options": ["bind", "ro", "nosuid", "nodev"]},
        {"destination": "/etc/single", "type": "bind", "source": str(single), "options": ["bind", "ro"]},
    ]
    b = bundle(sh(f"echo written > /mnt/rw/new; cat /mnt/ro/file; cat /etc/single; "
                  f"{PROBE} open /mnt/ro/file w; {PROBE} info"), mounts=mounts)
    out = run_out(runtime, b).splitlines()
    assert out[:3] == ["host", "just a file", "EROFS"]
    assert (rw / "new").read_text() == "written\n"
    info = mountinfo_of(json.loads(out[3])["mountinfo"])
    assert {"ro", "nosuid", "nodev"} <= set(info["/mnt/ro"]["options"])
    assert "rw" in info["/mnt/rw"]["options"]


def test_bind_versus_rbind(runtime: Runtime, bundle: Bundle, tmp_path: Path,
                           host_mounts: Callable[..., Path]) -> None:
    src = tmp_path / "src"
    sub = host_mounts("-t", "tmpfs", "jt-sub", target=src / "sub")
    (sub / "marker").write_text("in the submount")
    mounts = default_config()["mounts"] + [
        {"destination": "/mnt/bind", "type": "bind", "source": str(src), "options": ["bind"]},
        {"destination": "/mnt/rbind", "type": "bind", "source": str(src), "options": ["rbind"]},
    ]
    out = run_out(runtime, bundle(sh("ls /mnt/bind/sub; echo --; ls /mnt/rbind/sub"), mounts=mounts))
    assert out.split("--") == ["", "\nmarker\n"]  # bind: the submount's directory, empty


def test_tmpfs_with_size_and_mode(runtime: Runtime, bundle: Bundle) -> None:
    mounts = default_config()["mounts"] + [
        {"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=1m", "mode=700", "noexec", "nosuid"]}]
    b = bundle(sh(f"{PROBE} info; df -k /mnt/t | tail -n 1"), mounts=mounts)
    out = run_out(runtime, b).splitlines()
    info = mountinfo_of(json.loads(out[0])["mountinfo"])["/mnt/t"]
    assert info["fstype"] == "tmpfs"
    assert {"size=1024k", "mode=700"} <= set(info["super"])
    assert {"noexec", "nosuid"} <= set(info["options"])
    assert out[1].split()[1] == "1024"  # df: 1 MiB


def test_mount_mqueue_sysfs_proc_cgroup_elsewhere(runtime: Runtime, bundle: Bundle) -> None:
    mounts = default_config()["mounts"] + [
        {"destination": "/mnt/mq", "type": "mqueue", "source": "mqueue"},
        {"destination": "/mnt/proc2", "type": "proc", "source": "proc", "options": ["nosuid", "noexec"]},
        {"destination": "/mnt/cg", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
        {"destination": "/mnt/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nodev"]},
        {"destination": "/mnt/pts", "type": "devpts", "source": "devpts", "options": ["newinstance", "ptmxmode=0600"]},
    ]
    b = bundle(sh(f"ls /mnt/proc2/self/ /mnt/sys/kernel >/dev/null && {PROBE} info"), mounts=mounts)
    m = mountinfo_of(run_info_sh(runtime, b)["mountinfo"])
    assert m["/mnt/mq"]["fstype"] == "mqueue"
    assert m["/mnt/proc2"]["fstype"] == "proc" and {"nosuid", "noexec"} <= set(m["/mnt/proc2"]["options"])
    assert m["/mnt/cg"]["fstype"] in ("tmpfs", "cgroup2")
    assert m["/mnt/sys"]["fstype"] == "sysfs" and {"ro", "nodev"} <= set(m["/mnt/sys"]["options"])
    assert m["/mnt/pts"]["fstype"] == "devpts" and "ptmxmode=600" in m["/mnt/pts"]["super"]


def run_info_sh(rt: Runtime, b: Path) -> dict[str, Any]:
    return json.loads(run_out(rt, b).splitlines()[-1])


@pytest.mark.parametrize("option,propagates", [("rslave", True), ("rprivate", False), ("slave", True),
                                               ("private", False)])
def test_bind_mount_propagation(runtime: Runtime, bundle: Bundle, tmp_path: Path,
                                host_mounts: Callable[..., Path], option: str, propagates: bool) -> None:
    shared = host_mounts("-t", "tmpfs", "jt-shared", target=tmp_path / "shared")
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    mounts = default_config()["mounts"] + [
        {"destination": "/mnt/p", "type": "bind", "source": str(shared), "options": ["rbind", option]}]
    cid = started(runtime, bundle(SLEEP, mounts=mounts))
    late = host_mounts("-t", "tmpfs", "jt-late", target=shared / "late")
    (late / "marker").write_text("x")
    seen = exec_out(runtime, cid, "/bin/ls", "/mnt/p/late").split()
    assert seen == (["marker"] if propagates else [])
    m = mountinfo_of(json.loads(exec_out(runtime, cid, PROBE, "info"))["mountinfo"])
    tags = " ".join(m["/mnt/p"]["optional"])
    assert ("master:" in tags) == propagates, tags


def test_shared_mount_propagates_to_the_host(runtime: Runtime, bundle: Bundle, tmp_path: Path,
                                             host_mounts: Callable[..., Path]) -> None:
    shared = host_mounts("-t", "tmpfs", "jt-shared", target=tmp_path / "shared")
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    (shared / "inner").mkdir()
    mounts = default_config()["mounts"] + [
        {"destination": "/mnt/s", "type": "bind", "source": str(shared), "options": ["rbind", "rshared"]}]
    b = bundle(SLEEP, mounts=mounts, process={"capabilities": {k: ["CAP_SYS_ADMIN"] for k in
                                                              ("bounding", "effective", "permitted")}})
    cid = started(runtime, b)
    try:
        assert exec_out(runtime, cid, PROBE, "mount", "none", "/mnt/s/inner", "tmpfs").strip() == "ok"
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(shared / "inner")], capture_output=True, text=True,
                            check=False).stdout
        assert fs.strip() == "tmpfs", "a mount made in the container under an rshared bind did not reach the host"
    finally:
        subprocess.run(["umount", "-l", str(shared / "inner")], capture_output=True, check=False)


@pytest.mark.parametrize("propagation,tag", [("rprivate", None), ("private", None), ("rslave", "master:"),
                                             ("slave", "master:"), ("rshared", "shared:")])
def test_rootfs_propagation(runtime: Runtime, rootfs_dir: Path, tmp_path: Path,
                            host_mounts: Callable[..., Path], propagation: str, tag: str | None) -> None:
    # the bundle lives on a shared mount, so the container's root has a peer group to be a slave of
    where = host_mounts("-t", "tmpfs", "jt-bundles", target=tmp_path / "shared-bundles")
    subprocess.run(["mount", "--make-shared", str(where)], check=True)
    b = make_bundle(where / "b", [PROBE, "info"], rootfs=rootfs_dir, linux={"rootfsPropagation": propagation})
    root = mountinfo_of(run_info(runtime, b)["mountinfo"])["/"]
    tags = " ".join(root["optional"])
    if tag is None:
        assert "shared:" not in tags and "master:" not in tags, tags
    else:
        assert tag in tags, tags


# -- devices ---------------------------------------------------------------------------------------

def test_devices_are_created_with_mode_and_owner(runtime: Runtime, bundle: Bundle) -> None:
    devices = [
        {"path": "/dev/jt-null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 7, "gid": 8},
        {"path": "/dev/jt/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o600},
        {"path": "/dev/jt-fifo", "type": "p", "fileMode": 0o620},
    ]
    cid = started(runtime, bundle(SLEEP, linux={"devices": devices}))
    root = f"/proc/{runtime.state(cid)['pid']}/root"
    st = os.stat(f"{root}/dev/jt-null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 7, 8)
    st = os.stat(f"{root}/dev/jt/zero")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 5) and stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (0, 0)
    st = os.stat(f"{root}/dev/jt-fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620
    # the device cgroup lets the container use what linux.devices gave it
    assert exec_out(runtime, cid, PROBE, "open", "/dev/jt/zero", "r").strip() == "ok"
    assert exec_out(runtime, cid, "/bin/sh", "-c", "head -c 4 /dev/jt/zero | wc -c").strip() == "4"


def test_default_devices(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP))
    root = f"/proc/{runtime.state(cid)['pid']}/root"
    for name, rdev in (("null", (1, 3)), ("zero", (1, 5)), ("full", (1, 7)), ("random", (1, 8)),
                       ("urandom", (1, 9)), ("tty", (5, 0))):
        st = os.lstat(f"{root}/dev/{name}")
        assert stat.S_ISCHR(st.st_mode), name
        assert st.st_rdev == os.makedev(*rdev), name
        assert stat.S_IMODE(st.st_mode) == 0o666, name
    for link, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        assert os.readlink(f"{root}/dev/{link}") == target, link
    out = exec_out(runtime, cid, "/bin/sh", "-c", "echo x > /dev/null && head -c 3 /dev/urandom | wc -c")
    assert out.strip() == "3"
    # nothing else: the device cgroup refuses a node the config did not give
    result = runtime("exec", cid, "/bin/sh", "-c", "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem")
    assert result.returncode != 0


# -- masked and read-only paths -----------------------------------------------------------------------

def test_masked_paths(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(linux={"maskedPaths": ["/proc/cpuinfo", "/proc/acpi", "/etc/secret", "/srv/hidden", "/no/such"]},
               args=sh("cat /proc/cpuinfo | wc -c; cat /proc/version | wc -l; cat /etc/secret | wc -c; "
                       "ls -A /srv/hidden | wc -l; cat /etc/visible; echo x > /srv/hidden/new || echo refused"))
    (b / "rootfs/etc/secret").write_text("top secret\n")
    (b / "rootfs/etc/visible").write_text("shown\n")
    (b / "rootfs/srv/hidden").mkdir(parents=True)
    (b / "rootfs/srv/hidden/file").write_text("hidden\n")
    result = runtime.run(b)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "0", "0", "shown", "refused"]


def test_readonly_paths(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(root={"readonly": False},
               linux={"readonlyPaths": ["/proc/sys", "/proc/fs", "/srv/ro", "/no/such"]},
               args=sh(f"{PROBE} open /proc/sys/kernel/hostname w; {PROBE} open /proc/sys/vm/overcommit_memory w; "
                       f"touch /srv/ro/x 2>/dev/null || echo refused; touch /srv/rw/x && echo written; "
                       f"cat /proc/sys/kernel/ostype"))
    (b / "rootfs/srv/ro").mkdir(parents=True)
    (b / "rootfs/srv/rw").mkdir(parents=True)
    result = runtime.run(b)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["EROFS", "EROFS", "refused", "written", "Linux"]
    assert not (b / "rootfs/srv/ro/x").exists() and (b / "rootfs/srv/rw/x").exists()


# -- hostname, domainname, sysctl ---------------------------------------------------------------------

def test_hostname_and_domainname(runtime: Runtime, bundle: Bundle) -> None:
    host = os.uname()
    info = run_info(runtime, bundle(hostname="box.example", domainname="example.org"))
    assert (info["hostname"], info["domainname"]) == ("box.example", "example.org")
    assert os.uname().nodename == host.nodename  # the host's is unchanged


@pytest.mark.parametrize("value", ["0", "1"])
def test_sysctl_in_a_new_network_namespace(runtime: Runtime, bundle: Bundle, value: str) -> None:
    host_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    b = bundle(sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ip_default_ttl"),
               linux={"sysctl": {"net.ipv4.ip_forward": value, "net.ipv4.ip_default_ttl": "99"}})
    assert run_out(runtime, b).split() == [value, "99"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_before
    assert Path("/proc/sys/net/ipv4/ip_default_ttl").read_text().strip() != "99"


def test_sysctl_in_a_new_ipc_namespace(runtime: Runtime, bundle: Bundle) -> None:
    host_before = Path("/proc/sys/kernel/shmmax").read_text()
    b = bundle(sh("cat /proc/sys/kernel/shmmax /proc/sys/fs/mqueue/msg_max"),
               linux={"sysctl": {"kernel.shmmax": "123456789", "fs.mqueue.msg_max": "42"}})
    assert run_out(runtime, b).split() == ["123456789", "42"]
    assert Path("/proc/sys/kernel/shmmax").read_text() == host_before


# -- the process -------------------------------------------------------------------------------------

def test_env_and_cwd(runtime: Runtime, bundle: Bundle) -> None:
    env = ["PATH=/bin:/usr/bin", "A=1", "WITH_EQUALS=x=y", "EMPTY="]
    info = run_info(runtime, bundle(process={"env": env, "cwd": "/usr/bin"}))
    assert info["env"] == env
    assert info["cwd"] == "/usr/bin"


def test_cwd_that_does_not_exist_fails_clearly(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    result = runtime("create", "--bundle", bundle(SLEEP, process={"cwd": "/no/such/dir"}), cid)
    assert result.returncode != 0 and "/no/such/dir" in result.stderr
    assert_nothing_left(runtime, cid)


def test_user_groups_and_umask(runtime: Runtime, bundle: Bundle) -> None:
    user = {"uid": 1000, "gid": 1001, "additionalGids": [5, 2000, 1001], "umask": 0o027}
    info = run_info(runtime, bundle(process={"user": user}))
    assert (info["uid"], info["euid"], info["gid"], info["egid"]) == (1000, 1000, 1001, 1001)
    assert sorted(info["groups"]) == [5, 1001, 2000]
    assert info["umask"] == "0027"
    info = run_info(runtime, bundle(process={"user": {"uid": 0, "gid": 0}}))
    assert info["umask"] == "0022" and info["groups"] == []


def test_the_five_capability_sets_of_a_user(runtime: Runtime, bundle: Bundle) -> None:
    caps = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_TIME", "CAP_SETUID"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
    }
    info = run_info(runtime, bundle(process={"user": {"uid": 1000, "gid": 1000}, "capabilities": caps}))
    st = {k: int(v, 16) for k, v in info["status"].items() if k.startswith("Cap")}
    assert st["CapBnd"] == caps_mask(caps["bounding"])
    assert st["CapInh"] == caps_mask(caps["inheritable"])
    assert st["CapAmb"] == caps_mask(caps["ambient"])
    # execve(2) as a non-root user: permitted and effective become the ambient set
    assert st["CapPrm"] == caps_mask(caps["ambient"])
    assert st["CapEff"] == caps_mask(caps["ambient"])


@pytest.mark.parametrize("nnp", [True, False])
def test_capabilities_of_root(runtime: Runtime, bundle: Bundle, nnp: bool) -> None:
    caps = {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"], "permitted": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_CHOWN"], "inheritable": [], "ambient": []}
    info = run_info(runtime, bundle(process={"capabilities": caps, "noNewPrivileges": nnp}))
    st = {k: int(v, 16) for k, v in info["status"].items() if k.startswith("Cap")}
    assert st["CapBnd"] == caps_mask(caps["bounding"])
    assert st["CapInh"] == 0 and st["CapAmb"] == 0
    if nnp:  # execve(2) may not add to the permitted set the runtime left; root's effective = permitted
        assert st["CapPrm"] == st["CapEff"] == caps_mask(caps["permitted"])
    else:  # execve(2) as root: the whole bounding set becomes permitted and effective
        assert st["CapPrm"] == st["CapEff"] == caps_mask(caps["bounding"])


def test_no_capabilities(runtime: Runtime, bundle: Bundle) -> None:
    sets = ("bounding", "effective", "permitted", "inheritable", "ambient")
    info = run_info(runtime, bundle(process={"capabilities": {k: [] for k in sets}}))
    assert all(int(v, 16) == 0 for k, v in info["status"].items() if k.startswith("Cap")), info["status"]


def test_capabilities_are_enforced(runtime: Runtime, bundle: Bundle) -> None:
    # without CAP_SYS_ADMIN the container cannot mount, with it it can
    without = runtime.run(bundle([PROBE, "mount", "none", "/tmp", "tmpfs"]))
    assert without.stdout.strip() == "EPERM"
    admin = {k: ["CAP_SYS_ADMIN"] for k in ("bounding", "effective", "permitted")}
    with_cap = runtime.run(bundle([PROBE, "mount", "none", "/tmp", "tmpfs"], process={"capabilities": admin}))
    assert with_cap.stdout.strip() == "ok"


def test_rlimits(runtime: Runtime, bundle: Bundle) -> None:
    rlimits = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
               {"type": "RLIMIT_NPROC", "soft": 77, "hard": 88},
               {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
               {"type": "RLIMIT_MSGQUEUE", "soft": 1000, "hard": 2000}]
    info = run_info(runtime, bundle(process={"rlimits": rlimits}))
    for rl in rlimits:
        assert info["rlimits"][rl["type"]] == {"soft": rl["soft"], "hard": rl["hard"]}, rl["type"]


def test_rlimit_above_the_hard_limit_is_refused(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    b = bundle(process={"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]})
    result = runtime("create", "--bundle", b, cid)
    assert result.returncode == ExitCode.INVALID_CONFIG and "rlimits[0]" in result.stderr
    assert_nothing_left(runtime, cid)


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(runtime: Runtime, bundle: Bundle, nnp: bool) -> None:
    info = run_info(runtime, bundle(process={"noNewPrivileges": nnp}))
    assert info["status"]["NoNewPrivs"] == ("1" if nnp else "0")


def test_oom_score_adj(runtime: Runtime, bundle: Bundle) -> None:
    own = Path("/proc/self/oom_score_adj").read_text()
    info = run_info(runtime, bundle(process={"oomScoreAdj": 321}))
    assert info["oom_score_adj"] == 321
    # (a value below our own needs CAP_SYS_RESOURCE, which this test environment may lack)
    cid = started(runtime, bundle(SLEEP, process={"oomScoreAdj": 987}))
    pid = runtime.state(cid)["pid"]
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "987"
    assert Path("/proc/self/oom_score_adj").read_text() == own


def test_terminal_through_the_console_socket(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        b = bundle(sh("echo hello from the pty; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; "
                      f"{PROBE} fds"),
                   process={"terminal": True, "consoleSize": {"height": 30, "width": 100}})
        cid = runtime.new_id()
        runtime("create", "--console-socket", console.path, "--bundle", b, cid, check=True)
        master = console.receive()
        assert os.isatty(master)
        runtime("start", cid, check=True)
        text = console.read_all().decode(errors="replace").replace("\r\n", "\n")
    finally:
        console.close()
    lines = text.splitlines()
    assert lines[:3] == ["hello from the pty", "is-a-tty", "30 100"], text
    fds = json.loads(lines[3])
    assert {fds["0"], fds["1"], fds["2"]} <= {"/dev/console"} | {f"/dev/pts/{n}" for n in range(16)}
    wait_until("the container to stop", lambda: status(runtime, cid) == "stopped")


# -- hooks -------------------------------------------------------------------------------------------

def _hook(name: str, log: str) -> dict[str, Any]:
    """A hook that appends 'NAME <state JSON from stdin> <$HOOKVAR>' to log."""
    return {"path": "/bin/sh", "args": ["sh", "-c", f'echo "{name} $(cat) $HOOKVAR" >> {log}'],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"HOOKVAR=var-{name}"]}


def _read_hook_log(path: Path) -> list[tuple[str, dict[str, Any], str]]:
    out = []
    for line in path.read_text().splitlines():
        name, rest = line.split(" ", 1)
        state, _, var = rest.rpartition(" ")
        out.append((name, json.loads(state), var))
    return out


def test_hooks_run_in_order_with_the_state(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    logdir = tmp_path / "hooklog"
    logdir.mkdir()
    log = logdir / "log"
    hooks = {name: [_hook(name, str(log))] for name in ("prestart", "createRuntime", "createContainer",
                                                        "poststart", "poststop")}
    hooks["startContainer"] = [_hook("startContainer", "/hooks/log")]  # runs inside the container
    mounts = default_config()["mounts"] + [{"destination": "/hooks", "type": "bind", "source": str(logdir),
                                            "options": ["bind"]}]
    b = bundle(SLEEP, hooks=hooks, mounts=mounts, annotations={"hooked": "yes"})
    cid = runtime.new_id()
    runtime("create", "--bundle", b, cid, check=True)
    pid = runtime.state(cid)["pid"]
    assert [e[0] for e in _read_hook_log(log)] in (
        ["prestart", "createRuntime", "createContainer"], ["createRuntime", "prestart", "createContainer"])
    runtime("start", cid, check=True)
    wait_until("poststart", lambda: len(_read_hook_log(log)) >= 5)
    runtime("kill", cid, "KILL", check=True)
    wait_until("the container to stop", lambda: status(runtime, cid) == "stopped")
    runtime("delete", cid, check=True)

    entries = _read_hook_log(log)
    names = [e[0] for e in entries]
    # (startContainer before poststart: test_poststart_runs_after_the_process_is_executed)
    assert names[2] == "createContainer" and set(names[3:5]) == {"startContainer", "poststart"}
    assert names[5:] == ["poststop"]
    want_status = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
                   "startContainer": "created", "poststart": "running", "poststop": "stopped"}
    for name, state, var in entries:
        assert var == f"var-{name}", name
        assert state["id"] == cid and state["bundle"] == str(b), name
        assert state["status"] == want_status[name], (name, state)
        assert state.get("annotations") == {"hooked": "yes"}, name
        if name != "poststop":
            assert state["pid"] == pid, (name, state)


def test_poststart_runs_after_the_process_is_executed(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    """runtime-spec: startContainer hooks run before the user process is executed; poststart hooks
    after it is executed and before `start` returns."""
    logdir = tmp_path / "hooklog"
    logdir.mkdir()
    log = logdir / "log"
    # poststart records the command line of the container's init as the host sees it
    poststart = {"path": "/bin/sh", "args": ["sh", "-c", (
        'pid=$(sed -n \'s/.*"pid":\\([0-9]*\\).*/\\1/p\'); '
        f'echo "poststart $(tr \'\\0\' \' \' < /proc/$pid/cmdline)" >> {log}')],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}
    # a slow startContainer hook: a runtime that does not wait for the exec runs poststart first
    slow = "usleep 300000; echo startContainer >> /hooks/log"
    hooks = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", slow], "env": ["PATH=/bin:/usr/bin"]}],
             "poststart": [poststart]}
    mounts = default_config()["mounts"] + [{"destination": "/hooks", "type": "bind", "source": str(logdir),
                                            "options": ["bind"]}]
    cid = runtime.new_id()
    runtime("create", "--bundle", bundle(SLEEP, hooks=hooks, mounts=mounts), cid, check=True)
    runtime("start", cid, check=True)
    lines = [line.rstrip() for line in log.read_text().splitlines()]  # start has returned: both hooks are done
    assert lines == ["startContainer", " ".join(["poststart", *SLEEP])], lines


def _hook_failure(runtime: Runtime, bundle: Bundle, kind: str, hook: dict[str, Any]) -> tuple[str, Any, float]:
    cid = runtime.new_id()
    b = bundle(SLEEP, hooks={kind: [hook]})
    t0 = time.monotonic()
    result = runtime("create", "--bundle", b, cid, timeout=30)
    return cid, result, time.monotonic() - t0


@pytest.mark.parametrize("kind", ["createRuntime", "prestart", "createContainer"])
def test_a_failing_create_hook_fails_create_and_leaves_nothing(runtime: Runtime, bundle: Bundle, kind: str) -> None:
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "echo hook says no >&2; exit 3"]}
    cid, result, _ = _hook_failure(runtime, bundle, kind, hook)
    assert result.returncode != 0
    if kind != "createContainer":  # createContainer fails inside the init: its error comes through it
        assert result.returncode == ExitCode.HOOK
    assert kind in result.stderr and "exit status 3" in result.stderr and "hook says no" in result.stderr
    assert_nothing_left(runtime, cid)


def test_a_hook_timeout(runtime: Runtime, bundle: Bundle) -> None:
    hook = {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}
    cid, result, took = _hook_failure(runtime, bundle, "createRuntime", hook)
    assert result.returncode == ExitCode.HOOK
    assert "createRuntime" in result.stderr and "timed out" in result.stderr
    assert took < 10
    assert_nothing_left(runtime, cid)


def test_a_failing_poststart_hook_leaves_the_container_running(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    runtime("create", "--bundle", bundle(SLEEP, hooks={"poststart": [{"path": "/bin/false"}]}), cid, check=True)
    runtime("start", cid)
    assert status(runtime, cid) == "running"


# -- cgroups -----------------------------------------------------------------------------------------

def test_resources(runtime: Runtime, bundle: Bundle) -> None:
    res = {"memory": {"limit": 64 << 20, "reservation": 32 << 20},
           "pids": {"limit": 20},
           "cpu": {"shares": 256, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
           "devices": [{"allow": False, "access": "rwm"}]}
    cid = started(runtime, bundle(SLEEP, linux={"resources": res}))
    assert read_cgroup(runtime, cid, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert read_cgroup(runtime, cid, "memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read_cgroup(runtime, cid, "pids", "pids.max") == "20"
    assert read_cgroup(runtime, cid, "cpu", "cpu.shares") == "256"
    assert read_cgroup(runtime, cid, "cpu", "cpu.cfs_quota_us") == "20000"
    assert read_cgroup(runtime, cid, "cpu", "cpu.cfs_period_us") == "100000"
    assert read_cgroup(runtime, cid, "cpuset", "cpuset.cpus") == "0"
    assert read_cgroup(runtime, cid, "cpuset", "cpuset.mems") == "0"
    pid = runtime.state(cid)["pid"]
    for ctrl, path in joined(cgroup_paths(runtime, cid)).items():
        procs = Path(path, "cgroup.procs").read_text().split()
        assert str(pid) in procs, f"init is not in its {ctrl} cgroup {path}"


def joined(paths: dict[str, str]) -> dict[str, str]:
    """The hierarchies a container's processes are in: on a hybrid host (v1 controllers beside an
    empty cgroup2) jaula joins cgroup2 only when a limit lives there."""
    hybrid = "unified" in paths and len(paths) > 1
    return {k: v for k, v in paths.items() if not (hybrid and k == "unified")}


@pytest.mark.parametrize("limit,forks", [(4, False), (20, True)])
def test_pids_limit_is_enforced(runtime: Runtime, bundle: Bundle, limit: int, forks: bool) -> None:
    script = f"for i in 1 2 3 4 5 6; do {PROBE} sleep 0.1 & done; echo all-started; wait"
    result = runtime.run(bundle(sh(script), linux={"resources": {"pids": {"limit": limit}}}))
    if forks:
        assert (result.returncode, result.stdout.strip()) == (0, "all-started"), result.stderr
    else:
        assert result.returncode != 0 and "all-started" not in result.stdout
        assert "fork" in result.stderr and "Resource temporarily unavailable" in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_cgroups_path(runtime: Runtime, bundle: Bundle, cgroup_cleanup: list[Path], kind: str) -> None:
    cid = runtime.new_id()
    path = f"jaula-test-{cid}/inner" if kind == "relative" else f"/jaula-test-{cid}/inner"
    want = cgroup_dirs(path, cid)
    cgroup_cleanup.extend(want + [d.parent for d in want])
    runtime("run", "-d", "--bundle", bundle(SLEEP, linux={"cgroupsPath": path}), cid, check=True)
    paths = cgroup_paths(runtime, cid)
    assert sorted(map(str, want)) == sorted(paths.values())
    pid = runtime.state(cid)["pid"]
    for d in map(Path, joined(paths).values()):
        assert str(pid) in (d / "cgroup.procs").read_text().split(), d
    own = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()}
    theirs = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}
    if "unified" not in joined(paths):
        del theirs[""]
    for ctrl, cg in theirs.items():
        expect = path if kind == "absolute" else f"{own[ctrl].rstrip('/')}/{path}"
        assert cg == expect, ctrl
    runtime("delete", "--force", cid, check=True)
    assert not [d for d in want if d.exists()]


def test_cgroups_path_with_systemd_syntax_is_refused(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    result = runtime("create", "--bundle", bundle(SLEEP, linux={"cgroupsPath": "system.slice:jaula:x"}), cid)
    assert result.returncode == ExitCode.INVALID_CONFIG and "systemd" in result.stderr
    assert_nothing_left(runtime, cid)


# -- personality, annotations, versions, time, LSM ---------------------------------------------------

def test_personality_linux32(runtime: Runtime, bundle: Bundle) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("LINUX32 shows i686 only on x86_64")
    assert run_out(runtime, bundle(["/bin/uname", "-m"], linux={"personality": {"domain": "LINUX32"}})).strip() == "i686"
    info = run_info(runtime, bundle(linux={"personality": {"domain": "LINUX32"}}))
    assert info["personality"] & 0xFF == 0x0008
    assert run_out(runtime, bundle(["/bin/uname", "-m"], linux={"personality": {"domain": "LINUX"}})).strip() == "x86_64"


def test_annotations_in_the_state(runtime: Runtime, bundle: Bundle) -> None:
    ann = {"org.opencontainers.image.title": "probe", "com.example/empty": ""}
    cid = runtime.new_id()
    runtime("create", "--bundle", bundle(SLEEP, annotations=ann), cid, check=True)
    assert runtime.state(cid)["annotations"] == ann
    items = json.loads(runtime("list", "--format", "json", check=True).stdout)
    assert items[0]["annotations"] == ann


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2", "1.1.0", "1.2.0", "1.2.1"])
def test_oci_versions_accepted(runtime: Runtime, bundle: Bundle, version: str) -> None:
    cid = runtime.new_id()
    runtime("create", "--bundle", bundle(SLEEP, ociVersion=version), cid, check=True)
    assert runtime.state(cid)["ociVersion"] == version


@pytest.mark.parametrize("version", ["0.9", "0.9.0", "2.0.0", "1.3.0", ""])
def test_oci_versions_refused(runtime: Runtime, bundle: Bundle, version: str) -> None:
    cid = runtime.new_id()
    result = runtime("create", "--bundle", bundle(SLEEP, ociVersion=version), cid)
    assert result.returncode == ExitCode.INVALID_CONFIG
    assert "ociVersion" in result.stderr and version in result.stderr
    assert_nothing_left(runtime, cid)


def test_time_namespace_offsets(runtime: Runtime, bundle: Bundle) -> None:
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("the kernel has no time namespace (CONFIG_TIME_NS)")
    days = 10 * 86400
    namespaces = DEFAULT_NS + [{"type": "time"}]
    b = bundle(sh(f"cat /proc/uptime; {PROBE} info"), linux={
        "namespaces": namespaces, "timeOffsets": {"boottime": {"secs": days, "nanosecs": 0},
                                                  "monotonic": {"secs": 3600, "nanosecs": 500}}})
    before = float(Path("/proc/uptime").read_text().split()[0])
    out = run_out(runtime, b).splitlines()
    after = float(Path("/proc/uptime").read_text().split()[0])
    inside = float(out[0].split()[0])
    assert before + days - 1 <= inside <= after + days + 1, (before, inside, after)
    info = json.loads(out[1])
    assert info["ns"]["time"] != os.readlink("/proc/self/ns/time")


def test_time_namespace_offsets_with_a_user_namespace(runtime: Runtime, userns_bundle: Bundle) -> None:
    """A new user namespace owns the time namespace: the offsets are still written (the runtime
    is non-dumpable inside it, so its /proc/self files are the host root's and only an fd opened
    before the user namespace can write them). A negative boottime offset, as jaula's system
    instances get: uptime inside starts near 0, in /proc/uptime, sysinfo(2) and exec'd processes."""
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("the kernel has no time namespace (CONFIG_TIME_NS)")
    offset = 100 - int(float(Path("/proc/uptime").read_text().split()[0]))
    namespaces = userns_overrides()["linux"]["namespaces"] + [{"type": "time"}]
    b = userns_bundle(SLEEP, linux={"namespaces": namespaces,
                                    "timeOffsets": {"boottime": {"secs": offset, "nanosecs": 250000000}}})
    before = float(Path("/proc/uptime").read_text().split()[0])
    cid = started(runtime, b)
    inside = float(exec_out(runtime, cid, "/bin/cat", "/proc/uptime").split()[0])
    busybox = exec_out(runtime, cid, "/bin/busybox", "uptime")  # sysinfo(2)
    after = float(Path("/proc/uptime").read_text().split()[0])
    assert before + offset + 0.25 - 1 <= inside <= after + offset + 0.25 + 1, (before, offset, inside, after)
    assert re.search(r"up +\d+ min,", busybox), busybox  # not the host's hours
    pid = runtime.state(cid)["pid"]
    assert os.readlink(f"/proc/{pid}/ns/time") != os.readlink("/proc/self/ns/time")
    assert os.stat(f"/proc/{pid}/ns/time").st_ino == os.stat(f"/proc/{pid}/ns/time_for_children").st_ino


def test_time_offsets_need_a_time_namespace(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    b = bundle(SLEEP, linux={"timeOffsets": {"boottime": {"secs": 5, "nanosecs": 0}}})
    result = runtime("create", "--bundle", b, cid)
    assert result.returncode == ExitCode.INVALID_CONFIG and "timeOffsets" in result.stderr
    assert_nothing_left(runtime, cid)


def test_lsm_labels_are_ignored_where_the_lsm_is_off(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    if os.path.exists("/sys/module/apparmor/parameters/enabled") and \
            Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y":
        pytest.skip("apparmor is enabled on this host: the label would be applied, not ignored")
    if os.path.exists("/sys/fs/selinux/enforce"):
        pytest.skip("selinux is enabled on this host: the label would be applied, not ignored")
    b = bundle(process={"apparmorProfile": "jaula-test-profile",
                        "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2"},
               linux={"mountLabel": "system_u:object_r:container_file_t:s0:c1,c2"})
    info = run_info(runtime, b)
    assert info["pid"] == 1
    # with --debug the init says what it ignored (on stderr when there is no --log)
    runtime.global_args = ["--debug"]
    try:
        result = runtime.run(b, check=True)
        assert json.loads(result.stdout)["pid"] == 1
        assert "jaula-test-profile" in result.stderr and "ignored" in result.stderr, result.stderr
        # ... and with --log the container still runs (the host's log file is out of its reach)
        runtime.global_args = ["--debug", "--log", str(tmp_path / "debug.log")]
        assert json.loads(runtime.run(b, check=True).stdout)["pid"] == 1
    finally:
        runtime.global_args = []


def test_a_config_without_rlimits_runs(runtime: Runtime, bundle: Bundle) -> None:
    """Nothing may be imported after pivot_root: a config with no rlimits must not need `resource`."""
    b = bundle(["/bin/true"])
    config = json.loads((b / "config.json").read_text())
    config["process"].pop("rlimits", None)
    (b / "config.json").write_text(json.dumps(config))
    result = runtime.run(b)
    assert result.returncode == 0, result.stderr


def test_idmap_and_ridmap_mounts(runtime: Runtime, userns_bundle: Bundle) -> None:
    """idmap: a host folder owned by uid 0 shows as root's inside, through the container's user
    namespace, and what root makes in it lands owned by uid 0 on the host. ridmap with the mount's
    own maps (0 -> 5000) shows the same files through those maps: host 0 is unmapped there."""
    src = Path(tempfile.mkdtemp(prefix="jaula-idmap-"))
    try:
        src.chmod(0o777)
        (src / "f").write_text("hi")
        os.chown(src / "f", 0, 0)
        b = userns_bundle(sh("stat -c '%u %g' /data/f /data2/f; touch /data/made && echo made"),
                          root={"readonly": False})
        config = json.loads((b / "config.json").read_text())
        config["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(src), "options": ["bind", "idmap"]},
            {"destination": "/data2", "type": "bind", "source": str(src), "options": ["rbind", "ridmap"],
             "uidMappings": [{"containerID": 0, "hostID": 5000, "size": 10}],
             "gidMappings": [{"containerID": 0, "hostID": 5000, "size": 10}]},
        ]
        (b / "config.json").write_text(json.dumps(config))
        out = run_out(runtime, b).split()
        assert out[:4] == ["0", "0", "65534", "65534"], out
        assert out[-1] == "made"
        st = os.stat(src / "made")
        assert (st.st_uid, st.st_gid) == (0, 0)  # container root 100000 -> stored as 0 through the idmap
    finally:
        shutil.rmtree(src, ignore_errors=True)
