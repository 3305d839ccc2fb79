"""The runtime's first process born in its cgroup2 folder (jaula.linux._sys clone3 with
CLONE_INTO_CGROUP, used by jaula.oci create): where it lands, what a failure says, and the
fallback to a write of cgroup.procs without the C module's clone3."""

from __future__ import annotations

import os
import uuid

import pytest

from jaula.errors import SyscallError
from jaula.linux import libc
from jaula.oci import create

pytestmark = pytest.mark.root


def _cgroup2_root() -> str:
    mounts = create.cgroup_mounts()
    for mp, kind in mounts.items():
        if kind == "cgroup2":
            return mp
    pytest.skip("no cgroup2 hierarchy mounted")


@pytest.fixture
def folder():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3): run scripts/build-runtime-fast")
    path = os.path.join(_cgroup2_root(), f"jaula-test-clone3-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    yield path
    os.rmdir(path)


def _cgroup2_line() -> str:
    """This process's line of /proc/self/cgroup for the cgroup2 hierarchy ("0::/path")."""
    with open("/proc/self/cgroup") as f:
        return next(ln for ln in f if ln.startswith("0::"))


def _child_cgroup2(cgroup_fd: int) -> str:
    r, w = os.pipe()
    pid = libc.clone3(0, cgroup_fd)
    if pid == 0:
        try:
            os.close(r)
            os.write(w, _cgroup2_line().strip()[3:].encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 4096).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return got


def test_the_child_is_born_in_the_folder_and_the_parent_stays(folder):
    before = _cgroup2_line()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        rel = "/" + os.path.relpath(folder, _cgroup2_root())
        assert _child_cgroup2(fd) == rel
    finally:
        os.close(fd)
    assert _cgroup2_line() == before
    with open(os.path.join(folder, "cgroup.procs")) as f:
        assert f.read() == ""  # the child is gone, nothing else got in


def test_a_bad_cgroup_fd_is_an_error_naming_clone3(tmp_path):
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3)")
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # not a cgroup2 folder
    try:
        with pytest.raises(SyscallError, match="clone3"):
            libc.clone3(0, fd)
    finally:
        os.close(fd)


def test_born_in_takes_the_cgroup2_file_out_or_leaves_it_without_clone3(folder, monkeypatch):
    v1 = "/sys/fs/cgroup/pids/x/tasks"
    files = [v1, os.path.join(folder, "cgroup.procs")]
    fd = create.born_in(files)
    try:
        assert fd >= 0 and files == [v1]
        assert os.path.samestat(os.fstat(fd), os.stat(folder))
    finally:
        os.close(fd)
    monkeypatch.setattr(libc, "can_clone3", lambda: False)
    files = [v1, os.path.join(folder, "cgroup.procs")]
    assert create.born_in(files) == -1 and len(files) == 2  # joined by a write, as before
