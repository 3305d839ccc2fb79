"""The container driver for real: busybox system instances booting busybox init as pid 1 in
their own user namespace on an idmapped pool volume, app instances, exec, counters, live limits,
freeze, stop by the init's own signal (or SIGTERM then SIGKILL), and rollback of a failed start.

Every test checks that nothing is left when it ends: no mount under its folder, no cgroup
directory, no process, no runtime state.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.errors import BadState, ConfigError, NotFound
from jaula.instances import render
from jaula.instances.container import ContainerDriver
from jaula.instances.model import Instance
from jaula.storage import TemplateStore
from jaula.storage.pool import open_pool
from tests.integration.pool_checks import clean, mounts_under
from tests.support.containers import pid_alive, wait_until

pytestmark = pytest.mark.root
MiB = 1 << 20
_n = itertools.count(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TemplateStore:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    top = tmp_path_factory.mktemp("instances-templates")
    s = TemplateStore(root=top / "templates", cache=top / "cache")
    s.build("bb", "busybox")
    return s


class Host:
    """A driver over a dir pool in a folder every user may traverse (an instance's root, host
    uid 1000000+, must reach its root tree), and what the test started, for the leak check."""

    def __init__(self, top: Path, store: TemplateStore) -> None:
        self.top = top
        self.pool = open_pool("dir", str(top / "pool"))
        self.driver = ContainerDriver(str(top / "run"), self.pool, store)
        self.instances: list[Instance] = []
        self.cgroups: set[str] = set()
        self.pids: set[int] = set()

    def new(self, **kw: object) -> Instance:
        n = next(_n)
        kw.setdefault("idmap_base", 1000000 + n * 65536)
        inst = Instance.new(f"t{os.getpid()}-{n}", kw.pop("template", "bb"), **kw)  # type: ignore[arg-type]
        self.driver.create(inst)
        self.instances.append(inst)
        return inst

    def start(self, inst: Instance):
        st = self.driver.start(inst)
        c = self.driver._container(inst.name)
        self.cgroups |= set(c.data["cgroupPaths"].values())
        self.pids.add(st.pid)
        return st

    def sh(self, inst: Instance, script: str, **kw: object) -> tuple[int, str]:
        """Run a shell script inside; (exit code, stdout and stderr)."""
        r, w = os.pipe()
        try:
            code = self.driver.exec(inst, ["/bin/sh", "-c", script], stdout=w, stderr=w, **kw)  # type: ignore[arg-type]
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as f:
            return code, f.read().decode()

    def cgroup_file(self, inst: Instance, controller: str, name: str) -> str:
        c = self.driver._container(inst.name)
        return Path(c.data["cgroupPaths"][controller], name).read_text().strip()

    def leaks(self) -> list[str]:
        left = [f"mount {m}" for m in mounts_under(str(self.top))]
        left += [f"cgroup {d}" for d in sorted(self.cgroups) if os.path.exists(d)]
        left += [f"process {p}" for p in sorted(self.pids) if pid_alive(p)]
        runtime = self.top / "run/runtime"
        left += [f"runtime state {p}" for p in (runtime.iterdir() if runtime.exists() else [])]
        bundles = self.top / "run/bundles"
        left += [f"bundle {p}" for p in (bundles.iterdir() if bundles.exists() else [])]
        return left


@pytest.fixture
def host(store: TemplateStore) -> Iterator[Host]:
    top = Path(tempfile.mkdtemp(prefix="jaula-instances-"))
    top.chmod(0o711)
    h = Host(top, store)
    try:
        yield h
        running = [i.name for i in h.instances if h.driver.state(i).status != "stopped"]
        assert not running, f"the test left instances running: {running}"
        for inst in h.instances:
            h.driver.delete(inst)
        left = h.leaks()
        assert not left, f"left behind: {left}"
    finally:
        for inst in h.instances:
            try:
                h.driver.stop(inst, force=True)
            except BadState:
                pass
            try:
                h.driver.delete(inst)
            except NotFound:
                pass
        clean(str(top))
        shutil.rmtree(top, ignore_errors=True)


def booted(h: Host, inst: Instance) -> None:
    """Wait until busybox init ran rcS and respawned the console script (its sleep)."""
    wait_until("busybox init to boot", lambda: "sleep" in h.sh(inst, "ps -o comm")[1], timeout=10)


def test_system_instance_runs_busybox_init(host: Host) -> None:
    inst = host.new(config={"environment.GREETING": "hola"})
    st = host.start(inst)
    assert (st.status, st.init, st.stop_signal) == ("running", "busybox", 12)
    # start returns once the runtime exec'd: into the exec trampoline (a sealed memfd), which
    # execs the init at once; never still the runtime's Python
    comm = Path(f"/proc/{st.pid}/comm")
    assert comm.read_text().strip() in ("init", "memfd:jaula-exe")
    wait_until("the trampoline to exec the init", lambda: comm.read_text().strip() == "init", timeout=5)
    booted(host, inst)
    code, out = host.sh(inst, "cat /proc/1/comm; hostname; id -u; cat /proc/self/uid_map; echo $GREETING")
    assert code == 0
    lines = out.split("\n")
    assert lines[:3] == ["init", inst.name, "0"]
    assert lines[3].split() == ["0", str(inst.idmap_base), "65536"]
    assert lines[4] == "hola"
    # root inside is the instance's range on the host
    status = Path(f"/proc/{st.pid}/status").read_text()
    assert f"Uid:\t{inst.idmap_base}\t" in status
    # exit codes, users, cwd and env of exec
    assert host.sh(inst, "exit 7")[0] == 7
    assert host.sh(inst, "id -u; id -g; pwd; echo $X", user=(1000, 1001), cwd="/tmp", env={"X": "y"}) == (
        0, "1000\n1001\n/tmp\ny\n")
    assert host.sh(inst, "kill -9 $$")[0] == 128 + 9
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        code, out = host.sh(inst, "tty; test -t 0 && echo a tty", tty=True, stdin=null)
    finally:
        os.close(null)
    assert code == 0 and out.startswith("/dev/pts/") and out.endswith("a tty\r\n")
    # what root writes inside lands owned by the range on the host
    assert host.sh(inst, "echo hi > /root/made-inside")[0] == 0
    made = host.top / "run/bundles" / inst.name / "rootfs/root/made-inside"
    assert made.stat().st_uid == inst.idmap_base
    with pytest.raises(BadState, match="is running"):
        host.driver.start(inst)
    started = time.monotonic()
    assert host.driver.stop(inst, timeout=20) is True  # busybox init powered off by itself
    assert time.monotonic() - started < 20
    assert "Requesting system poweroff" in Path(host.driver.console_log(inst.name)).read_text()
    assert host.driver.state(inst).status == "stopped"
    assert host.leaks() == []
    with pytest.raises(BadState, match="not running"):
        host.driver.stop(inst)
    with pytest.raises(BadState, match="not running"):
        host.sh(inst, "true")


def test_counters_and_live_limits(host: Host) -> None:
    inst = host.new(config={"limits.memory": "64MiB", "limits.processes": "100"})
    host.start(inst)
    stats = host.driver.stats(inst)
    assert stats.name == inst.name
    mem, pids = stats.row("memory"), stats.row("pids")
    assert mem is not None and mem.limit == 64 * MiB and mem.held and mem.held > 0
    assert pids is not None and pids.limit == 100 and pids.held and pids.held >= 1
    assert "memory" in stats.beancounters()

    new = host.driver.update(inst, dict(inst.config, **{"limits.memory": "128MiB", "limits.processes": "50",
                                                          "limits.cpu": "0.5", "user.note": "resized"}))
    assert new["limits.memory"] == 128 * MiB
    assert host.cgroup_file(inst, "memory", "memory.limit_in_bytes") == str(128 * MiB)
    assert host.cgroup_file(inst, "pids", "pids.max") == "50"
    assert host.cgroup_file(inst, "cpu", "cpu.cfs_quota_us") == "50000"
    assert host.driver.stats(inst).row("memory").limit == 128 * MiB
    inst.config = new
    # unset: back to no limit (and the default process limit)
    new = host.driver.update(inst, {"user.note": "resized"})
    assert int(host.cgroup_file(inst, "memory", "memory.limit_in_bytes")) > 1 << 60
    assert host.cgroup_file(inst, "cpu", "cpu.cfs_quota_us") == "-1"
    assert host.cgroup_file(inst, "pids", "pids.max") == "2048"
    inst.config = new
    with pytest.raises(BadState, match="security.privileged cannot change while it runs; stop it first"):
        host.driver.update(inst, {"security.privileged": "true"})
    with pytest.raises(ConfigError, match="limits.memory: 'lots' is not a size"):
        host.driver.update(inst, {"limits.memory": "lots"})
    with pytest.raises(ConfigError, match="dir pool has no per-instance disk quota"):
        host.driver.update(inst, {"limits.disk": "1GiB"})
    assert host.driver.stop(inst, timeout=20) is True
    # stopped: anything may change, applied at the next start
    assert host.driver.update(inst, {"security.nesting": "true"}) == {"security.nesting": True}


def test_freeze_and_unfreeze(host: Host) -> None:
    inst = host.new()
    host.start(inst)
    booted(host, inst)
    host.driver.freeze(inst)
    assert host.driver.state(inst).status == "frozen"
    assert host.cgroup_file(inst, "freezer", "freezer.state") == "FROZEN"
    with pytest.raises(BadState, match="frozen"):
        host.sh(inst, "true")
    with pytest.raises(BadState):
        host.driver.freeze(inst)
    host.driver.unfreeze(inst)
    assert host.driver.state(inst).status == "running"
    assert host.sh(inst, "echo awake") == (0, "awake\n")
    host.driver.freeze(inst)
    assert host.driver.stop(inst, timeout=20) is True  # thawed, then asked to power off


def test_app_instance_gets_sigterm_then_sigkill(host: Host) -> None:
    inst = host.new(mode="app", command=["/bin/sleep", "1000"])
    st = host.start(inst)
    assert (st.init, st.stop_signal) == ("app", 15)
    status = Path(f"/proc/{st.pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    cap_eff = int(next(x for x in status.splitlines() if x.startswith("CapEff:")).split()[1], 16)
    from jaula.linux.caps import to_mask

    assert cap_eff == to_mask(render.APP_CAPS)
    # sleep is pid 1 of its namespace with no handler: SIGTERM does nothing, SIGKILL ends it
    started = time.monotonic()
    assert host.driver.stop(inst, timeout=1) is False
    assert 1 <= time.monotonic() - started < 10
    assert not pid_alive(st.pid)


def test_stop_right_after_start_reaches_the_init(host: Host) -> None:
    inst = host.new()
    host.start(inst)
    started = time.monotonic()
    assert host.driver.stop(inst, timeout=20) is True  # busybox init got SIGUSR2, not the runtime's init
    assert time.monotonic() - started < 20


def test_app_that_handles_sigterm_stops_cleanly(host: Host) -> None:
    inst = host.new(mode="app", command=["/bin/sh", "-c", "trap 'exit 0' TERM; touch /ready; while :; do sleep 1; done"])
    host.start(inst)
    wait_until("the trap to be set", lambda: host.sh(inst, "test -e /ready")[0] == 0)
    assert host.driver.stop(inst, timeout=10) is True


def test_instance_that_powers_off_by_itself_starts_again(host: Host) -> None:
    inst = host.new()
    host.start(inst)
    booted(host, inst)
    host.sh(inst, "poweroff")
    wait_until("the instance to power off", lambda: host.driver.state(inst).status == "stopped", timeout=15)
    host.start(inst)  # frees what the old run held first
    booted(host, inst)
    assert host.driver.stop(inst, force=True) is False
    host.start(inst)
    host.sh(inst, "poweroff")
    wait_until("the instance to power off", lambda: host.driver.state(inst).status == "stopped", timeout=15)
    with pytest.raises(BadState):
        host.driver.freeze(inst)
    host.driver.delete(inst)  # frees the ended run's cgroup, state and mount with the volume
    host.instances.remove(inst)
    assert host.leaks() == []


def test_privileged_instance(host: Host) -> None:
    inst = host.new(config={"security.privileged": "true"}, idmap_base=None)
    host.start(inst)
    code, out = host.sh(inst, "cat /proc/self/uid_map")
    assert code == 0 and out.split() == ["0", "0", "4294967295"]
    assert host.driver.stop(inst, timeout=20) is True


def test_failed_start_leaves_nothing(host: Host) -> None:
    inst = host.new(config={"limits.cpuset": "1000"})  # no such cpu: the kernel refuses the cgroup write
    with pytest.raises(Exception, match="cpuset"):
        host.driver.start(inst)
    assert host.driver.state(inst).status == "stopped"
    assert host.leaks() == []
    assert host.pool.mounted_at(inst.name) is None


def test_bad_names_refused_before_anything_is_made(host: Host) -> None:
    for name in ("../x", "a/b", "x" * 64, "web\x07", "wéb", "", "UPPER"):
        inst = Instance(name=name, template="bb", idmap_base=2000000)
        for call in (host.driver.create, host.driver.start, host.driver.delete):
            with pytest.raises(ConfigError, match="Instance name"):
                call(inst)
        with pytest.raises(ConfigError, match="Instance name"):
            host.driver.stop(inst)
    assert host.pool.volumes() == []
    assert not (host.top / "run").exists() or list((host.top / "run").rglob("*")) == []


def test_a_root_the_instance_cannot_reach_is_refused_clearly(store: TemplateStore) -> None:
    top = Path(tempfile.mkdtemp(prefix="jaula-private-"))  # mode 0700
    try:
        pool = open_pool("dir", str(top / "pool"))
        driver = ContainerDriver(str(top / "run"), pool, store)
        inst = Instance.new(f"t{os.getpid()}-private", "bb", idmap_base=3000000)
        driver.create(inst)
        with pytest.raises(ConfigError, match=r"cannot reach .* is mode 0700; .*chmod o\+x"):
            driver.start(inst)
        assert mounts_under(str(top)) == []
        driver.delete(inst)
    finally:
        clean(str(top))
        shutil.rmtree(top, ignore_errors=True)


def test_unknown_template_and_missing_volume(host: Host) -> None:
    inst = Instance.new(f"t{os.getpid()}-none", "nosuch", idmap_base=2000000)
    with pytest.raises(NotFound):
        host.driver.create(inst)
    inst = Instance.new(f"t{os.getpid()}-novol", "bb", idmap_base=2000000)
    with pytest.raises(NotFound):
        host.driver.start(inst)
    assert host.leaks() == []
