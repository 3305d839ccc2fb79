"""Drive podman (from Debian) with jaula-runtime as its OCI runtime, in a store of its own.

Nothing of the host's podman is touched: images and containers live in `--root`/`--runroot`/
`--tmpdir` under a temporary folder. The runtime keeps its state in its default folder, as it does
for any podman. The fixture that builds one is in tests/conformance/conftest.py.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jaula.oci.state import DEFAULT_ROOT
from tests.support.fdwait import readable
from tests.support.runtime import LAUNCHER

IMAGE = "localhost/jaula-busybox:test"
# The pty podman gets for `-t`: its size must reach the container's terminal.
PTY_ROWS, PTY_COLS = 33, 111


@dataclass
class Podman:
    """`podman` with the global flags of an isolated store and jaula-runtime as its runtime."""

    base: Path
    storage_driver: str
    cgroup_parent: str
    # flags every `podman run`/`create` of the tests takes (network, cgroup parent, ulimits)
    run_flags: list[str] = field(default_factory=list)
    timeout: float = 60.0

    @property
    def runtime_root(self) -> Path:
        """The runtime's default --root. Not one of our own: `--runtime-flag root=...` would be lost
        on the `podman container cleanup` that conmon runs when a container exits (podman 4.3
        does not pass runtime flags on), so its `delete` would look in the default folder."""
        return Path(DEFAULT_ROOT)

    @property
    def runtime_log(self) -> Path:
        return self.base / "runtime.log"

    def argv(self, *args: str) -> list[str]:
        b = self.base
        return [
            "podman", "--root", str(b / "storage"), "--runroot", str(b / "runroot"), "--tmpdir", str(b / "tmp"),
            "--storage-driver", self.storage_driver, "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", str(LAUNCHER),
            # jaula-runtime's own log, JSON lines: podman passes these to every call but the exit
            # command's (see runtime_root)
            "--runtime-flag", f"log={self.runtime_log}", "--runtime-flag", "log-format=json",
            *args,
        ]

    def __call__(self, *args: str, check: bool = False, timeout: float | None = None,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run podman; output goes through files (conmon may hold a pipe open after `run -d`)."""
        argv = self.argv(*args)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL if input is None else None,
                                  input=None if input is None else input.encode(), stdout=out, stderr=err,
                                  timeout=self.timeout if timeout is None else timeout)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(argv, proc.returncode, out.read().decode(errors="replace"),
                                                 err.read().decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}\n{self.log_tail()}")
        return result

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        """`podman run` with the session's run flags; args are the rest (options, image, command)."""
        return self("run", *self.run_flags, *args, **kwargs)

    def with_tty(self, *args: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run podman on a fresh pty of PTY_ROWS x PTY_COLS (for `-t`): its exit status and output."""
        import fcntl
        import pty
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", PTY_ROWS, PTY_COLS, 0, 0))
        try:
            proc = subprocess.Popen(self.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                                    start_new_session=True)
        finally:
            os.close(slave)
        out = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if readable(master, 0.2):
                    try:
                        data = os.read(master, 4096)
                    except OSError:  # EIO: every slave fd closed
                        break
                    if not data:
                        break
                    out += data
                elif proc.poll() is not None:
                    break
            else:
                proc.kill()
            rc = proc.wait(timeout=10)
        finally:
            os.close(master)
        return rc, out.decode(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        """The end of jaula-runtime's --log (JSON lines), for failure messages."""
        try:
            text = self.runtime_log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no runtime log)"
        return "runtime log:\n" + "\n".join(text)

    def runtime(self, *args: str) -> subprocess.CompletedProcess[str]:
        """jaula-runtime itself, on podman's containers."""
        return subprocess.run([str(LAUNCHER), *args],
                              check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
