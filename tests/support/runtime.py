"""Drive an OCI runtime with runc's command line (jaula-runtime, runc, crun) from tests.

Output goes through temporary files, not pipes: after `create` or `run --detach` the container
keeps the runtime's stdout and stderr open, and a reader waiting for end-of-file on a pipe would
hang until the container exits.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / ".venv" / "bin" / "jaula-runtime"

_ids = itertools.count(1)


@dataclass
class Runtime:
    """One runtime binary with its own state folder (--root), so tests never share state."""

    path: Path
    root: Path
    global_args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    timeout: float = 60.0

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [str(self.path), "--root", str(self.root), *self.global_args, *map(str, args)]

    def __call__(self, *args: str | os.PathLike[str], check: bool = False, timeout: float | None = None,
                 input: str | None = None, cwd: os.PathLike[str] | str | None = None,
                 pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
        """Run the runtime with args; return its CompletedProcess (text stdout and stderr)."""
        argv = self.argv(*args)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL if input is None else None,
                input=None if input is None else input.encode(), stdout=out, stderr=err,
                timeout=self.timeout if timeout is None else timeout, env=self.env, cwd=cwd,
                pass_fds=pass_fds,
            )
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(argv, proc.returncode,
                                                 out.read().decode(errors="replace"),
                                                 err.read().decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    @staticmethod
    def new_id(prefix: str = "t") -> str:
        """A container id unique in this test process."""
        return f"{prefix}{os.getpid()}-{next(_ids)}"

    def run(self, bundle: os.PathLike[str] | str, *args: str, container_id: str | None = None,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """`run --bundle BUNDLE [args] ID` in the foreground: the container's output is returned."""
        cid = container_id or self.new_id()
        return self("run", "--bundle", bundle, *args, cid, **kwargs)

    def run_json(self, bundle: os.PathLike[str] | str, **kwargs: Any) -> Any:
        """Run the bundle (whose process prints JSON, like `probe info`) and parse its output."""
        result = self.run(bundle, check=True, **kwargs)
        return json.loads(result.stdout)

    def state(self, container_id: str) -> dict[str, Any]:
        return json.loads(self("state", container_id, check=True).stdout)

    def container_ids(self) -> list[str]:
        """Ids that still have state under --root (runc's layout: one folder per container)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def cleanup(self) -> None:
        """Force-delete every container left under --root, kill what survives, remove --root."""
        for cid in self.container_ids():
            pid = _state_pid(self.root / cid)
            try:
                self("delete", "--force", cid, timeout=20)
            except subprocess.TimeoutExpired:
                pass
            if pid and (self.root / cid).exists():
                _kill_container_init(pid)
                try:
                    self("delete", "--force", cid, timeout=20)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


def _state_pid(state_dir: Path) -> int | None:
    try:
        state = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid") or state.get("init_process_pid")
    return pid if isinstance(pid, int) and pid > 0 else None


def _kill_container_init(pid: int) -> None:
    """SIGKILL pid only if it is in another pid namespace than ours (a container init, not a reused pid)."""
    try:
        if os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid"):
            return
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
