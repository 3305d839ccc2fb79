"""jaula.oci.zygote: a process that made two containers clones its next inits from a small
zygote (CLONE_PARENT: still its own children). Those containers are the same as before: their
program runs, with fds 0-2 only, in their own namespaces, and their init is our child (waitpid
gives its status). A zygote killed is noticed and the inits are cloned directly again; the zygote
goes when its caller does; a one-shot create never starts one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaula.linux import libc
from jaula.linux.ns import available
from jaula.oci.config import load
from jaula.oci.init import clones_init
from tests.integration.test_runtime_clone_init import ubundle  # noqa: F401 - the fixture

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not available("user"), reason="no user namespaces (CONFIG_USER_NS)")]

_SCRIPT = """
import json, os, sys, time
from jaula.oci import create as cr, lifecycle, zygote
from jaula.oci.create import Options, create
from jaula.oci.log import Log

import signal
log = Log()
root, bundle, n, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as jaulad's spawner: the container inherits it either way
out = []
for i in range(n):
    if i == kill_at and zygote._z is not None:
        os.kill(zygote._z.pid, 9)
        time.sleep(0.2)
    if i >= 2 and zygote._z is not None:  # give the zygote its time to start (python -IS, ~50 ms)
        for _ in range(300):
            if zygote._ready() is not None or zygote._z is None:
                break
            time.sleep(0.01)
    before = zygote.cloned
    c = create(root, f"z{i}", bundle, Options(start=True), log)
    seen = {"zygote": zygote.cloned > before, "started": c.started}
    with open(f"/proc/{c.pid}/stat") as f:
        seen["ppid"] = int(f.read().rsplit(")", 1)[1].split()[1])
    for _ in range(200):  # past the trampoline's own execve
        with open(f"/proc/{c.pid}/cmdline", "rb") as f:
            seen["cmdline"] = f.read().split(b"\\0")[0].decode()
        if seen["cmdline"] != "jaula-exec-trampoline":
            break
        time.sleep(0.01)
    seen["fds"] = sorted(os.listdir(f"/proc/{c.pid}/fd"))
    seen["stdio"] = [os.readlink(f"/proc/{c.pid}/fd/{i}") == os.readlink(f"/proc/self/fd/{i}") for i in range(3)]
    with open(f"/proc/{c.pid}/status") as f:
        seen["sigign"] = next(ln.split()[1] for ln in f if ln.startswith("SigIgn:"))
    seen["ns"] = {k: os.readlink(f"/proc/{c.pid}/ns/{k}") != os.readlink(f"/proc/self/ns/{k}")
                  for k in ("user", "pid", "mnt", "net")}
    lifecycle.kill(c, 9)
    _, status = os.waitpid(c.pid, 0)  # our child, whoever cloned it
    seen["signaled"] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    lifecycle.delete(c, True, log)
    out.append(seen)
forked = None
if n >= 3 and zygote.ready():  # a fork of ours (a spawner forked by a test) clones its own inits
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        res = {}
        try:
            c = create(root, "zfork", bundle, Options(start=True), log)
            with open(f"/proc/{c.pid}/stat") as f:
                res["ppid_is_me"] = int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
            res["own_zygote"] = zygote._z.pid if zygote._z is not None and zygote._z.owner == os.getpid() else None
            lifecycle.kill(c, 9)
            res["waited"] = os.waitpid(c.pid, 0)[0] == c.pid
            lifecycle.delete(c, True, log)
        except BaseException as e:
            res["error"] = repr(e)
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    forked = json.loads(os.read(r, 65536) or b"{}")
    os.waitpid(child, 0)
    forked["parent_zygote_ready"] = zygote.ready()
failed = None
if len(sys.argv) > 5:  # a create the kernel refuses (its limits) once the zygote runs: undone
    from jaula.cgroups.base import open_cgroup
    try:
        create(root, "zbad", sys.argv[5], Options(start=True), log)
    except Exception as e:
        failed = {"error": str(e), "ready": zygote.ready(),
                  "left": [d for d in open_cgroup(None, "zbad").paths.values() if os.path.exists(d)]
                  + [n for n in os.listdir(root) if n == "zbad"]}
print(json.dumps({"runs": out, "zygote": zygote._z.pid if zygote._z else None, "me": os.getpid(), "failed": failed,
                  "forked": forked}))
"""


def _run(root: Path, bundle: Path, n: int, kill_at: int = -1, bad: Path | None = None) -> dict:
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(root), str(bundle), str(n), str(kill_at),
                          *([str(bad)] if bad else [])],
                         check=False, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=src))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _need_clone_parent() -> None:
    if not libc.can_clone_parent():
        pytest.skip("jaula.linux._sys without CLONE_PARENT (VERSION 4): run scripts/build-runtime-fast")


def _gone(pid: int) -> bool:
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


def test_inits_from_the_zygote_are_the_same_containers(ubundle, tmp_path: Path) -> None:  # noqa: F811
    _need_clone_parent()
    b = ubundle(["/bin/sleep", "30"])
    assert clones_init(load(str(b)))
    got = _run(tmp_path / "root", b, 5)
    runs = got["runs"]
    assert [r["zygote"] for r in runs] == [False, False, True, True, True], runs
    for r in runs:
        assert r["started"] and r["cmdline"] == "/bin/sleep", r
        assert all(r["stdio"]), r  # the caller's stdio, whoever cloned the init
        assert int(r["sigign"], 16) & 1 << (2 - 1), r  # SIGINT ignored by the caller: ignored inside too
        assert r["sigign"] == runs[0]["sigign"], runs  # the same dispositions as a direct clone's
        assert r["fds"] == ["0", "1", "2"], r  # nothing of the zygote's or the runtime's
        assert all(r["ns"].values()), r
        assert r["ppid"] == got["me"], r  # CLONE_PARENT: the caller's child, as a direct clone
        assert r["signaled"], r
    assert got["zygote"] and _gone(got["zygote"])  # it went with its caller
    # a fork of the caller does not use the caller's zygote: its init is its own child
    forked = got["forked"]
    assert forked["ppid_is_me"] and forked["waited"] and forked["parent_zygote_ready"], got
    assert forked["own_zygote"] != got["zygote"], got  # it starts its own (it has made containers too)
    if forked["own_zygote"]:
        assert _gone(forked["own_zygote"])
    assert not any((tmp_path / "root").iterdir())


def test_a_killed_zygote_is_noticed_and_inits_are_cloned_directly(ubundle, tmp_path: Path) -> None:  # noqa: F811
    _need_clone_parent()
    b = ubundle(["/bin/sleep", "30"])
    runs = _run(tmp_path / "root", b, 6, kill_at=4)["runs"]
    assert [r["zygote"] for r in runs] == [False, False, True, True, False, False], runs
    assert all(r["started"] and r["fds"] == ["0", "1", "2"] and r["signaled"] for r in runs), runs


def test_a_one_shot_create_starts_no_zygote(ubundle, tmp_path: Path) -> None:  # noqa: F811
    _need_clone_parent()
    b = ubundle(["/bin/sleep", "30"])
    got = _run(tmp_path / "root", b, 1)
    assert got["zygote"] is None and not got["runs"][0]["zygote"]


def test_a_refused_limit_after_the_zygotes_clone_leaves_nothing(ubundle, tmp_path: Path) -> None:  # noqa: F811
    """Its cgroup is made while the zygote's init starts (it joins after GO_ON): a limit the kernel
    refuses there still undoes everything, the init first."""
    _need_clone_parent()
    b = ubundle(["/bin/sleep", "30"])
    bad = ubundle(["/bin/sleep", "30"], linux={"resources": {"cpu": {"cpus": "4095"}}})
    got = _run(tmp_path / "root", b, 3, bad=bad)
    assert got["runs"][2]["zygote"], got
    assert got["failed"] and "cpuset.cpus" in got["failed"]["error"], got
    assert got["failed"]["left"] == [], got
