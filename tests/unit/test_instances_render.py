"""The container driver's OCI config, rendered without any kernel call and checked by jaula.oci's
own parser and validator: namespaces, id maps, capabilities, paths, limits, the init's stop signal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaula.errors import ConfigError
from jaula.instances import render
from jaula.instances.model import Instance
from jaula.oci import config as oci_config
from jaula.oci.spec import MASKED_PATHS, READONLY_PATHS
from jaula.oci.validate import validate as oci_validate
from jaula.storage.templates import Template

CAPS = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_TIME", "CAP_NET_ADMIN"]


def template(tmp_path: Path, **kw: object) -> Template:
    (tmp_path / "tpl/rootfs/etc").mkdir(parents=True, exist_ok=True)
    fields = dict(name="bb", source="busybox", created="", size=0, os="busybox", cmd=["/sbin/init"],
                  env=["PATH=/bin", "LANG=C"], path=tmp_path / "tpl")
    fields.update(kw)
    return Template(**fields)


def rendered(tmp_path: Path, inst: Instance, **kw: object) -> dict:
    tpl = kw.pop("tpl", None) or template(tmp_path)
    cfg = render.settings.effective(inst.config)
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    spec = render.render(inst, cfg, tpl, str(tmp_path / "rootfs"), kw.pop("init", render.INITS["busybox"]),
                         known_caps=CAPS, nofile=(1024, 4096), **kw)
    oci_validate(oci_config.parse(spec, str(tmp_path)))  # a real config jaula.oci accepts
    return spec


def test_system_instance(tmp_path: Path) -> None:
    inst = Instance.new("web1", "bb", config={"environment.TZ": "UTC"}, idmap_base=200000)
    spec = rendered(tmp_path, inst)
    p, lx = spec["process"], spec["linux"]
    assert p["args"] == ["/sbin/init"] and p["cwd"] == "/" and p["user"] == {"uid": 0, "gid": 0}
    caps = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]     # CAPS less render.SYSTEM_DROP
    assert p["capabilities"]["bounding"] == caps == p["capabilities"]["effective"]
    assert p["noNewPrivileges"] is False and p["terminal"] is False
    assert p["env"] == ["PATH=/bin", "LANG=C", "container=jaula", "TZ=UTC"]
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
                            {"type": "RLIMIT_NPROC", "soft": 2048, "hard": 2048}]
    assert {n["type"] for n in lx["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time"}
    assert lx["uidMappings"] == lx["gidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 65536}]
    assert lx["maskedPaths"] == MASKED_PATHS and lx["readonlyPaths"] == READONLY_PATHS
    assert lx["resources"]["pids"] == {"limit": render.settings.DEFAULT_PROCESSES}
    assert lx["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert spec["root"] == {"path": str(tmp_path / "rootfs"), "readonly": False}
    assert spec["hostname"] == "web1"
    assert spec["annotations"]["org.jaula.stop-signal"] == "12"
    assert spec["annotations"]["org.jaula.init"] == "busybox"
    cg = next(m for m in spec["mounts"] if m["destination"] == "/sys/fs/cgroup")
    assert "ro" in cg["options"]
    assert "cgroupsPath" not in lx


def test_app_instance(tmp_path: Path) -> None:
    tpl = template(tmp_path, cmd=["serve"], entrypoint=["/app/run"], workdir="/app", user="app")
    (tmp_path / "tpl/rootfs/etc/passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n")
    inst = Instance.new("api", "bb", mode="app", idmap_base=300000)
    spec = rendered(tmp_path, inst, tpl=tpl, init=render.INITS["app"], cgroups_path="/jaula/api")
    p = spec["process"]
    assert p["args"] == ["/app/run", "serve"] and p["cwd"] == "/app" and p["user"] == {"uid": 1000, "gid": 1001}
    assert p["capabilities"]["bounding"] == render.APP_CAPS and p["noNewPrivileges"] is True
    assert "container=jaula" not in p["env"]
    assert spec["linux"]["cgroupsPath"] == "/jaula/api"
    assert spec["annotations"]["org.jaula.stop-signal"] == "15"
    inst.command = ["/bin/sleep", "9"]
    assert rendered(tmp_path, inst, tpl=tpl)["process"]["args"] == ["/bin/sleep", "9"]


def test_app_without_a_command(tmp_path: Path) -> None:
    inst = Instance.new("api", "bb", mode="app", idmap_base=300000)
    with pytest.raises(ConfigError, match="has no command"):
        rendered(tmp_path, inst, tpl=template(tmp_path, cmd=[]))


def test_users_of_an_image(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("www:x:33:34::/:/bin/false\n")
    (root / "etc/group").write_text("adm:x:4:\n")
    assert render.process_user("", str(root)) == (0, 0)
    assert render.process_user("1000", str(root)) == (1000, 1000)
    assert render.process_user("1000:5", str(root)) == (1000, 5)
    assert render.process_user("www", str(root)) == (33, 34)
    assert render.process_user("www:adm", str(root)) == (33, 4)
    with pytest.raises(ConfigError, match="no 'nobody' in its /etc/passwd"):
        render.process_user("nobody", str(root))


def test_privileged_and_nesting(tmp_path: Path) -> None:
    inst = Instance.new("root1", "bb", config={"security.privileged": "true", "security.nesting": "true"})
    spec = rendered(tmp_path, inst)
    lx = spec["linux"]
    assert "user" not in {n["type"] for n in lx["namespaces"]} and "uidMappings" not in lx
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
    assert "/proc/sys" not in lx["readonlyPaths"]
    cg = next(m for m in spec["mounts"] if m["destination"] == "/sys/fs/cgroup")
    assert "ro" not in cg["options"] and "rw" in cg["options"]


def test_unprivileged_needs_an_id_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no id range"):
        rendered(tmp_path, Instance.new("web1", "bb"))


def test_limits(tmp_path: Path) -> None:
    inst = Instance.new("web1", "bb", idmap_base=200000, config={
        "limits.memory": "512MiB", "limits.memory.swap": "256MiB", "limits.cpu": "1.5", "limits.cpu.weight": "50",
        "limits.cpuset": "0-1", "limits.processes": "300"})
    res = rendered(tmp_path, inst)["linux"]["resources"]
    assert res["memory"] == {"limit": 512 << 20, "swap": 768 << 20}
    assert res["cpu"] == {"quota": 150000, "period": 100000, "shares": 512, "cpus": "0-1"}
    assert res["pids"] == {"limit": 300}
    assert render.resources({"limits.memory": 1 << 30})["memory"] == {"limit": 1 << 30, "swap": -1}


def test_live_updates() -> None:
    eff = render.settings.effective
    old = eff({"limits.memory": 1 << 30, "limits.cpu": 2.0, "limits.cpuset": "1", "limits.cpu.weight": 200})
    assert render.resources_update(old, old) == {}
    assert render.resources_update(old, eff({}), online_cpus="0-3") == {
        "memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1, "period": 100000, "shares": 1024, "cpus": "0-3"}}
    new = dict(old, **{"limits.memory": 2 << 30, "limits.processes": 50})
    assert render.resources_update(old, new) == {"memory": {"limit": 2 << 30, "swap": -1}, "pids": {"limit": 50}}


def test_detect_init(tmp_path: Path) -> None:
    def tree(name: str) -> Path:
        root = tmp_path / name
        for d in ("sbin", "bin", "lib/systemd"):
            (root / d).mkdir(parents=True)
        return root

    bb = tree("bb")
    (bb / "bin/busybox").write_bytes(b"\x7fELF BusyBox v1.35")
    os.symlink("/bin/busybox", bb / "sbin/init")
    assert render.detect_init(str(bb)) == render.INITS["busybox"]
    sd = tree("sd")
    (sd / "lib/systemd/systemd").write_bytes(b"\x7fELF")
    os.symlink("../lib/systemd/systemd", sd / "sbin/init")
    assert render.detect_init(str(sd)).stop_signal == 38
    sv = tree("sv")
    (sv / "sbin/init").write_bytes(b"\x7fELF ... INIT_VERSION=sysvinit-3.06")
    assert render.detect_init(str(sv)).name == "sysvinit"
    copy = tree("copy")
    (copy / "sbin/init").write_bytes(b"\x7fELF BusyBox v1.36.1 (Debian)")
    assert render.detect_init(str(copy)).name == "busybox"
    odd = tree("odd")
    (odd / "sbin/init").write_bytes(b"#!/bin/sh\n")
    assert render.detect_init(str(odd)) == render.INITS["unknown"]
    assert render.detect_init(str(tree("none"))).stop_signal == 15
    loop = tree("loop")  # a link out of the tree resolves inside it, a loop ends
    os.symlink("/sbin/init", loop / "sbin/init")
    assert render.detect_init(str(loop)).name == "unknown"
    usr = tree("usr")  # Debian's merged /usr: an absolute link to a folder, resolved in the tree
    (usr / "usr/sbin").mkdir(parents=True)
    os.rmdir(usr / "sbin")
    os.symlink("/usr/sbin", usr / "sbin")
    (usr / "usr/sbin/init").write_bytes(b"INIT_VERSION")
    assert render.detect_init(str(usr)).name == "sysvinit"
    assert render.resolve_in_tree(str(usr), "/sbin/../../../sbin/init") == "/usr/sbin/init"
