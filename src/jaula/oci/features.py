"""`features`: what this runtime supports, in the form of the runtime-spec's features.md."""

from __future__ import annotations

from jaula.linux import caps, ns
from jaula.oci.config import HOOK_NAMES, NAMESPACE_TYPES
from jaula.oci.mountopts import _FLAGS, _PROPAGATION, _RECURSIVE


def features() -> dict:
    from jaula.oci import process

    mount_options = sorted(set(_FLAGS) | set(_PROPAGATION) | set(_RECURSIVE) | {"bind", "rbind", "idmap", "ridmap", "tmpcopyup"})
    seccomp: dict = {"enabled": True}
    try:
        from jaula.oci import seccomp as sc

        seccomp.update(sc.features())
    except (ImportError, AttributeError):
        seccomp = {"enabled": False}
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": list(HOOK_NAMES),
        "mountOptions": mount_options,
        "linux": {
            "namespaces": [t for t in NAMESPACE_TYPES if ns.available(t)],
            "capabilities": caps.NAMES[: caps.last_cap() + 1],
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": seccomp,
            "apparmor": {"enabled": process.lsm_enabled("apparmor")},
            "selinux": {"enabled": process.lsm_enabled("selinux")},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
        },
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "false", "jaula.runtime": "jaula-runtime"},
    }
