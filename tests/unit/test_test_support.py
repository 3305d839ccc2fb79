"""The test support itself: config defaults and merging, bundles, and the probe's output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.bundle import PROBE, deep_merge, default_config, make_bundle, read_config, userns_overrides


def test_deep_merge_recurses_replaces_and_deletes() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    deep_merge(base, {"a": {"c": [3], "e": {"f": 1}}, "d": None})
    assert base == {"a": {"b": 1, "c": [3], "e": {"f": 1}}}


def test_default_config_is_runc_like() -> None:
    config = default_config()
    assert config["process"]["terminal"] is False
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert [ns["type"] for ns in config["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts", "mount"]
    assert [m["destination"] for m in config["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/proc/sys" in config["linux"]["readonlyPaths"]
    assert default_config() is not default_config()


def test_userns_overrides_add_user_namespace_and_maps() -> None:
    linux = deep_merge(default_config(), userns_overrides(200000, 1000))["linux"]
    assert {"type": "user"} in linux["namespaces"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 1000}]


def test_make_bundle_writes_root_and_merged_config(tmp_path: Path, rootfs_dir: Path) -> None:
    bundle = make_bundle(tmp_path / "b", ["/bin/true"], hostname="h1", process={"cwd": "/tmp"})
    config = read_config(bundle)
    assert config["process"]["args"] == ["/bin/true"]
    assert config["process"]["cwd"] == "/tmp"
    assert config["process"]["noNewPrivileges"] is True
    assert config["hostname"] == "h1"
    assert os.access(bundle / "rootfs" / PROBE.lstrip("/"), os.X_OK)
    assert (bundle / "rootfs/bin/sh").is_symlink()
    assert (bundle / "rootfs/tmp").stat().st_mode & 0o7777 == 0o1777
    # a private copy: writing to it leaves the built root alone
    assert (bundle / "rootfs/etc/passwd").stat().st_ino != (rootfs_dir / "etc/passwd").stat().st_ino


def probe(rootfs_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(rootfs_dir / PROBE.lstrip("/")), *args], capture_output=True, text=True, timeout=10)


def test_probe_info_reports_this_process(rootfs_dir: Path, tmp_path: Path) -> None:
    weird = tmp_path / 'a"\\\x01\xe9'
    weird.write_text("")
    with open(weird) as f:
        result = subprocess.run([str(rootfs_dir / PROBE.lstrip("/")), "info"], capture_output=True, text=True,
                                pass_fds=(f.fileno(),), env={"X": "1\n\"2"}, timeout=10)
        fd = f.fileno()
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["uid"] == os.getuid() and info["pid"] > 0
    assert info["env"] == ['X=1\n"2']
    assert info["fds"][str(fd)] == str(weird)
    assert info["rlimits"]["RLIMIT_NOFILE"]["soft"] > 0
    assert set(info["status"]) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                                   "Seccomp", "Seccomp_filters"}
    assert info["ns"]["mnt"] == os.readlink("/proc/self/ns/mnt")
    assert any(" / / " in line for line in info["mountinfo"])
    for key in ("uid_map", "gid_map", "cgroup", "groups"):
        assert isinstance(info[key], list)
    for key in ("umask", "cwd", "hostname", "domainname", "dumpable", "personality", "oom_score_adj",
                "session_keyring", "session_keyring_error"):
        assert key in info


@pytest.mark.parametrize(("args", "rc", "out"), [
    (["open", "/nonexistent"], 1, "ENOENT"),
    (["open", "/proc/self/status", "r"], 0, "ok"),
    (["readlink", "/nonexistent"], 1, "ENOENT"),
    (["exit", "7"], 7, ""),
    (["sleep", "0.01"], 0, ""),
    (["bogus"], 2, ""),
])
def test_probe_subcommands(rootfs_dir: Path, args: list[str], rc: int, out: str) -> None:
    result = probe(rootfs_dir, *args)
    assert (result.returncode, result.stdout.strip()) == (rc, out)
