"""Issue 2, point 4: each security property of jaula-runtime attacked with real containers.

Every test plays a hostile image or a careless caller against the runtime and checks what the
host keeps: files and mounts outside the bundle, its fds, its interpreter, its core_pattern, its
keyring. Where an attack is only meaningful if the technique works at all, a control shows that
it does (a chroot escape outside a container, a ptrace-style read of a dumpable process...).

Everything made lives under tmp_path; a fixture unmounts anything a failed test left mounted
under it on the host, and the `runtime` fixture force-deletes containers.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jaula.linux import caps as capsys
from jaula.linux.libc import NR
from tests.support.bundle import (
    USERNS_HOST_ID,
    default_config,
    make_bundle,
    shift_ownership,
    userns_overrides,
)
from tests.support.containers import wait_until
from tests.support.runtime import LAUNCHER, Runtime

pytestmark = pytest.mark.root

PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572
CORE_PATTERN = "/proc/sys/kernel/core_pattern"
Bundle = Callable[..., Path]


# --- helpers -----------------------------------------------------------------------------------

def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


def json_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    """Every stdout line that is JSON, parsed (probe stat/fds/fdscan print one line each)."""
    out = []
    for line in lines(result):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mountinfo(text: str | None = None) -> list[dict[str, str]]:
    """Lines of a mountinfo (ours by default) as dicts: majmin, root, point, fstype."""
    if text is None:
        text = Path("/proc/self/mountinfo").read_text()
    out = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        out.append({"majmin": f[2], "root": _unescape(f[3]), "point": _unescape(f[4]), "fstype": right.split()[0]})
    return out


def host_mounts_under(path: Path) -> list[str]:
    base = str(path)
    return [m["point"] for m in mountinfo() if m["point"] == base or m["point"].startswith(base + "/")]


def tree(path: Path) -> dict[str, str]:
    """Every entry under path with its type and content: proves a host folder stayed untouched."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = "file:" + p.read_text(errors="replace")
    return out


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def host_interpreter() -> str:
    """The host file jaula-runtime runs as: its launcher's #! interpreter, symlinks resolved."""
    first = LAUNCHER.read_text().splitlines()[0]
    return os.path.realpath(first[2:].split()[0])


def identity(st: dict[str, Any]) -> tuple[str, int]:
    return st["dev"], st["ino"]


def host_identity(path: str) -> tuple[str, int]:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}", st.st_ino


def session_keyring() -> int:
    """Our session keyring's serial: keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    serial = libc.syscall(ctypes.c_long(NR["keyctl"]), 0, -3, 0)
    assert serial > 0, os.strerror(ctypes.get_errno())
    return serial


def all_caps() -> list[str]:
    return capsys.NAMES[: capsys.last_cap() + 1]


def caps_plus(*extra: str) -> dict[str, Any]:
    caps = default_config()["process"]["capabilities"]["bounding"] + list(extra)
    return {"capabilities": {k: caps for k in ("bounding", "effective", "permitted", "ambient")}}


def mounts_with(*extra: dict[str, Any], drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The default mounts without the destinations in drop, plus extra (in that order)."""
    return [m for m in default_config()["mounts"] if m["destination"] not in drop] + list(extra)


def replace_with_symlink(path: Path, target: str) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def call(rt: Runtime, *args: str | os.PathLike[str], fds: dict[int, os.PathLike[str] | str], check: bool = False,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """rt(*args) with the files in `fds` open (read-only) at exactly those fd numbers in the runtime.

    The fds are placed in the child (preexec_fn): dup2 onto 3, 4... in the test process itself
    would clobber pytest's own fds. close_fds=False, so any other inheritable fd passes too.
    """

    def place() -> None:
        for number, path in fds.items():
            fd = os.open(path, os.O_RDONLY)
            if fd == number:
                os.set_inheritable(fd, True)
            else:
                os.dup2(fd, number)  # inheritable
                os.close(fd)

    argv = rt.argv(*args)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=rt.env, close_fds=False,
                              preexec_fn=place, timeout=timeout, check=False)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(argv, proc.returncode, out.read().decode(errors="replace"),
                                             err.read().decode(errors="replace"))
    if check:
        assert result.returncode == 0, f"{argv} exited {result.returncode}: {result.stderr}"
    return result


def run_with_fds(rt: Runtime, bundle: Path, *args: str, fds: dict[int, Any], check: bool = False) -> subprocess.CompletedProcess[str]:
    return call(rt, "run", "--bundle", bundle, *args, rt.new_id(), fds=fds, check=check)


@pytest.fixture(autouse=True)
def no_host_mounts_left(tmp_path: Path) -> Iterator[None]:
    """Whatever a test (or a bug) mounted on the host under tmp_path is unmounted afterwards."""
    yield
    from jaula.linux import mount as m

    for point in sorted(host_mounts_under(tmp_path), key=len, reverse=True):
        try:
            m.umount2(point, m.MNT_DETACH)
        except OSError:
            pass


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A host folder outside every bundle, with one file: what an escape would reach."""
    d = tmp_path / "hostdir"
    d.mkdir()
    (d / "host-file").write_text("on the host\n")
    return d


# --- pivot_root, never chroot ------------------------------------------------------------------

def test_no_host_root_is_left_in_the_containers_mount_table(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    host = mountinfo()
    host_root = next(m for m in host if m["point"] == "/")
    b = bundle(["/bin/cat", "/proc/self/mountinfo"])
    result = runtime.run(b, check=True)
    inside = mountinfo(result.stdout)
    root = next(m for m in inside if m["point"] == "/")
    # "/" is the bundle's rootfs (a bind of it), not the host's root with a chroot on top.
    assert root["root"].endswith(str(b / "rootfs")), root
    assert not [m for m in inside if (m["majmin"], m["root"]) == (host_root["majmin"], host_root["root"])], inside
    # Nothing of the host's tree is stacked anywhere: every mount point is one the config asked for.
    config = json.loads((b / "config.json").read_text())
    wanted = {m["destination"] for m in config["mounts"]} | set(config["linux"]["maskedPaths"]) | set(config["linux"]["readonlyPaths"])
    stray = [m["point"] for m in inside if m["point"] != "/" and not any(
        m["point"] == w or m["point"].startswith("/sys/fs/cgroup/") for w in wanted)]
    assert not stray, f"mounts inside the container that the config did not ask for: {stray}"


def test_no_pivot_is_refused(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    result = runtime("create", "--no-pivot", "--bundle", bundle(), cid)
    assert result.returncode != 0
    assert "pivot_root" in result.stderr and "chroot" in result.stderr
    assert cid not in runtime.container_ids()


def test_chroot_escape_does_not_reach_the_host(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    marker = tmp_path / f"marker-{uuid.uuid4().hex}"
    marker.write_text("host\n")
    b = bundle(["/usr/bin/probe", "chroot-escape", str(marker)], process=caps_plus("CAP_SYS_CHROOT"),
               mounts=mounts_with({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))
    # Control: the same escape from a plain chroot into the same tree does reach the host.
    control = subprocess.run(["chroot", str(b / "rootfs"), "/usr/bin/probe", "chroot-escape", str(marker)],
                             capture_output=True, text=True, timeout=30, check=False)
    shutil.rmtree(b / "rootfs" / "tmp" / ".jail", ignore_errors=True)
    assert control.stdout == "ok\n", control
    result = runtime.run(b)
    assert result.stdout == "ENOENT\n", result  # chroot worked (no "chroot: E..."), the host did not show


# --- fds: only stdio and --preserve-fds -----------------------------------------------------------

def test_only_stdio_reaches_the_container(runtime: Runtime, bundle: Bundle, host_dir: Path) -> None:
    fds = {3: host_dir, 4: host_dir / "host-file", 9: "/", 100: host_dir}
    result = run_with_fds(runtime, bundle(["/usr/bin/probe", "fds"]), check=True, fds=fds)
    assert set(json.loads(result.stdout)) == {"0", "1", "2"}, result.stdout


def test_preserve_fds_passes_exactly_those(runtime: Runtime, bundle: Bundle, tmp_path: Path, host_dir: Path) -> None:
    (tmp_path / "one").write_text("1")
    (tmp_path / "two").write_text("2")
    fds = {3: tmp_path / "one", 4: tmp_path / "two", 5: host_dir, 6: "/"}
    result = run_with_fds(runtime, bundle(["/usr/bin/probe", "fds"]), "--preserve-fds", "2", check=True, fds=fds)
    got = json.loads(result.stdout)
    assert set(got) == {"0", "1", "2", "3", "4"}, got
    # The container sees the files by their host names (they are outside its root), but only these two.
    assert got["3"].endswith("/one") and got["4"].endswith("/two"), got


def test_a_fake_proc_in_the_image_does_not_hide_fds_from_closing(runtime: Runtime, bundle: Bundle, host_dir: Path) -> None:
    """Without a proc mount, /proc/self/fd after pivot_root is the image's: a listing of 0 1 2
    there must not keep the caller's other fds open (they would be host fds in the container)."""
    b = bundle(["/usr/bin/probe", "fdscan"], mounts=mounts_with(drop=("/proc",)),
               linux={"maskedPaths": [], "readonlyPaths": []})
    fake = b / "rootfs" / "proc" / "self" / "fd"
    fake.mkdir(parents=True)
    for n in "012":
        (fake / n).write_text("")
    result = run_with_fds(runtime, b, check=True, fds={3: host_dir, 4: host_dir, 7: host_dir})
    assert json.loads(result.stdout) == [0, 1, 2]


@pytest.fixture
def running(runtime: Runtime, bundle: Bundle) -> Callable[..., str]:
    """Factory: a detached container running `probe sleep 60` (overrides as for `bundle`); its id."""

    def factory(**overrides: Any) -> str:
        cid = runtime.new_id()
        runtime("run", "--detach", "--bundle", bundle(["/usr/bin/probe", "sleep", "60"], **overrides), cid, check=True)
        return cid

    return factory


def test_exec_gets_only_stdio_and_preserved_fds(runtime: Runtime, running, tmp_path: Path, host_dir: Path) -> None:
    cid = running()
    (tmp_path / "kept").write_text("k")
    fds = {3: tmp_path / "kept", 4: host_dir, 8: "/"}
    plain = call(runtime, "exec", cid, "/usr/bin/probe", "fds", check=True, fds=fds)
    assert set(json.loads(plain.stdout)) == {"0", "1", "2"}, plain.stdout
    kept = call(runtime, "exec", "--preserve-fds", "1", cid, "/usr/bin/probe", "fds", check=True, fds=fds)
    got = json.loads(kept.stdout)
    assert set(got) == {"0", "1", "2", "3"} and got["3"].endswith("/kept"), got


# --- cwd inside the root (CVE-2024-21626) -------------------------------------------------------

@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8, 9, 10])
def test_cwd_through_a_leaked_fd_fails_create(runtime: Runtime, bundle: Bundle, host_dir: Path, n: int) -> None:
    """runc leaked a host fd into init and let process.cwd be /proc/self/fd/N: the process started
    in a host directory. Here the caller leaks host directories at 3..10 on purpose."""
    cid = runtime.new_id()
    result = call(runtime, "run", "--bundle", bundle(["/usr/bin/probe", "info"], process={"cwd": f"/proc/self/fd/{n}"}), cid,
                  fds={i: host_dir for i in range(3, 11)})
    assert result.returncode != 0 and result.stdout == "", result
    assert f"process.cwd '/proc/self/fd/{n}'" in result.stderr, result.stderr
    assert cid not in runtime.container_ids()


@pytest.mark.parametrize("cwd", ["/proc/self/fd/3", "/proc/self/fd/3/..", "/proc/self/fd/3/../.."])
def test_cwd_through_a_preserved_host_fd_fails_create(runtime: Runtime, bundle: Bundle, host_dir: Path, cwd: str) -> None:
    """A preserved fd is open inside on purpose: chdir through it works, and must still be refused."""
    result = run_with_fds(runtime, bundle(["/usr/bin/probe", "info"], process={"cwd": cwd}), "--preserve-fds", "1",
                          fds={3: host_dir})
    assert result.returncode != 0 and result.stdout == "", result
    assert "process.cwd" in result.stderr and "not inside the container" in result.stderr, result.stderr


@pytest.mark.parametrize("preserve", [0, 1])
def test_exec_cwd_through_a_leaked_fd_fails(runtime: Runtime, running, host_dir: Path, preserve: int) -> None:
    cid = running()
    for n in range(3, 8):
        result = call(runtime, "exec", "--preserve-fds", str(preserve), "--cwd", f"/proc/self/fd/{n}", cid,
                      "/usr/bin/probe", "info", fds={i: host_dir for i in range(3, 8)})
        assert result.returncode != 0 and result.stdout == "", (n, result)
        assert f"process.cwd '/proc/self/fd/{n}'" in result.stderr, result.stderr


# --- mount destinations resolved inside the root --------------------------------------------------

def _symlink_target(kind: str, host_path: Path) -> str:
    return str(host_path) if kind == "absolute" else "../" * 24 + str(host_path).lstrip("/")


@pytest.mark.parametrize("in_root", [True, False], ids=["target-in-root", "target-only-on-host"])
@pytest.mark.parametrize("mtype", ["bind", "tmpfs"])
@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_symlinked_mount_destination_stays_in_the_root(runtime: Runtime, bundle: Bundle, tmp_path: Path, host_dir: Path,
                                                        kind: str, mtype: str, in_root: bool) -> None:
    """/etc/evil -> the host folder: the mount lands at that path inside the root, or create
    fails; the host folder keeps its content and gets no mount. A volume of the same host folder
    mounted after it must still show the host file (not covered by the attacker's mount)."""
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "payload-file").write_text("payload\n")
    mount = ({"destination": "/etc/evil", "type": "bind", "source": str(payload), "options": ["rbind"]} if mtype == "bind"
             else {"destination": "/etc/evil", "type": "tmpfs", "source": "tmpfs"})
    volume = {"destination": "/vol", "type": "bind", "source": str(host_dir), "options": ["rbind"]}
    b = bundle(["/bin/sh", "-c", "ls /etc/evil/; echo --; ls /vol/"], mounts=mounts_with(mount, volume))
    root = b / "rootfs"
    replace_with_symlink(root / "etc" / "evil", _symlink_target(kind, host_dir))
    if in_root:
        (root / str(host_dir).lstrip("/")).mkdir(parents=True)
    before = tree(host_dir)

    result = runtime.run(b)

    assert tree(host_dir) == before
    assert host_mounts_under(tmp_path) == []
    if not in_root:
        assert result.returncode != 0 and "etc/evil" in result.stderr, result
        return
    assert result.returncode == 0, result.stderr
    shown_at_evil, shown_at_vol = result.stdout.split("--\n")
    assert shown_at_evil == ("payload-file\n" if mtype == "bind" else "")
    assert shown_at_vol == "host-file\n"


def test_mount_through_a_symlinked_parent_stays_in_the_root(runtime: Runtime, bundle: Bundle, tmp_path: Path, host_dir: Path) -> None:
    b = bundle(["/bin/ls", "-a", str(host_dir)],
               mounts=mounts_with({"destination": "/etc/evil/sub", "type": "tmpfs", "source": "tmpfs"}))
    replace_with_symlink(b / "rootfs" / "etc" / "evil", str(host_dir))
    (b / "rootfs" / str(host_dir).lstrip("/")).mkdir(parents=True)
    before = tree(host_dir)
    result = runtime.run(b, check=True)
    assert "sub" in result.stdout.split()  # made inside the root, at the link's target there
    assert tree(host_dir) == before and host_mounts_under(tmp_path) == []


def test_dangling_symlink_destination_creates_nothing_on_the_host(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    nowhere = Path(f"/jaula-test-nowhere-{uuid.uuid4().hex}")
    try:
        b = bundle(["/bin/true"], mounts=mounts_with({"destination": "/etc/dangling", "type": "tmpfs", "source": "tmpfs"}))
        replace_with_symlink(b / "rootfs" / "etc" / "dangling", str(nowhere / "dir"))
        result = runtime.run(b)
        assert not nowhere.exists(), f"the runtime followed the container's symlink onto the host: {nowhere} exists"
        if result.returncode == 0:  # the link's target made inside the root is acceptable too
            assert (b / "rootfs" / nowhere.relative_to("/") / "dir").is_dir()
        else:
            assert "etc/dangling" in result.stderr, result.stderr
        assert host_mounts_under(tmp_path) == []
    finally:
        shutil.rmtree(nowhere, ignore_errors=True)


# --- proc and sysfs destinations ----------------------------------------------------------------

PROC_CHECK = ["/bin/sh", "-c", "probe stat /proc/self/status; probe stat /proc/keys; probe open /proc/sys/kernel/core_pattern w"]


def test_proc_symlinked_elsewhere_in_the_root_gets_a_real_proc_there(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    b = bundle(PROC_CHECK)
    replace_with_symlink(b / "rootfs" / "proc", "/tmp/fakeproc")
    (b / "rootfs" / "tmp" / "fakeproc").mkdir()
    result = runtime.run(b)
    status, keys = json_lines(result)
    assert status["fstype"] == PROC_SUPER_MAGIC, result.stdout  # a real proc, where the link points inside
    assert (keys["type"], keys["rdev"]) == ("chr", "1:3"), keys  # masked through the link too
    assert lines(result)[-1] == "EROFS"  # and read-only paths applied
    assert host_mounts_under(tmp_path) == []


@pytest.mark.parametrize("target", ["/", ".", "/proc", "HOST"])
def test_proc_symlinked_onto_the_root_or_the_host_fails_create(runtime: Runtime, bundle: Bundle, tmp_path: Path, host_dir: Path, target: str) -> None:
    b = bundle(PROC_CHECK)
    replace_with_symlink(b / "rootfs" / "proc", str(host_dir) if target == "HOST" else target)
    before = tree(host_dir)
    result = runtime.run(b)
    assert result.returncode != 0 and result.stdout == "", result
    assert "proc" in result.stderr
    assert tree(host_dir) == before and host_mounts_under(tmp_path) == []


def test_proc_hidden_by_a_later_mount_fails_create(runtime: Runtime, bundle: Bundle) -> None:
    """/proc -> /tmp/fakeproc, then the config's tmpfs on /tmp covers the proc mounted there: the
    container would run without its proc (and without the masks meant for it). Refuse instead."""
    proc_masks = [p for p in default_config()["linux"]["maskedPaths"] if p.startswith("/proc/")]
    b = bundle(PROC_CHECK, mounts=mounts_with({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}),
               linux={"maskedPaths": proc_masks})
    replace_with_symlink(b / "rootfs" / "proc", "/tmp/fakeproc")
    (b / "rootfs" / "tmp" / "fakeproc").mkdir()
    result = runtime.run(b)
    if result.returncode == 0:
        assert json_lines(result)[:1] and json_lines(result)[0]["fstype"] == PROC_SUPER_MAGIC, \
            f"the container runs without a proc at /proc: {result.stdout!r}"
    else:
        assert "proc" in result.stderr and result.stdout == "", result


@pytest.mark.parametrize("target", ["/tmp/fakesys", "/proc/sys"])
def test_sysfs_symlinked_elsewhere_in_the_root_gets_a_real_sysfs_there(runtime: Runtime, bundle: Bundle, tmp_path: Path, target: str) -> None:
    b = bundle(["/bin/sh", "-c", "probe stat /sys/kernel; probe stat /proc/self/status"])
    replace_with_symlink(b / "rootfs" / "sys", target)
    (b / "rootfs" / "tmp" / "fakesys").mkdir()
    result = runtime.run(b, check=True)
    sysfs, proc = json_lines(result)
    assert sysfs["fstype"] == SYSFS_MAGIC and proc["fstype"] == PROC_SUPER_MAGIC, result.stdout
    assert host_mounts_under(tmp_path) == []


def test_masks_are_not_redirected_through_a_fake_proc(runtime: Runtime, bundle: Bundle) -> None:
    """After pivot_root the runtime mounts through /proc/self/fd/N. With no proc mount, /proc is
    the image's: links there named like our fds could send the /sys/firmware mask elsewhere."""
    b = bundle(["/bin/sh", "-c", "ls /sys/firmware; echo --; ls /decoy"], mounts=mounts_with(drop=("/proc",)),
               linux={"maskedPaths": ["/sys/firmware"], "readonlyPaths": []})
    fake = b / "rootfs" / "proc" / "self" / "fd"
    fake.mkdir(parents=True)
    (b / "rootfs" / "decoy").mkdir()
    (b / "rootfs" / "decoy" / "decoy-file").write_text("")
    for n in range(256):
        os.symlink("/decoy", fake / str(n))
    result = runtime.run(b)
    if result.returncode == 0:
        firmware, decoy = result.stdout.split("--\n")
        assert firmware == "" and decoy == "decoy-file\n", f"/sys/firmware was not masked: {result.stdout!r}"
    else:
        assert "proc" in result.stderr and result.stdout == "", result


# --- masked paths without a window (CVE-2025-31133) -----------------------------------------------

def _dev_bound_bundle(bundle: Bundle, args: list[str]) -> Path:
    """A bundle whose /dev is a bind of the image's own dev folder: the image chooses /dev/null."""
    b = bundle(args)
    config = json.loads((b / "config.json").read_text())
    config["mounts"] = [{"destination": "/dev", "type": "bind", "source": str(b / "rootfs" / "dev"), "options": ["rbind"]}
                        if m["destination"] == "/dev" else m for m in config["mounts"]]
    (b / "config.json").write_text(json.dumps(config))
    return b


MASK_CHECK = ["/bin/sh", "-c", "probe stat /proc/keys; probe stat /proc/timer_list; probe open /proc/keys w"]


@pytest.mark.parametrize("null", ["core_pattern-symlink", "regular-file", "zero-device", "directory"])
def test_masking_refuses_an_image_dev_null_that_is_not_the_null_device(runtime: Runtime, bundle: Bundle, null: str) -> None:
    core = Path(CORE_PATTERN).read_text()
    b = _dev_bound_bundle(bundle, MASK_CHECK)
    path = b / "rootfs" / "dev" / "null"
    if null == "core_pattern-symlink":
        os.symlink(CORE_PATTERN, path)
    elif null == "regular-file":
        path.write_text("")
    elif null == "zero-device":
        os.mknod(path, 0o20666, os.makedev(1, 5))
    else:
        path.mkdir()
    result = runtime.run(b)
    assert result.returncode != 0 and result.stdout == "", result
    assert "/dev/null" in result.stderr and "null device" in result.stderr, result.stderr
    assert Path(CORE_PATTERN).read_text() == core


def test_masking_with_the_images_real_null_device_works(runtime: Runtime, bundle: Bundle) -> None:
    b = _dev_bound_bundle(bundle, MASK_CHECK)
    os.mknod(b / "rootfs" / "dev" / "null", 0o20666, os.makedev(1, 3))
    result = runtime.run(b, check=True)
    keys, timer_list = json_lines(result)
    assert (keys["type"], keys["rdev"]) == (timer_list["type"], timer_list["rdev"]) == ("chr", "1:3")


def test_masking_races_a_swapped_dev_null_and_never_exposes_core_pattern(runtime: Runtime, bundle: Bundle) -> None:
    """Another container sharing the image's /dev swaps /dev/null between the real device and a
    link to core_pattern (renameat2 RENAME_EXCHANGE, atomic) as fast as it can while containers
    start. Each start either refuses or masks with the real null device: never core_pattern."""
    core = Path(CORE_PATTERN).read_text()
    b = _dev_bound_bundle(bundle, MASK_CHECK)
    dev = b / "rootfs" / "dev"
    os.mknod(dev / "null", 0o20666, os.makedev(1, 3))
    os.symlink(CORE_PATTERN, dev / "evil")
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        a, z = str(dev / "null").encode(), str(dev / "evil").encode()
        while not stop.is_set():
            for _ in range(200):
                libc.renameat2(-100, a, -100, z, 2)  # AT_FDCWD, RENAME_EXCHANGE
            swaps[0] += 200

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    outcomes = {"refused": 0, "masked": 0}
    try:
        for _ in range(16):
            result = runtime.run(b)
            if result.returncode != 0:
                assert result.stdout == "" and "not the null device" in result.stderr, result
                outcomes["refused"] += 1
                continue
            keys, timer_list = json_lines(result)
            assert (keys["type"], keys["rdev"]) == (timer_list["type"], timer_list["rdev"]) == ("chr", "1:3"), result.stdout
            outcomes["masked"] += 1
    finally:
        stop.set()
        t.join()
    assert swaps[0] > 1000, "the swapper did not run"
    assert Path(CORE_PATTERN).read_text() == core, outcomes


def test_core_pattern_is_not_writable_from_inside(runtime: Runtime, bundle: Bundle) -> None:
    core = Path(CORE_PATTERN).read_text()
    b = bundle(["/bin/sh", "-c", f"probe open {CORE_PATTERN} w; echo '|/tmp/x' > {CORE_PATTERN}; echo rc=$?"],
               process=caps_plus("CAP_SYS_ADMIN"))
    result = runtime.run(b)
    assert lines(result)[0] == "EROFS" and lines(result)[-1] != "rc=0", result
    assert Path(CORE_PATTERN).read_text() == core


# --- the runtime unreachable from inside (CVE-2019-5736) ------------------------------------------

SECRET = "python-host-secret"  # in the runtime's environment only: found in a leak, it came from the host


@pytest.fixture
def open_top() -> Iterator[Path]:
    """A folder under /tmp that every user may traverse (pytest's tmp_path is private to root):
    a container in a user namespace (host uid 100000) must reach its bundle there."""
    top = Path(tempfile.mkdtemp(prefix="jaula-security-"))
    top.chmod(0o711)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("attacker", ["default", "userns-all-caps"])
def test_exec_helper_is_unreachable_from_inside(runtime: Runtime, rootfs_dir: Path, open_top: Path, attacker: str) -> None:
    """While `exec` runs Python inside the container's namespaces (before its execve), a process of
    the container scans /proc and, for every other pid, opens /proc/PID/exe for reading and for
    writing and reads environ, maps and mem (`probe prowl`). The helper must refuse all of it.

    How the window is made reliable: the exec'd process's PATH holds 40000 missing folders before
    /usr/bin, so the helper's program lookup (Python, inside the container) takes about 0.1 s.

    Why this checks `dumpable`: /proc/PID/status has no dumpable field; the flag only shows in
    the kernel's ptrace access check (__ptrace_may_access), which is what the attacker runs into.
    In the "userns-all-caps" case the attacker has the same uid and every capability of the
    helper in the container's user namespace, so the only thing that can refuse it is the
    helper's mm being non-dumpable (with the mm's user namespace the host's). The control: the
    same attacker reads the environ of the exec'd program once it runs (dumpable), with success.
    """
    tmp_path = open_top
    out = tmp_path / "out"
    out.mkdir()
    overrides: dict[str, Any] = {}
    process_caps = default_config()["process"]["capabilities"]
    if attacker == "userns-all-caps":
        overrides = userns_overrides()
        process_caps = {k: all_caps() for k in ("bounding", "effective", "permitted")}
        os.chown(out, USERNS_HOST_ID, USERNS_HOST_ID)
    overrides["process"] = {"capabilities": process_caps}
    overrides["mounts"] = mounts_with({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})
    b = make_bundle(tmp_path / "bundle", ["/usr/bin/probe", "prowl", "/out", "python"], rootfs=rootfs_dir, **overrides)
    if attacker == "userns-all-caps":
        shift_ownership(b / "rootfs", USERNS_HOST_ID)
    interpreter = host_interpreter()
    digest = sha256(interpreter)
    rt = Runtime(path=runtime.path, root=runtime.root, env=dict(runtime.env or os.environ, JAULA_TEST_SECRET=SECRET))
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    wait_until("the prowler to start", lambda: (out / "ready").exists())
    slow_path = ":".join(["/x"] * 40000) + ":/usr/bin"
    process = {"args": ["probe", "sleep", "0.05"], "cwd": "/", "env": [f"PATH={slow_path}"],
               "user": {"uid": 0, "gid": 0}, "capabilities": process_caps, "noNewPrivileges": True}
    (tmp_path / "process.json").write_text(json.dumps(process))
    for _ in range(3):
        rt("exec", "--process", tmp_path / "process.json", cid, check=True)
    (out / "stop").touch()
    report = json.loads(wait_until("the prowler's report", lambda: (out / "prowl.json").exists() and (out / "prowl.json").read_text()))
    helpers = [e for e in report if e["name"] == rt.path.name[:15]]  # comm: the launcher's name
    programs = [e for e in report if e["name"] == "probe"]
    assert helpers, f"the prowler never saw an exec helper: {report}"
    denied = {"EACCES", "EPERM"}
    gone = {"ENOENT", "ESRCH"}
    for e in helpers:
        for kind in ("exe", "exe_w", "environ", "maps", "mem"):
            assert set(e[kind]) <= denied | gone and set(e[kind]) & denied, (kind, e)
    leaks = [e for e in report if any("LEAK" in e[k] for k in ("exe", "exe_w", "environ", "maps"))]
    assert not leaks, leaks
    assert any("ok" in e["environ"] for e in programs), f"control: the exec'd program's environ was never readable: {report}"
    assert sha256(interpreter) == digest


HIJACK = """\
import posix
fd = posix.open("/proc/self/exe", posix.O_PATH)
posix.dup2(fd, 9)
posix.execv("/bin/sh", ["sh", "-c", "echo HIJACKED; probe stat /proc/self/fd/9; probe open /proc/self/fd/9 w"])
"""


def _plant_interpreter_hijack(root: Path, interpreter: str) -> None:
    """What an image needs so that the host's interpreter, if a container execs /proc/self/exe
    while it is the runtime, runs the image's code: the loader and libraries it links against
    (as any Debian image has them), and an `encodings` package, the first module Python imports."""
    ldd = subprocess.run(["ldd", interpreter], capture_output=True, text=True, check=True).stdout
    for word in ldd.split():
        if word.startswith("/") and os.path.exists(word):
            dest = root / word.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(word, dest)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pkg = root / sys.base_prefix.lstrip("/") / "lib" / version / "encodings"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(HIJACK)
    (root / "bin" / "evil").write_text("#!/proc/self/exe\n")
    (root / "bin" / "evil").chmod(0o755)


@pytest.mark.parametrize("verb", ["run", "run-symlink", "exec", "control"])
def test_host_interpreter_is_unreachable_through_proc_self_exe(runtime: Runtime, bundle: Bundle, verb: str) -> None:
    """CVE-2019-5736 itself: the container's program is `#!/proc/self/exe`. The kernel resolves
    that interpreter when the runtime execs the program, so it is the runtime's own binary, the
    host's Python, now running the image's code inside the container. That code keeps an O_PATH
    fd of /proc/self/exe and execs a shell: the fd must not be the host's interpreter file
    (with it, once no Python runs on the host, an open for writing succeeds and replaces it).

    `run-symlink`: the program is a symlink to /proc/self/exe, the host's Python is exec'd directly.
    Nothing is written: the attacker only opens for writing (no O_TRUNC) and closes.
    `control` runs the same planted code through a copy of the interpreter inside the image, to
    prove the hijack machinery works, so that a quiet attack means a blocked one.
    """
    interpreter = host_interpreter()
    digest = sha256(interpreter)
    b = bundle(["/bin/evil"], root={"readonly": True})
    root = b / "rootfs"
    _plant_interpreter_hijack(root, interpreter)
    if verb == "run-symlink":
        replace_with_symlink(root / "bin" / "evil", "/proc/self/exe")
    if verb == "control":
        copy = root / interpreter.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(interpreter, copy)
        (root / "bin" / "evil").write_text(f"#!{interpreter}\n")
    if verb == "exec":
        cid = runtime.new_id()
        config = json.loads((b / "config.json").read_text())
        config["process"]["args"] = ["/usr/bin/probe", "sleep", "60"]
        (b / "config.json").write_text(json.dumps(config))
        runtime("run", "--detach", "--bundle", b, cid, check=True)
        result = runtime("exec", cid, "/bin/evil")
    else:
        result = runtime.run(b)
    out = lines(result)
    try:
        if verb == "control":
            assert out[:1] == ["HIJACKED"], result
            assert identity(json.loads(out[1])) == host_identity(str(root / interpreter.lstrip("/")))
            return
        if "HIJACKED" in out:
            held = json.loads(out[out.index("HIJACKED") + 1])
            assert identity(held) != host_identity(interpreter), (
                f"the container holds an fd of the host's interpreter {interpreter} (dev:ino {identity(held)}); "
                f"opening it for writing gave {out[-1]} (ETXTBSY only while some Python runs on the host)")
            assert out[-1] != "ok"
    finally:
        assert sha256(interpreter) == digest


# --- session keyring ----------------------------------------------------------------------------

def test_each_container_gets_its_own_session_keyring(runtime: Runtime, bundle: Bundle) -> None:
    host = session_keyring()
    b = bundle(["/usr/bin/probe", "info"])
    first = runtime.run_json(b)
    second = runtime.run_json(b)
    assert first["session_keyring_error"] is None and second["session_keyring_error"] is None
    assert len({host, first["session_keyring"], second["session_keyring"]}) == 3, (host, first["session_keyring"], second["session_keyring"])


def test_an_exec_does_not_get_the_hosts_session_keyring(runtime: Runtime, running) -> None:
    host = session_keyring()
    cid = running()
    info = json.loads(runtime("exec", cid, "/usr/bin/probe", "info", check=True).stdout)
    assert info["session_keyring_error"] is None
    assert info["session_keyring"] != host
