"""jaula.linux.fs.make_in_root: what it makes stays inside the root, whichever path it takes
(the target there, only its last component missing, or several missing)."""

from __future__ import annotations

import os
import stat

import pytest

from jaula.errors import SyscallError
from jaula.linux import fs


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "dev").mkdir(parents=True)
    fd = os.open(r, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield r, fd
    os.close(fd)


def _made(fd: int) -> os.stat_result:
    try:
        return os.stat(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_existing_target_is_opened(root) -> None:
    _, fd = root
    assert stat.S_ISDIR(_made(fs.make_in_root(fd, "/dev", directory=True)).st_mode)


def test_last_component_missing_file_and_dir(root) -> None:
    r, fd = root
    assert stat.S_ISREG(_made(fs.make_in_root(fd, "/dev/null", directory=False)).st_mode)
    assert (r / "dev" / "null").is_file()
    assert stat.S_ISDIR(_made(fs.make_in_root(fd, "cpu", directory=True, mode=0o700)).st_mode)
    assert (r / "cpu").is_dir() and (r / "cpu").stat().st_mode & 0o777 == 0o700 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_several_components_missing(root) -> None:
    r, fd = root
    assert stat.S_ISREG(_made(fs.make_in_root(fd, "/a/b/c", directory=False)).st_mode)
    assert (r / "a" / "b").is_dir() and (r / "a" / "b" / "c").is_file()


def test_absolute_symlink_parent_stays_inside(root, tmp_path) -> None:
    r, fd = root
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), r / "esc")  # an absolute link: resolved inside the root, where it leads nowhere
    with pytest.raises(SyscallError):
        fs.make_in_root(fd, "/esc/x", directory=False)
    assert not (outside / "x").exists()
    (r / str(outside).lstrip("/")).mkdir(parents=True)  # now it leads somewhere inside
    os.close(fs.make_in_root(fd, "/esc/x", directory=False))
    assert not (outside / "x").exists()
    assert (r / str(outside).lstrip("/") / "x").is_file()


def test_dangling_symlink_last_is_not_followed_out(root, tmp_path) -> None:
    r, fd = root
    outside = tmp_path / "victim"
    os.symlink(str(outside), r / "dev" / "tty")
    with pytest.raises(SyscallError):
        fs.make_in_root(fd, "/dev/tty", directory=False)
    with pytest.raises(SyscallError):
        fs.make_in_root(fd, "/dev/tty", directory=True)
    assert not outside.exists()


def test_parent_not_a_directory(root) -> None:
    r, fd = root
    (r / "file").write_text("")
    with pytest.raises(SyscallError):
        fs.make_in_root(fd, "/file/x", directory=False)
    with pytest.raises(SyscallError):
        fs.make_in_root(fd, "/file/x/y", directory=True)
