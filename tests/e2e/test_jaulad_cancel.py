"""Cancelling a running template build on a real jaulad (the `daemon` fixture of
test_jaulad.py): `jaula template import` of a tarball that arrives slowly (a FIFO fed by the
test), interrupted with SIGINT once its operation runs: the CLI cancels the operation, the build
stops at its next progress report and ends `cancelled`, and nothing of it is left (no template,
no half-unpacked folder); the name can be used again at once."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from jaula.client import Client
from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root


def _tar(first: int, rest: int) -> tuple[bytes, bytes]:
    """A root tree tarball cut in two: its first `first` files, then the others and the end."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in ("bin", "etc", "data"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        cut = 0
        for i in range(first + rest):
            body = os.urandom(64 * 1024)
            info = tarfile.TarInfo(f"data/f{i}")
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
            if i == first - 1:
                cut = buf.tell()
    whole = buf.getvalue()
    return whole[:cut], whole[cut:]


def test_sigint_cancels_a_running_import_and_leaves_nothing(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    d = daemon
    d.start()
    head, tail = _tar(first=40, rest=200)
    fifo = tmp_path / "slow.tar"
    os.mkfifo(fifo)
    go_on = threading.Event()

    def feed() -> None:  # the first part at once, the rest once the cancel was asked
        try:
            with open(fifo, "wb") as f:
                f.write(head)
                f.flush()
                go_on.wait(60)
                for i in range(0, len(tail), 64 * 1024):
                    f.write(tail[i:i + 64 * 1024])
                    f.flush()
                    time.sleep(0.01)
        except BrokenPipeError:  # the build stopped reading: cancelled
            pass
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    cli = subprocess.Popen([*JAULA, "--socket", str(d.socket), "template", "import", "slow", str(fifo)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with Client(str(d.socket), timeout=60) as c:
        deadline = time.monotonic() + 60
        while True:
            ops = [o for o in c.operations() if o["description"] == "Importing template slow"]
            if ops and ops[0]["status"] == "running" and ops[0]["metadata"].get("stage"):
                break
            assert time.monotonic() < deadline and cli.poll() is None, (ops, d.logs())
            time.sleep(0.05)
        assert ops[0]["may_cancel"] is True
        time.sleep(1.5)  # the CLI is polling it by now (every 0.2 s), not still reading the POST's answer
        cli.send_signal(signal.SIGINT)
        assert cli.stderr is not None
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.extend(cli.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        deadline = time.monotonic() + 30
        while not any("Cancelling" in line for line in said):
            assert time.monotonic() < deadline and cli.poll() is None, (said, d.logs())
            time.sleep(0.05)
        time.sleep(1)  # its DELETE follows that line: it lands before more data comes
        go_on.set()
        assert cli.wait(60) is not None
        reader.join(10)
        out, err = cli.stdout.read() if cli.stdout else "", "".join(said)
        assert cli.returncode == 1, (out, err)
        assert "Cancelling importing slow" in err and "Cancelled by request" in err, err
        op = c.operation(ops[0]["id"])
        assert op["status"] == "cancelled" and op["err"] == "Cancelled by request", op
        assert [t["name"] for t in c.templates()] == []
        left = [p.name for p in (d.root / "templates").iterdir()] if (d.root / "templates").is_dir() else []
        assert not [n for n in left if "slow" in n], left
        # the name is free again
        c.build_template("slow", "busybox", {})
        assert [t["name"] for t in c.templates()] == ["slow"]
        c.delete_template("slow")
    feeder.join(10)
