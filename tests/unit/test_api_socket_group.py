"""The API socket's group (root or the `jaula` group, as the architecture says): when the group
exists the socket is made its (mode 0660), and a process of another uid is let in by being in
that group and refused without it; when the group does not exist the socket stays root's. The
group is given by name to bind_unix (the daemon passes "jaula"); here the host's `daemon` group
stands for it, so no group is added to the host."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from jaula.daemon.server import SOCKET_GROUP, bind_unix

pytestmark = pytest.mark.root

NOBODY = 65534
PROBE = ("import socket,sys\n"
         "s=socket.socket(socket.AF_UNIX)\n"
         "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n")


@pytest.fixture
def sock_dir():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (chown of the socket, and a probe as another uid)")
    d = Path(tempfile.mkdtemp(prefix="jaula-sockgrp-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    for f in d.iterdir():
        f.unlink()
    os.rmdir(d)


def _connect_as_nobody(path: Path, groups: list[int]) -> int:
    def become() -> None:
        os.setgroups(groups)
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return subprocess.run([sys.executable, "-c", PROBE, str(path)], preexec_fn=become, timeout=60,
                          check=False).returncode


def test_the_socket_is_the_groups_and_lets_its_members_in(sock_dir: Path) -> None:
    assert SOCKET_GROUP == "jaula"
    gid = grp.getgrnam("daemon").gr_gid
    path = sock_dir / "api.sock"
    s = bind_unix(path, group="daemon")
    try:
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o660)
        assert _connect_as_nobody(path, [gid]) == 0      # a member of the group: let in
        assert _connect_as_nobody(path, []) == 13        # anyone else: refused by the mode
    finally:
        s.close()


def test_without_the_group_the_socket_stays_roots(sock_dir: Path) -> None:
    path = sock_dir / "api.sock"
    s = bind_unix(path, group="jaula-no-such-group")
    try:
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o660)
        assert _connect_as_nobody(path, [grp.getgrnam("daemon").gr_gid]) == 13
    finally:
        s.close()
