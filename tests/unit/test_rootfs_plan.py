"""Mount planning against the recording fake: the exact calls rootfs setup makes, no root needed.

The fake (`jaula.linux.fake.Recording`) shows a target reached through an fd resolved inside the
root as "fd:<container path>", so these tests also prove that nothing is mounted on a plain path
that a symlink of the image could redirect: every target of a mount in the rootfs is an fd path.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pytest

from jaula.errors import SyscallError
from jaula.linux import fs
from jaula.linux import mount as m
from jaula.linux.fake import Recording
from jaula.oci import config, rootfs

ROOTFS = "/bundle/rootfs"
NULL = os.makedev(1, 3)
CHR = stat.S_IFCHR | 0o666
RO_BIND = m.MS_REMOUNT | m.MS_BIND | m.MS_RDONLY
RO_PATH = RO_BIND | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC
MASK_DIR = m.MS_RDONLY | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC
SLAVE_REC = m.MS_SLAVE | m.MS_REC


def spec_of(mounts: list[dict[str, Any]], **linux: Any) -> config.Spec:
    doc = {
        "ociVersion": "1.0.2",
        "root": {"path": ROOTFS, "readonly": True},
        "process": {"args": ["/bin/sh"], "cwd": "/"},
        "mounts": mounts,
        "linux": {"namespaces": [{"type": "mount"}], **linux},
    }
    return config.parse(doc, "/bundle")


SMALL = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
    {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
]


def fake(**kwargs: Any) -> Recording:
    kwargs.setdefault("fstype", {"/proc": fs.PROC_SUPER_MAGIC, "/sys": fs.SYSFS_MAGIC, "/proc/self/fd": fs.PROC_SUPER_MAGIC})
    return Recording(**kwargs)


def split_propagation(calls: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """The calls before the bind of the rootfs onto itself (propagation of "/"), and the rest."""
    bind = ("mount", ROOTFS, ROOTFS, None, m.MS_BIND | m.MS_REC, None)
    assert bind in calls, calls
    i = calls.index(bind)
    return calls[:i], calls[i:]


def device_calls(path: str, minor_major: tuple[int, int]) -> list[tuple]:
    major, minor = minor_major
    return [
        ("make", "/dev", "dir"),
        ("mknod", f"fd:{path}", CHR, os.makedev(major, minor)),
        ("chmod", f"fd:{path}", 0o666),
        ("chown", f"fd:{path}", 0, 0),
    ]


DEFAULT_DEVICE_CALLS = [
    call
    for path, num in [("/dev/null", (1, 3)), ("/dev/zero", (1, 5)), ("/dev/full", (1, 7)),
                      ("/dev/random", (1, 8)), ("/dev/urandom", (1, 9)), ("/dev/tty", (5, 0))]
    for call in device_calls(path, num)
]
DEV_LINK_CALLS = [
    ("symlink", "/proc/self/fd", "fd:/dev/fd"),
    ("symlink", "/proc/self/fd/0", "fd:/dev/stdin"),
    ("symlink", "/proc/self/fd/1", "fd:/dev/stdout"),
    ("symlink", "/proc/self/fd/2", "fd:/dev/stderr"),
    ("symlink", "pts/ptmx", "fd:/dev/ptmx"),
]
PIVOT_CALLS = [
    ("chdir", ROOTFS),
    ("pivot_root", ".", "."),
    ("mount", None, ".", None, SLAVE_REC, None),
    ("umount2", ".", m.MNT_DETACH),
    ("chdir", "/"),
]


def test_prepare_pivot_finalize_make_exactly_these_calls() -> None:
    spec = spec_of(SMALL, maskedPaths=["/proc/kcore", "/sys/firmware", "/proc/missing"],
                   readonlyPaths=["/proc/sys", "/proc/absent"])
    sys_ = fake(dirs={"/proc/sys", "/sys/firmware"}, files={"/proc/kcore"})
    ctx = rootfs.Context(rootfs=ROOTFS)

    rootfs.prepare(spec, ctx, sys_)
    propagation, rest = split_propagation(sys_.calls)
    # Nothing may propagate to the host: "/" is made a recursive slave before anything is mounted.
    assert propagation and set(propagation) == {("mount", None, "/", None, SLAVE_REC, None)}
    assert rest == [
        ("mount", ROOTFS, ROOTFS, None, m.MS_BIND | m.MS_REC, None),
        ("make", "/proc", "dir"),
        ("mount", "proc", "fd:/proc", "proc", 0, None),
        ("make", "/dev", "dir"),
        ("mount", "tmpfs", "fd:/dev", "tmpfs", m.MS_NOSUID, "mode=755"),
        ("make", "/data", "dir"),
        ("mount", "/srv/data", "fd:/data", None, m.MS_BIND | m.MS_REC, None),
        ("mount", None, "fd:/data", None, RO_BIND, None),
        *DEFAULT_DEVICE_CALLS,
        *DEV_LINK_CALLS,
    ]

    sys_.calls.clear()
    rootfs.pivot(sys_, ROOTFS)
    assert sys_.calls == PIVOT_CALLS

    sys_.calls.clear()
    rootfs.finalize(spec, ctx, sys_)
    assert sys_.calls == [
        # read-only path: a bind of itself, remounted read-only (a missing one is skipped)
        ("mount", "fd:/proc/sys", "fd:/proc/sys", None, m.MS_BIND | m.MS_REC, None),
        ("mount", None, "fd:/proc/sys", None, RO_PATH, None),
        # masked file: the checked /dev/null bound over it, through fds on both sides
        ("mount", "fd:/dev/null", "fd:/proc/kcore", None, m.MS_BIND, None),
        # masked directory: an empty read-only tmpfs
        ("mount", "tmpfs", "fd:/sys/firmware", "tmpfs", MASK_DIR, "size=0,mode=555"),
        # root.readonly last, once nothing more is mounted below it
        ("mount", None, "/", None, RO_BIND, None),
    ]


@pytest.mark.parametrize("option, flag", [("rshared", m.MS_SHARED | m.MS_REC), ("private", m.MS_PRIVATE),
                                          ("rslave", m.MS_SLAVE | m.MS_REC)])
def test_rootfs_propagation_never_shares_the_hosts_mounts(option: str, flag: int) -> None:
    """Before pivot_root "/" is the host's tree: slave first, never shared; the configured
    propagation lands on the new root once it is "/"."""
    spec = spec_of([], rootfsPropagation=option)
    sys_ = fake()
    rootfs.prepare(spec, rootfs.Context(rootfs=ROOTFS), sys_)
    propagation, _ = split_propagation(sys_.calls)
    assert propagation[0] == ("mount", None, "/", None, SLAVE_REC, None)
    assert all(c[2] == "/" and not c[4] & m.MS_SHARED for c in propagation), propagation
    sys_.calls.clear()
    rootfs.finalize(spec, rootfs.Context(rootfs=ROOTFS), sys_)
    assert sys_.calls[0] == ("mount", None, "/", None, flag, None)


def test_every_mount_target_in_the_rootfs_is_an_fd_resolved_in_root() -> None:
    mounts = SMALL + [
        {"destination": "/etc/hosts", "type": "bind", "source": "/srv/hosts", "options": ["bind"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nosuid"]},
        {"destination": "/run/x", "type": "tmpfs", "source": "tmpfs", "options": ["rshared"]},
    ]
    sys_ = fake(files={"/srv/hosts"})
    rootfs.prepare(spec_of(mounts), rootfs.Context(rootfs=ROOTFS), sys_)
    _, rest = split_propagation(sys_.calls)
    where = {"mount": 2, "symlink": 2, "mknod": 1, "chmod": 1, "chown": 1}
    targets = [c[where[c[0]]] for c in rest if c[0] in where]
    assert targets[0] == ROOTFS  # the bind of the rootfs onto itself, before any fd into it exists
    assert len(targets) > 20 and all(t.startswith("fd:/") for t in targets[1:]), targets
    # a file source gets a file made for it, not a directory
    assert ("make", "/etc/hosts", "file") in rest
    assert ("mount", "/srv/hosts", "fd:/etc/hosts", None, m.MS_BIND, None) in rest
    # propagation of a mount is set on a fresh fd of the new mount, after mounting
    i = rest.index(("mount", "tmpfs", "fd:/run/x", "tmpfs", 0, None))
    assert rest[i + 1] == ("mount", None, "fd:/run/x", None, m.MS_SHARED | m.MS_REC, None)


def test_bind_of_dev_keeps_the_images_nodes_and_makes_only_configured_devices() -> None:
    mounts = [{"destination": "/dev", "type": "bind", "source": "/srv/dev", "options": ["rbind"]}]
    devices = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600}]
    sys_ = fake()
    rootfs.prepare(spec_of(mounts, devices=devices), rootfs.Context(rootfs=ROOTFS), sys_)
    _, rest = split_propagation(sys_.calls)
    assert [c for c in rest if c[0] == "mknod"] == [("mknod", "fd:/dev/fuse", stat.S_IFCHR | 0o600, os.makedev(10, 229))]
    assert not [c for c in rest if c[0] == "symlink"]


def test_in_a_user_namespace_devices_are_bind_mounts_of_the_hosts_nodes() -> None:
    sys_ = fake()
    rootfs.prepare(spec_of([]), rootfs.Context(rootfs=ROOTFS, userns=True), sys_)
    assert not [c for c in sys_.calls if c[0] == "mknod"]
    binds = [c for c in sys_.calls if c[0] == "mount" and c[2].startswith("fd:/dev/")]
    assert binds == [("mount", p, f"fd:{p}", None, m.MS_BIND, None)
                     for p in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")]


@pytest.mark.parametrize("image_null", [
    pytest.param((stat.S_IFREG | 0o644, 0), id="regular-file"),
    pytest.param((stat.S_IFCHR | 0o666, os.makedev(1, 5)), id="zero-device"),
    pytest.param((stat.S_IFBLK | 0o666, NULL), id="block-1:3"),
])
def test_masking_refuses_a_dev_null_that_is_not_the_null_device(image_null: tuple[int, int]) -> None:
    """CVE-2025-31133: with /dev bound from the image, its /dev/null may be anything."""
    spec = spec_of([], maskedPaths=["/proc/kcore"])
    sys_ = fake(files={"/proc/kcore"}, nodes={"/dev/null": image_null})
    with pytest.raises(SyscallError) as err:
        rootfs.finalize(spec, rootfs.Context(rootfs=ROOTFS), sys_)
    assert "/dev/null" in str(err.value) and err.value.errno == errno.EINVAL
    assert not [c for c in sys_.calls if c[0] == "mount"]


def test_masking_uses_an_image_dev_null_that_is_the_null_device() -> None:
    spec = spec_of([], maskedPaths=["/proc/kcore"])
    sys_ = fake(files={"/proc/kcore"}, nodes={"/dev/null": (CHR, NULL)})
    rootfs.finalize(spec, rootfs.Context(rootfs=ROOTFS), sys_)
    assert ("mount", "fd:/dev/null", "fd:/proc/kcore", None, m.MS_BIND, None) in sys_.calls


def test_no_masked_paths_needs_no_dev_null() -> None:
    sys_ = fake(dirs={"/proc/sys"})
    rootfs.finalize(spec_of([], readonlyPaths=["/proc/sys"]), rootfs.Context(rootfs=ROOTFS), sys_)
    assert [c[2] for c in sys_.calls] == ["fd:/proc/sys", "fd:/proc/sys", "/"]


@pytest.mark.parametrize("kind, magic", [("proc", fs.SYSFS_MAGIC), ("sysfs", fs.PROC_SUPER_MAGIC), ("proc", 0)])
def test_proc_and_sysfs_must_really_be_there_after_mounting(kind: str, magic: int) -> None:
    dest = "/proc" if kind == "proc" else "/sys"
    sys_ = fake(fstype={dest: magic})
    with pytest.raises(SyscallError) as err:
        rootfs.prepare(spec_of([{"destination": dest, "type": kind, "source": kind}]), rootfs.Context(rootfs=ROOTFS), sys_)
    assert dest in str(err.value) and err.value.errno == errno.EXDEV


def test_pivot_detaches_the_old_root_without_a_put_old_directory() -> None:
    sys_ = fake()
    rootfs.pivot(sys_, "/some/root")
    assert sys_.calls == [("chdir", "/some/root")] + PIVOT_CALLS[1:]


def test_finalize_refuses_a_proc_covered_by_a_later_mount() -> None:
    """An image link sent proc under a later mount: after pivot_root /proc is not proc any more."""
    spec = spec_of([{"destination": "/proc", "type": "proc", "source": "proc"}])
    sys_ = fake(fstype={"/proc": fs.TMPFS_MAGIC, "/proc/self/fd": fs.PROC_SUPER_MAGIC}, dirs={"/proc"})
    with pytest.raises(SyscallError) as err:
        rootfs.finalize(spec, rootfs.Context(rootfs=ROOTFS), sys_)
    assert "/proc" in str(err.value) and err.value.errno == errno.EXDEV
    sys_ = fake()  # not there at all
    with pytest.raises(SyscallError) as err:
        rootfs.finalize(spec, rootfs.Context(rootfs=ROOTFS), sys_)
    assert "gone from the container" in str(err.value)


def test_finalize_mounts_through_fd_paths_only_on_a_real_proc() -> None:
    """Masks are mounted through /proc/self/fd/N: on an image's own /proc they could go anywhere."""
    spec = spec_of([], maskedPaths=["/sys/firmware"])
    sys_ = fake(dirs={"/sys/firmware"}, fstype={"/proc/self/fd": 0xEF53})  # ext4: the image's folder
    with pytest.raises(SyscallError) as err:
        rootfs.finalize(spec, rootfs.Context(rootfs=ROOTFS), sys_)
    assert "/proc/self/fd" in str(err.value)
    assert not [c for c in sys_.calls if c[0] == "mount"]
