"""sd_notify without a library (daemon/notify.py): the datagram reaches a socket named by a path or
an abstract "@name"; without a socket nothing is sent; the variable is not left for children."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from jaula.daemon import notify


def test_ready_reaches_a_path_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(5)
        assert notify.notify(str(tmp_path / "notify"), "READY=1")
        assert sock.recv(64) == b"READY=1"


def test_ready_reaches_an_abstract_socket() -> None:
    name = f"jaula-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify.notify("@" + name, "STOPPING=1")
        assert sock.recv(64) == b"STOPPING=1"


def test_no_socket_or_a_gone_one_sends_nothing(tmp_path: Path) -> None:
    assert notify.notify(None, "READY=1") is False
    assert notify.notify(str(tmp_path / "gone"), "READY=1") is False


def test_the_variable_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert notify.take_socket() == "/run/systemd/notify" and "NOTIFY_SOCKET" not in os.environ
    assert notify.take_socket() is None
