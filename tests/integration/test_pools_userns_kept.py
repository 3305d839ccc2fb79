"""The user namespaces that idmapped roots are made with are kept per id range (storage/idmap.py):
a second mount of the same range forks no helper, a kept namespace maps what it should, and the
number kept is bounded (each is an fd)."""

# ruff: noqa: F811 - `area` is a fixture imported from pool_checks
from __future__ import annotations

import os

import pytest
from pool_checks import area, in_userns, make_template  # noqa: F401

from jaula.linux import ns as nsys
from jaula.storage import idmap as idm
from jaula.storage.idmap import IdMap
from jaula.storage.pool import open_pool

pytestmark = pytest.mark.root
N = 210000


@pytest.fixture
def kept():
    idm.forget_usernses()
    yield idm._userns
    idm.forget_usernses()


def _maps(fd: int) -> tuple[str, str]:
    """uid_map and gid_map of the user namespace `fd`, read from a child that joins it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            nsys.setns(fd, nsys.CLONE_NEWUSER)
            with open("/proc/self/uid_map") as u, open("/proc/self/gid_map") as g:
                text = u.read() + "|" + g.read()
            os.write(w, text.encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    uid, gid = out.decode().split("|")
    return " ".join(uid.split()), " ".join(gid.split())


def test_one_namespace_per_range_with_its_maps(kept, monkeypatch):
    made = []
    real = idm.userns_fd
    monkeypatch.setattr(idm, "userns_fd", lambda m: made.append(m) or real(m))
    a, b = IdMap(N, N + 7, 65536), IdMap(N + 65536, N + 65536, 65536)
    fa = idm.shared_userns_fd(a)
    assert idm.shared_userns_fd(a) == fa and made == [a]  # kept: no second helper
    fb = idm.shared_userns_fd(b)
    assert fb != fa and made == [a, b]
    assert _maps(fa) == (f"0 {N} 65536", f"0 {N + 7} 65536")
    assert _maps(fb) == (f"0 {N + 65536} 65536", f"0 {N + 65536} 65536")


def _open_usernses() -> set[str]:
    """The user namespaces this process holds an fd of (user:[inode])."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("user:["):
            found.add(target)
    return found


def test_kept_namespaces_are_bounded_and_closed(kept, monkeypatch):
    monkeypatch.setattr(idm, "USERNS_KEPT", 3)
    before = _open_usernses()
    names = []
    for i in range(5):
        fd = idm.shared_userns_fd(IdMap(N + i * 65536, N + i * 65536, 65536))
        names.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert len(kept) == 3
    assert _open_usernses() - before == set(names[2:])  # the least recently used went, closed
    idm.forget_usernses()
    assert not kept and _open_usernses() == before


def test_a_root_mounted_twice_through_a_kept_namespace_maps_the_same(kept, area):
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    pool = open_pool("dir", str(area / "pool"))
    pool.create_volume("u", template)
    for _ in range(2):
        pool.mount("u", str(target), idmap=IdMap(N, N, 65536))
        try:
            assert os.stat(f"{target}/etc/hostname").st_uid == N
            assert in_userns(N, N, str(target), lambda: os.stat("etc/hostname").st_uid) == 0
        finally:
            pool.unmount("u")
    assert len(kept) == 1


def test_a_mount_record_cut_short_reads_as_not_mounted(area):
    template = make_template(str(area / "template"))
    pool = open_pool("dir", str(area / "pool"))
    pool.create_volume("u", template)
    with open(os.path.join(pool.vdir("u"), "mount.json"), "w") as f:
        f.write('{"tar')  # what a host crash may leave of a record written without fsync
    assert pool.mounted_at("u") is None
    pool.unmount("u")
    assert not os.path.exists(os.path.join(pool.vdir("u"), "mount.json"))
