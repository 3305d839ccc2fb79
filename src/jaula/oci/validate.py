"""Checks across fields, made before any namespace, cgroup or mount exists (as runc's validator)."""

from __future__ import annotations

import os
import stat

from jaula.errors import ConfigError
from jaula.oci.config import Spec

# sysctl prefixes and the namespace that makes them private to the container
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


_AVAILABLE: dict[str, bool] = {}  # namespace kind -> whether this kernel has it (fixed while it runs)


def _available(kind: str) -> bool:
    """jaula.linux.ns.available, asked once per kind: a long-lived caller (jaulad's spawner)
    validates a spec at every start, a stat of /proc/self/ns/* per namespace otherwise."""
    found = _AVAILABLE.get(kind)
    if found is None:
        from jaula.linux.ns import available

        found = _AVAILABLE[kind] = available(kind)
    return found


def sysctl_namespace(name: str) -> str | None:
    """The namespace a sysctl belongs to, or None if it is host-global and must be refused."""
    if name.startswith("net."):
        return "network"
    if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
        return "ipc"
    if name in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def validate(spec: Spec, need_process: bool = True) -> None:
    """Raise ConfigError with every problem of `spec`; parse seccomp and resources into models."""
    problems: list[str] = []
    bad = problems.append
    lx = spec.linux

    if spec.root is not None:
        try:
            st = os.stat(spec.root.path)
            if not stat.S_ISDIR(st.st_mode):
                bad(f"root.path: {spec.root.path!r} is not a directory")
        except OSError as e:
            bad(f"root.path: {spec.root.path!r}: {e.strerror}")

    p = spec.process
    if need_process:
        if p is None:
            bad("process: is required to create a container")
        elif not p.args:
            bad("process.args: is empty; give the program to run")
    if p is not None and not os.path.isabs(p.cwd):
        bad(f"process.cwd: {p.cwd!r} must be an absolute path")

    kinds = [ns.type for ns in lx.namespaces]
    for k in set(kinds):
        if kinds.count(k) > 1:
            bad(f"linux.namespaces: {k} is given {kinds.count(k)} times")
    for ns in lx.namespaces:
        if ns.path and not os.path.exists(ns.path):
            bad(f"linux.namespaces: the {ns.type} namespace path {ns.path!r} does not exist")
    new = {ns.type for ns in lx.namespaces if not ns.path}
    has = {ns.type for ns in lx.namespaces}
    for k in has:
        if not _available(k):
            bad(f"linux.namespaces: this kernel has no {k} namespace")

    if (lx.uid_mappings or lx.gid_mappings) and "user" not in new:
        bad("linux.uidMappings: id mappings need a new user namespace in linux.namespaces")
    if "user" in new and not (lx.uid_mappings and lx.gid_mappings):
        bad("linux.namespaces: a new user namespace needs linux.uidMappings and linux.gidMappings")
    if spec.hostname and "uts" not in has:
        bad("hostname: setting the hostname needs a uts namespace")
    if spec.domainname and "uts" not in has:
        bad("domainname: setting the domainname needs a uts namespace")
    if lx.time_offsets and "time" not in new:
        bad("linux.timeOffsets: time offsets need a new time namespace")
    for name in lx.sysctl:
        need = sysctl_namespace(name)
        if need is None:
            bad(f"linux.sysctl.{name}: is not namespaced; setting it would change the host")
        elif need not in has:
            bad(f"linux.sysctl.{name}: needs a {need} namespace")
    if lx.rootfs_propagation and "mount" not in new:
        bad("linux.rootfsPropagation: needs a new mount namespace")
    for i, m in enumerate(spec.mounts):
        if m.destination == "/":
            bad(f"mounts[{i}].destination: '/' is the root; use root.path for it")
        if (m.parsed.idmap or m.uid_mappings) and not ("user" in has or m.uid_mappings):
            bad(f"mounts[{i}]: an idmapped mount needs a user namespace or its own uidMappings and gidMappings")
        if bool(m.uid_mappings) != bool(m.gid_mappings):
            bad(f"mounts[{i}]: give both uidMappings and gidMappings, or neither")
        if (m.uid_mappings or m.gid_mappings) and not m.parsed.idmap:
            bad(f"mounts[{i}]: uidMappings and gidMappings need the idmap or ridmap option")
        if m.type in ("bind", "rbind") or m.parsed.bind:
            if not m.source:
                bad(f"mounts[{i}].source: a bind mount needs a source")
    if "mount" not in new and spec.mounts:
        bad("mounts: mounts need a new mount namespace in linux.namespaces")

    if lx.seccomp_json is not None:
        from jaula.oci.seccomp import Seccomp

        try:
            lx.seccomp = Seccomp.from_json(lx.seccomp_json)
        except ConfigError as e:
            problems.extend(e.problems)
    if lx.resources_json is not None:
        from jaula.cgroups.resources import Resources

        try:
            lx.resources = Resources.from_oci(lx.resources_json)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
