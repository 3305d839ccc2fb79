"""cgroup drivers (v1 and v2) behind one interface, with beancounter-style accounting.

    cg = open_cgroup(spec_cgroups_path, container_id)   # the driver is chosen by probing the host
    cg.create(); cg.apply(Resources.from_oci(spec["linux"].get("resources", {}))); cg.add_pid(pid)
    print(cg.stats().beancounters())
"""

# Imported on first use (PEP 562): `jaula-runtime delete` must not pay for what it does not touch.
_WHERE = {
    **dict.fromkeys(("Cgroup", "CgroupFs", "open_cgroup", "reopen"), "base"),
    **dict.fromkeys(("Hierarchy", "Layout", "probe"), "layout"),
    **dict.fromkeys(("Counter", "Stats", "beancounters"), "stats"),
    **dict.fromkeys((
        "BlockIO", "Cpu", "DeviceRule", "HugepageLimit", "InterfacePriority", "Memory", "Network", "Pids",
        "Resources", "ThrottleDevice", "WeightDevice", "blkio_weight_to_io_weight", "cpus_to_quota",
        "quota_to_cpus", "shares_to_weight", "shares_to_weight_quadratic", "swap_v2", "weight_to_shares",
    ), "resources"),
}


def __getattr__(name: str) -> object:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'jaula.cgroups' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"jaula.cgroups.{where}"), name)


__all__ = [
    "Cgroup", "CgroupFs", "open_cgroup", "reopen", "Hierarchy", "Layout", "probe",
    "Resources", "Memory", "Cpu", "Pids", "BlockIO", "WeightDevice", "ThrottleDevice", "HugepageLimit",
    "Network", "InterfacePriority", "DeviceRule", "Counter", "Stats", "beancounters",
    "shares_to_weight", "shares_to_weight_quadratic", "weight_to_shares", "blkio_weight_to_io_weight",
    "swap_v2", "cpus_to_quota", "quota_to_cpus",
]
