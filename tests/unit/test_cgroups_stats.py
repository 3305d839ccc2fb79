"""The beancounter table and its command line, on a synthetic v1 tree."""

from __future__ import annotations

import os

from cgroupfs_fake import v1_host

from jaula.cgroups.base import open_cgroup
from jaula.cgroups.stats import Counter, Stats, beancounters, main

MiB = 2**20


def test_table_has_user_beancounters_columns():
    st = Stats(name="web1", rows=[
        Counter("memory", 1000, 4000, 20 * MiB, 12, barrier=10 * MiB),
        Counter("pids", 2, 9, 16, 5, unit="tasks", barrier=16),
        Counter("cpu", 123456789, None, 500, 2, unit="ns", barrier=500),
        Counter("io", 150)])
    lines = st.beancounters().splitlines()
    assert lines[0].split() == ["uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt", "unit"]
    assert lines[1].split() == ["web1:", "memory", "1000", "4000", str(10 * MiB), str(20 * MiB), "12", "bytes"]
    assert lines[2].split() == ["pids", "2", "9", "16", "16", "5", "tasks"]        # uid only on the first row
    assert lines[3].split() == ["cpu", "123456789", "-", "500", "500", "2", "ns,", "mcpu"]
    assert lines[4].split() == ["io", "150", "-", "max", "max", "-", "bytes"]
    # columns line up: every number ends where its header does
    ends = [lines[0].index(h) + len(h) for h in ("held", "maxheld", "barrier", "limit", "failcnt")]
    for line in lines[1:]:
        assert all(line[e - 1] != " " for e in ends), line
    two = beancounters([st, Stats(name="db", rows=[Counter("memory", 1, 2)])]).splitlines()
    assert len(two) == 6 and two[5].split()[0] == "db:"


def test_memory_barrier_is_the_soft_limit(tmp_path):
    k, layout = v1_host(str(tmp_path))
    cg = open_cgroup(None, "jaula-s1", layout=layout, fs=k)
    cg.create()
    d = cg.paths["memory"]
    open(os.path.join(d, "memory.limit_in_bytes"), "w").write(str(20 * MiB))
    open(os.path.join(d, "memory.soft_limit_in_bytes"), "w").write(str(8 * MiB))
    st = cg.stats()
    assert st.name == "jaula-s1"
    assert (st.row("memory").barrier, st.row("memory").limit) == (8 * MiB, 20 * MiB)
    assert st.row("pids").barrier is None and "jaula-s1:" in st.beancounters()


def test_command_line(tmp_path, capsys):
    k, layout = v1_host(str(tmp_path))
    for name in ("web1", "db"):
        open_cgroup(None, name, layout=layout, fs=k).create()
    assert main([], layout=layout, fs=k) == 0
    out = capsys.readouterr().out
    assert [ln.split()[0] for ln in out.splitlines() if ln.split()[0].endswith(":")] == ["db:", "web1:"]
    pids_dir = open_cgroup(None, "web1", layout=layout, fs=k).paths["pids"]
    assert main(["web1", pids_dir, "nosuch"], layout=layout, fs=k) == 1
    out, err = capsys.readouterr()
    assert out.count("web1:") == 2 and "'nosuch': no such cgroup" in err
    assert main(["/elsewhere/x"], layout=layout, fs=k) == 1
    assert "is not a directory below your own cgroup" in capsys.readouterr().err
    assert main(["--help"], layout=layout, fs=k) == 0 and "usage:" in capsys.readouterr().out


def test_package_names_stay_functions_after_submodules_load():
    """`from jaula.cgroups import probe` once gave the submodule probe.py, shadowing the function."""
    import jaula.cgroups as pkg
    import jaula.cgroups.base  # noqa: F401  (loads every submodule the names live in)
    from jaula.cgroups import probe

    assert callable(probe) and probe.__module__ == "jaula.cgroups.layout"
    for name in pkg.__all__:
        assert not isinstance(getattr(pkg, name), type(pkg)), f"jaula.cgroups.{name} is a module"
