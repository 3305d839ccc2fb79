"""The API's socket: mode 0660 from its creation, a stale one replaced, a live one refused."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from jaula.daemon.server import bind_unix
from jaula.errors import JaulaError, Locked


@pytest.fixture
def sock_dir():  # type: ignore[no-untyped-def]
    d = tempfile.mkdtemp(prefix="jaula-sock-", dir="/tmp")
    yield Path(d)
    for f in Path(d).iterdir():
        f.unlink()
    os.rmdir(d)


def test_socket_mode_stale_and_live(sock_dir: Path) -> None:
    path = sock_dir / "api.sock"
    first = bind_unix(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660 and stat.S_ISSOCK(path.stat().st_mode)
    with pytest.raises(Locked, match="Another jaulad answers"):
        bind_unix(path)
    first.close()                                   # its server is gone: the file is stale
    second = bind_unix(path)
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(path))
    second.close()
    (sock_dir / "plain").write_text("x")
    with pytest.raises(JaulaError, match="is not a socket"):
        bind_unix(sock_dir / "plain")
