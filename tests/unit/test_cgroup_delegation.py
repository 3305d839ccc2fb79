"""cgroup delegation on synthetic cgroupfs trees (tests/unit/cgroupfs_fake.py), the pure v2 case
that this hybrid host cannot run for real: which folders and files a system instance's root gets,
that its limit files are not among them, and how a later `exec` enters a subtree whose init
(systemd) has enabled controllers for its children (the no-internal-process rule: a leaf below).
The real hybrid case: tests/integration/test_instances_cgroup_mounts.py.
"""

from __future__ import annotations

import errno
import os

import pytest
from cgroupfs_fake import v1_host, v2_host

from jaula.cgroups.base import open_cgroup
from jaula.cgroups.delegation import EXEC_LEAF, join_file
from jaula.instances import cgroup_delegation

UID = 1_000_000


@pytest.fixture
def chowned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths delegate() gives away (recorded: the test need not be root)."""
    done: list[str] = []
    dirs: dict[int, str] = {}
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        fd = real_open(path, flags, *a, **kw)
        dirs[fd] = path
        return fd

    def fake_chown(path, uid, gid, *, dir_fd=None, follow_symlinks=True):
        assert (uid, gid) == (UID, UID) and (isinstance(path, int) or follow_symlinks is False)
        full = dirs[path] if isinstance(path, int) else os.path.join(dirs[dir_fd], path)
        if not os.path.exists(full):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        done.append(full)

    monkeypatch.setattr(cgroup_delegation.os, "open", fake_open)
    monkeypatch.setattr(cgroup_delegation.os, "chown", fake_chown)
    return done


def test_v2_a_system_instance_gets_its_folder_and_the_files_that_move_processes_not_its_limits(tmp_path, chowned) -> None:
    k, layout = v2_host(str(tmp_path))
    cg = open_cgroup(None, "web1", layout=layout, fs=k)
    cg.create()
    d = cg.paths["unified"]
    delegated = cgroup_delegation.to_delegate(cg.paths, "systemd", nesting=False)
    assert delegated == cg.paths  # on v2 the one hierarchy is the init's own
    done = cgroup_delegation.delegate(delegated, UID, UID)
    assert done == chowned
    assert set(done) == {d} | {os.path.join(d, f) for f in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
                              if os.path.exists(os.path.join(d, f))}
    assert os.path.join(d, "cgroup.procs") in done and os.path.join(d, "cgroup.subtree_control") in done
    limits = [f for f in os.listdir(d) if f.startswith(("memory.", "pids.", "cpu.", "io."))]
    assert "memory.max" in limits and "pids.max" in limits
    assert not {os.path.join(d, f) for f in limits} & set(done)  # its limits stay the host root's
    assert cgroup_delegation.to_delegate(cg.paths, "busybox", nesting=False) == {}


def test_v2_exec_joins_a_leaf_once_the_init_manages_its_subtree(tmp_path) -> None:
    k, layout = v2_host(str(tmp_path))
    cg = open_cgroup(None, "web1", layout=layout, fs=k)
    cg.create()
    d = cg.paths["unified"]
    procs = os.path.join(d, "cgroup.procs")
    k.write(procs, "100")                           # the instance's init, started there
    assert join_file(procs, fs=k) == procs          # nothing enabled below: exec joins the cgroup itself
    # systemd inside: init.scope, itself moved there, controllers enabled for its services
    k.mkdir(os.path.join(d, "init.scope"))
    k.write(os.path.join(d, "init.scope", "cgroup.procs"), "100")
    k.write(os.path.join(d, "cgroup.subtree_control"), "+memory +pids")
    with pytest.raises(OSError) as e:
        k.write(procs, "200")                       # the kernel's no-internal-process rule
    assert e.value.errno == errno.EBUSY
    leaf = join_file(procs, fs=k)
    assert leaf == os.path.join(d, EXEC_LEAF, "cgroup.procs")
    k.write(leaf, "200")                            # the exec'd process
    assert join_file(procs, fs=k) == leaf           # made once, used again
    assert sorted(cg.pids()) == [100, 200]          # still the instance's: stats, kill, freeze see it
    for sub in ("init.scope", EXEC_LEAF):
        k._set(os.path.join(d, sub, "cgroup.procs"), "")  # the processes gone
    cg.remove()
    assert not os.path.exists(d)                    # leaf first, with the instance's


def test_v1_hybrid_only_the_inits_hierarchies_are_delegated_and_exec_is_unchanged(tmp_path, chowned) -> None:
    k, layout = v1_host(str(tmp_path))
    cg = open_cgroup(None, "web1", layout=layout, fs=k)
    cg.create()
    delegated = cgroup_delegation.to_delegate(cg.paths, "systemd", nesting=False)
    assert sorted(delegated) == ["name=systemd", "unified"]
    cgroup_delegation.delegate(delegated, UID, UID)
    assert not [p for p in chowned if "/memory/" in p or "/pids/" in p or "/cpu/" in p]
    assert {os.path.basename(p) for p in chowned if "/systemd/" in p} >= {"cgroup.procs", "tasks"}
    assert sorted(cgroup_delegation.to_delegate(cg.paths, "systemd", nesting=True)) == sorted(cg.paths)
    tasks = os.path.join(cg.paths["memory"], "tasks")
    assert join_file(tasks, fs=k) == tasks
    unified = os.path.join(cg.paths["unified"], "cgroup.procs")
    assert join_file(unified, fs=k) == unified
