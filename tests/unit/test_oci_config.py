"""config.json parsing and validation: every problem found at once, named by its JSON path."""

from __future__ import annotations

import pytest

from jaula.errors import ConfigError
from jaula.oci import config, mountopts
from jaula.linux import mount as m
from jaula.oci.argv import Flag, UsageError, parse
from jaula.oci.signals import parse as parse_signal
from jaula.oci.state import check_id
from jaula.oci.validate import sysctl_namespace, validate


def base(tmp_path, **over) -> dict:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    doc = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]},
    }
    doc.update(over)
    return doc


def problems(doc: dict, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate(config.parse(doc, str(tmp_path)))
    return e.value.problems


def test_good_config_parses_into_models(tmp_path):
    spec = config.parse(base(tmp_path), str(tmp_path))
    validate(spec)
    assert spec.root.path == str(tmp_path / "rootfs")
    assert spec.process.args == ["/bin/true"]
    assert [ns.type for ns in spec.linux.namespaces] == ["mount", "pid"]
    assert spec.mounts[0].destination == "/proc"


def test_every_type_problem_is_reported_at_once(tmp_path):
    doc = base(tmp_path)
    doc["process"].update(args="true", cwd=5, rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}],
                          oomScoreAdj=5000, capabilities={"effective": ["CAP_FLY"]})
    doc["linux"]["namespaces"].append({"type": "galaxy"})
    doc["mounts"].append({"destination": "relative/path", "type": "tmpfs"})
    with pytest.raises(ConfigError) as e:
        config.parse(doc, str(tmp_path))
    text = str(e.value)
    for needle in ("process.args: must be a list of strings", "process.cwd: must be a str",
                   "process.rlimits[0].type: 'RLIMIT_BOGUS' is not a resource limit",
                   "process.oomScoreAdj: 5000 is out of range", "unknown capabilities CAP_FLY",
                   "linux.namespaces[2].type: 'galaxy' is not a namespace type",
                   "mounts[1].destination: 'relative/path' must be an absolute path"):
        assert needle in text, (needle, text)
    assert len(e.value.problems) == 7


def test_version_checked(tmp_path):
    for bad in ("0.9.0", "2.0.0"):
        with pytest.raises(ConfigError, match="is not supported"):
            config.parse(base(tmp_path, ociVersion=bad), str(tmp_path))
    for good in ("1.0.0", "1.0.2", "1.1.0", "1.2.1"):
        config.parse(base(tmp_path, ociVersion=good), str(tmp_path))


def test_cross_field_rules(tmp_path):
    doc = base(tmp_path, hostname="box")
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    doc["linux"]["sysctl"] = {"kernel.panic": "1", "net.ipv4.ip_forward": "1"}
    doc["linux"]["namespaces"].append({"type": "pid"})
    doc["process"]["cwd"] = "rel"
    found = problems(doc, tmp_path)
    joined = "\n".join(found)
    assert "id mappings need a new user namespace" in joined
    assert "hostname: setting the hostname needs a uts namespace" in joined
    assert "linux.sysctl.kernel.panic: is not namespaced" in joined
    assert "linux.sysctl.net.ipv4.ip_forward: needs a network namespace" in joined
    assert "pid is given 2 times" in joined
    assert "process.cwd: 'rel' must be an absolute path" in joined


def test_user_namespace_needs_maps(tmp_path):
    doc = base(tmp_path)
    doc["linux"]["namespaces"].append({"type": "user"})
    assert any("needs linux.uidMappings" in p for p in problems(doc, tmp_path))


def test_missing_rootfs_and_args(tmp_path):
    doc = base(tmp_path, root={"path": "nope"})
    doc["process"]["args"] = []
    found = problems(doc, tmp_path)
    assert any("root.path" in p and "No such file" in p for p in found)
    assert any("process.args: is empty" in p for p in found)


def test_sysctl_namespaces():
    assert sysctl_namespace("net.core.somaxconn") == "network"
    assert sysctl_namespace("kernel.shmmax") == "ipc"
    assert sysctl_namespace("fs.mqueue.msg_max") == "ipc"
    assert sysctl_namespace("kernel.domainname") == "uts"
    assert sysctl_namespace("vm.overcommit_memory") is None


def test_mount_options():
    o = mountopts.parse(["nosuid", "ro", "rw", "rprivate", "rro", "rnoatime", "rbind", "size=10m", "mode=755", "idmap"])
    assert o.flags == m.MS_NOSUID
    assert o.clear & m.MS_RDONLY
    assert o.propagation == [m.MS_PRIVATE | m.MS_REC]
    assert o.rec_set == m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOATIME
    assert o.rec_clr & m.MOUNT_ATTR__ATIME
    assert o.bind and o.recursive_bind and o.idmap and not o.recursive_idmap
    assert o.data == ["size=10m", "mode=755"]


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "../x", "x" * 1025, "a b", "a\nb", "é"])
def test_bad_container_ids(cid):
    with pytest.raises(ConfigError, match="container id"):
        check_id(cid)


def test_good_container_ids():
    for cid in ("a", "web-1", "A_b.c+d", "x" * 1024):
        check_id(cid)


def test_signals():
    assert parse_signal("TERM") == parse_signal("SIGTERM") == parse_signal("sigterm") == parse_signal("15") == 15
    assert parse_signal("KILL") == 9
    assert parse_signal("RTMIN+2") == 36
    for bad in ("FOO", "0", "65", "RTMIN+40"):
        with pytest.raises(ConfigError):
            parse_signal(bad)


def test_argv_parser():
    flags = [Flag("--bundle,-b", "", "DIR", default="."), Flag("--detach,-d", ""), Flag("--env,-e", "", "E", repeat=True)]
    vals, pos = parse(flags, ["-b", "/x", "--env=A=1", "-e", "B=2", "-d", "id"], False, "t")
    assert vals == {"bundle": "/x", "detach": True, "env": ["A=1", "B=2"]} and pos == ["id"]
    vals, pos = parse(flags, ["id", "sh", "-c", "x"], True, "t")
    assert pos == ["id", "sh", "-c", "x"] and vals["detach"] is False
    with pytest.raises(UsageError, match="unknown option '--nope'"):
        parse(flags, ["--nope"], False, "t")
    with pytest.raises(UsageError, match="needs a value"):
        parse(flags, ["--bundle"], False, "t")
