"""Throwaway network namespaces held by a forked child (no `ip netns` name, no bind mount):
the "instances" of the network tests and benchmarks. Commands run inside through nsenter."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from jaula.linux.ns import CLONE_NEWNET, CLONE_NEWUSER, unshare

BUSYBOX = "/bin/busybox"


class Ns:
    """A process in its own network namespace (owned by a new user namespace if `user`,
    mapping 0-65535 to host ids 100000-165535), waiting until `close`."""

    def __init__(self, user: bool = False):
        r, w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(w)
                os.close(ready_r)
                unshare(CLONE_NEWNET | (CLONE_NEWUSER if user else 0))
                os.write(ready_w, b"1")
                os.read(r, 1)
            finally:
                os._exit(0)
        os.close(r)
        os.close(ready_w)
        self.pid, self._hold = pid, w
        ok = os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        if not ok:
            self.close()
            raise RuntimeError("the namespace child could not unshare")
        if user:
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{pid}/{name}").write_text("0 100000 65536\n")

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "--", *args]

    def run(self, *args: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, check=check)

    def ping(self, address: str) -> bool:
        return self.run(BUSYBOX, "ping", "-c", "1", "-W", "2", address, check=False).returncode == 0

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), **kw)

    def close(self) -> None:
        if self._hold >= 0:
            os.close(self._hold)
            self._hold = -1
            os.kill(self.pid, signal.SIGKILL)  # a later child may hold our pipe's end too
            os.waitpid(self.pid, 0)
