"""The container driver's check that the console keeper answers (an app start's sysinfo agent):
one idle connection kept and polled for its hang-up, a new one after the keeper died."""

from __future__ import annotations

import os
import socket
import tempfile

from jaula.instances.container import ContainerDriver


def _listener(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.bind(path)
    s.listen(8)
    return s


def test_the_keeper_probe_is_one_kept_connection_renewed_after_a_hang_up() -> None:
    top = tempfile.mkdtemp(prefix="jaula-kp-", dir="/tmp")  # short: sun_path is 108 bytes
    path = os.path.join(top, "keeper.sock")
    drv = ContainerDriver(top, pool=None, templates=None, console_keeper=path)
    assert drv._keeper_alive() is False  # nothing listens
    first = _listener(path)
    try:
        assert drv._keeper_alive() is True
        peer, _ = first.accept()
        kept = drv._keeper_probe
        assert kept is not None and drv._keeper_alive() is True and drv._keeper_probe is kept  # no new connect
        first.setblocking(False)
        try:
            first.accept()
            raise AssertionError("a second connection was made while the first was alive")
        except BlockingIOError:
            pass
        # the keeper dies (its end closed, its socket gone) and another starts on the same path
        peer.close()
        first.close()
        os.unlink(path)
        assert drv._keeper_alive() is False and drv._keeper_probe is None
        second = _listener(path)
        try:
            assert drv._keeper_alive() is True
            again, _ = second.accept()
            again.close()
            assert drv._keeper_probe is not kept
            assert os.get_inheritable(drv._keeper_probe.fileno()) is False  # never into an init
        finally:
            second.close()
    finally:
        if drv._keeper_probe is not None:
            drv._keeper_probe.close()
        for f in os.listdir(top):
            os.unlink(os.path.join(top, f))
        os.rmdir(top)
