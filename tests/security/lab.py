"""The security battery's host side: a container driver over a pool in a temporary folder,
instances made with the defaults (unprivileged, user-namespaced, system mode), the escape helper
copied into their template, and the leak check every test ends with."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

from jaula.errors import BadState, NotFound
from jaula.instances.container import ContainerDriver
from jaula.instances.model import Instance
from jaula.storage import TemplateStore
from jaula.storage.pool import open_pool
from tests.integration.pool_checks import clean, leaks
from tests.support.bundle import REPO
from tests.support.containers import pid_alive, wait_until

BUILD = REPO / "build"
HELPERS = {"escape": BUILD / "escape", "probe": BUILD / "probe"}
_n = itertools.count(1)
FIGURES: list[str] = []  # measured figures, printed after the battery's result line


def helpers_missing() -> str | None:
    missing = [str(p) for p in HELPERS.values() if not p.exists()]
    return f"{', '.join(missing)} missing: run scripts/build-test-assets" if missing else None


def make_store(top: Path) -> TemplateStore:
    """A busybox template with the probe and the escape helper in /usr/bin (root-owned, 0755)."""
    store = TemplateStore(root=top / "templates", cache=top / "cache")
    tpl = store.build("bb", "busybox")
    for name, src in HELPERS.items():
        dst = Path(tpl.rootfs) / "usr/bin" / name
        shutil.copyfile(src, dst)
        dst.chmod(0o755)
    return store


class Lab:
    """One pool (dir, or loop for disk quotas), one driver, what was started: for the leak check."""

    def __init__(self, top: Path, store: TemplateStore, pool_kind: str = "dir") -> None:
        self.top = top
        self.pool = open_pool(pool_kind, str(top / "pool"))
        self.driver = ContainerDriver(str(top / "run"), self.pool, store)
        self.instances: list[Instance] = []
        self.cgroups: set[str] = set()
        self.pids: set[int] = set()

    def new(self, **kw: object) -> Instance:
        n = next(_n)
        kw.setdefault("idmap_base", 2000000 + (os.getpid() % 1000) * 65536 * 8 + n * 65536)
        inst = Instance.new(f"sec{os.getpid()}-{n}", "bb", **kw)  # type: ignore[arg-type]
        self.driver.create(inst)
        self.instances.append(inst)
        return inst

    def start(self, inst: Instance) -> int:
        st = self.driver.start(inst)
        c = self.driver._container(inst.name)
        self.cgroups |= set(c.data["cgroupPaths"].values())
        self.pids.add(st.pid)
        # booted: the console script runs (its sleep; a login shell when the console is a pty)
        seen: list[tuple[int, str]] = []

        def booted() -> bool:
            seen[:] = [self.sh(inst, "ps -o pid,args")]
            return any(a.split(None, 1)[-1].startswith(("sleep", "/bin/sleep", "/bin/sh -l"))
                       for a in seen[0][1].splitlines()[1:] if len(a.split(None, 1)) == 2)

        try:
            wait_until("busybox init to boot", booted, timeout=30)
        except AssertionError as exc:  # what was there instead, for the report
            log = Path(self.driver.console_log(inst.name))
            tail = log.read_bytes()[-2000:].decode(errors="replace") if log.exists() else "(no console log)"
            try:
                init = Path(f"/proc/{st.pid}/status").read_text().splitlines()[:3]
            except OSError as e:
                init = [f"init {st.pid}: {e}"]
            raise AssertionError(f"{exc}; ps inside (exit {seen[0][0] if seen else '?'}): "
                                 f"{seen[0][1] if seen else '(none)'!r}; init: {init}; console: {tail!r}") from None
        return st.pid

    def run(self, inst: Instance, args: list[str], **kw: object) -> tuple[int, str]:
        """Run `args` inside as root; (exit code, stdout and stderr)."""
        r, w = os.pipe()
        try:
            code = self.driver.exec(inst, args, stdout=w, stderr=w, **kw)  # type: ignore[arg-type]
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as f:
            return code, f.read().decode(errors="replace")

    def sh(self, inst: Instance, script: str, **kw: object) -> tuple[int, str]:
        return self.run(inst, ["/bin/sh", "-c", script], **kw)

    def cgroup_file(self, inst: Instance, controller: str, name: str) -> str:
        c = self.driver._container(inst.name)
        return Path(c.data["cgroupPaths"][controller], name).read_text().strip()

    def rootfs(self, inst: Instance) -> Path:
        return Path(self.driver.bundle(inst.name)) / "rootfs"

    def remove(self, inst: Instance) -> None:
        try:
            self.driver.stop(inst, force=True)
        except BadState:
            pass
        try:
            self.driver.delete(inst)
        except NotFound:
            pass

    def leaks(self) -> list[str]:
        left = leaks(str(self.top))
        left += [f"cgroup {d}" for d in sorted(self.cgroups) if os.path.exists(d)]
        left += [f"process {p}" for p in sorted(self.pids) if pid_alive(p)]
        for sub in ("run/runtime", "run/bundles"):
            d = self.top / sub
            left += [f"{sub} {p.name}" for p in (d.iterdir() if d.exists() else [])]
        return left

    def close(self) -> list[str]:
        """Stop and delete every instance; what was left behind (then cleaned anyway)."""
        for inst in self.instances:
            self.remove(inst)
        left = self.leaks()
        clean(str(self.top))
        return left
