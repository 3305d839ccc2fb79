"""Instance settings: one declared table (Ganeti's PARAMETERS habit), checked all at once.

Each key says its type, its default, the check of its syntax (with the message a user reads)
and whether a running instance takes a change at once (`live`). `validate` returns the
normalized values (sizes in bytes, cpus as a float, booleans as bool) or raises ConfigError
listing every problem; normalized values validate again unchanged, so a stored config can be
checked each time it is read. The CLI's help and the API schema are meant to come from `SETTINGS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jaula.errors import ConfigError
from jaula.record import Record

# free-form namespaces: user.<anything> (notes for people and scripts), environment.<NAME>
FREE_PREFIXES = ("user.", "environment.")

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_UNITS = {
    "": 1, "B": 1,
    "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
}
SIZE_HELP = "use a number with KiB, MiB, GiB (or kB, MB, GB), e.g. 512MiB"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_USER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class Setting(Record, frozen=True):
    """One instance setting. `parse(value)` returns the normalized value or raises ValueError
    whose text completes "KEY: ..."; `live`: a running instance takes a change at once."""

    key: str
    type: str                       # "size", "cpus", "int", "bool", "cpuset", "string"
    default: Any
    description: str
    parse: Callable[[Any], Any]
    live: bool = True


# --- syntax checks ----------------------------------------------------------------------------------------
def parse_size(value: Any, minimum: int = 1) -> int:
    """ "512MiB", "2GiB", "1.5G", "100MB" or a plain number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; {SIZE_HELP}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
        unit = _UNITS.get(m.group(2).upper()) if m else None
        if m is None or unit is None:
            raise ValueError(f"{value!r} is not a size; {SIZE_HELP}")
        n = int(float(m.group(1)) * unit) if "." in m.group(1) else int(m.group(1)) * unit
    if n < minimum:
        raise ValueError(f"{value!r} is too small: at least {format_size(minimum)}")
    return n


def format_size(n: int) -> str:
    """Bytes as the shortest exact binary unit: 536870912 -> "512MiB"."""
    if n == 0:
        return "0"
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def _size(minimum: int) -> Callable[[Any], int]:
    return lambda v: parse_size(v, minimum)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{value!r} is not a boolean; use true or false")


def parse_cpus(value: Any) -> float:
    """ "1.5" cpus (a quota: 1.5 cpus' worth of time per period), from 0.01 to 1024."""
    try:
        if isinstance(value, bool):
            raise ValueError
        n = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number of cpus; use e.g. 1, 1.5 or 0.25") from None
    if not 0.01 <= n <= 1024:
        raise ValueError(f"{value!r} is out of range; use from 0.01 to 1024 cpus")
    return round(n, 3)


def _int_range(lo: int, hi: int, what: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        try:
            if isinstance(value, (bool, float)):
                raise ValueError
            n = int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError, AttributeError):
            raise ValueError(f"{value!r} is not a whole number; use {what} from {lo} to {hi}") from None
        if not lo <= n <= hi:
            raise ValueError(f"{n} is out of range; use {what} from {lo} to {hi}")
        return n
    return check


def parse_cpuset(value: Any) -> str:
    """ "0-3,6" (cpu numbers and ranges, as cpuset.cpus takes them) -> the same text, canonical."""
    help_ = "use cpu numbers and ranges such as 0-3,6"
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a cpu list; {help_}")
    text = str(value).replace(" ", "")
    parts = []
    for part in text.split(","):
        m = re.fullmatch(r"([0-9]{1,4})(?:-([0-9]{1,4}))?", part)
        if m is None:
            raise ValueError(f"{value!r} is not a cpu list; {help_}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{value!r}: range {part!r} runs backwards; {help_}")
        parts.append(f"{lo}-{hi}" if hi > lo else str(lo))
    return ",".join(parts)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    if "\0" in value:
        raise ValueError("contains a NUL character")
    return value


# --- the table ----------------------------------------------------------------------------------------------
DEFAULT_PROCESSES = 2048

SETTINGS: dict[str, Setting] = {s.key: s for s in (
    Setting("limits.memory", "size", None, "memory limit (RAM), e.g. 512MiB or 2GiB; unset: no limit", _size(4 << 20)),
    Setting("limits.memory.swap", "size", None,
            "swap allowed beyond limits.memory (needs it); unset: as much as the host has", _size(0)),
    Setting("limits.cpu", "cpus", None, "cpu time as a number of cpus, e.g. 1.5 (a quota per 100 ms period)", parse_cpus),
    Setting("limits.cpu.weight", "int", None, "share of cpu time under contention, 1 to 10000 (default 100)",
            _int_range(1, 10000, "a weight")),
    Setting("limits.cpuset", "cpuset", None, "the cpus the instance may run on, e.g. 0-1,3", parse_cpuset),
    Setting("limits.processes", "int", DEFAULT_PROCESSES, "most processes and threads at once (also each uid's RLIMIT_NPROC, set at start)",
            _int_range(16, 4194304, "a number of processes")),
    Setting("limits.disk", "size", None, "disk quota of the root (loop and btrfs pools), e.g. 10GiB",
            _size(32 << 20)),
    Setting("security.privileged", "bool", False,
            "no user namespace: root inside is root on the host (unsafe; only for trusted workloads)",
            parse_bool, live=False),
    Setting("security.nesting", "bool", False,
            "allow running containers inside: its cgroups delegated, /sys/fs/cgroup and /proc/sys writable, "
            "a spare unmasked proc and sysfs under /dev/.jaula (docs/honest-proc.md)", parse_bool, live=False),
    Setting("security.lxcfs", "bool", True,
            "lxcfs's /proc files (meminfo, cpuinfo, stat, uptime...) over the instance's, so free, top and "
            "uptime show its limits; when jaulad has no lxcfs running the instance starts without them",
            parse_bool, live=False),
    Setting("security.timens", "bool", True,
            "system instances: a time namespace whose boot clock starts at 0 at each start, so uptime "
            "(sysinfo, /proc/uptime) is the instance's; the monotonic clock stays the host's",
            parse_bool, live=False),
    Setting("security.syscalls.intercept.sysinfo", "bool", True,
            "sysinfo(2) answered by jaulad's console keeper from the instance's cgroup (memory and swap "
            "limits, usage, tasks) and time namespace, so busybox free and uptime show the instance's "
            "figures (docs/honest-proc.md); without a keeper running the instance starts without it",
            parse_bool, live=False),
    Setting("boot.autostart", "bool", False, "start the instance when jaulad starts", parse_bool),
    # networks (jaula.network.config): the instance's own network namespace, or the host's
    Setting("network.mode", "string", "private",
            "private: its own network stack with its nic.* NICs; host: the host's (privileged only; unsafe)",
            lambda v: _one_of(v, ("private", "host")), live=False),
)}
FREE_HELP = {"user.*": "free notes for people and scripts", "environment.*": "an environment variable of the instance",
             "nic.<name>.*": "a NIC of the instance: type, network, parent, ipv4, ipv6, mac, mtu, "
                             "limits.ingress, limits.egress, routes (docs/network.md)"}


def known_keys() -> list[str]:
    return list(SETTINGS) + list(FREE_HELP)


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Every key checked; the normalized config, or ConfigError listing each problem.

    A value of None or "" means "unset": the key is left out of the result.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of setting to value, not {type(config).__name__}")
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key in sorted(config, key=str):
        value = config[key]
        if not isinstance(key, str):
            problems.append(f"{key!r}: setting names are strings")
            continue
        if value is None or value == "":
            continue
        try:
            out[key] = _check_one(key, value)
        except ValueError as e:
            problems.append(f"{key}: {e}")
        except KeyError:
            problems.append(_unknown(key))
    if "limits.memory.swap" in out and "limits.memory" not in out:
        problems.append("limits.memory.swap: needs limits.memory (swap is allowed beyond the memory limit)")
    problems += _network_problems(out)
    if problems:
        raise ConfigError(problems)
    return out


def _network_problems(out: dict[str, Any]) -> list[str]:
    """NICs that do not fit together; host networking only for a privileged instance, without NICs."""
    if not any(k.startswith("nic.") for k in out) and out.get("network.mode") != "host":
        return []
    from jaula.network import config as netconfig

    problems = netconfig.nic_problems(out)
    if out.get("network.mode") == "host":
        if out.get("security.privileged") is not True:
            problems.append("network.mode: host networking shares the host's network stack: only for a "
                            "privileged instance (security.privileged=true)")
        used = [n for n, f in netconfig.nics(out).items() if netconfig.in_use(f)]
        if used:
            problems.append(f"network.mode: an instance on the host's network has no NICs of its own: set "
                            f"nic.{used[0]}.type=none, or network.mode=private")
    return problems


def _one_of(value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{value!r} is not one of: {', '.join(choices)}")
    return value


def _check_one(key: str, value: Any) -> Any:
    if key.startswith("nic."):
        from jaula.network import config as netconfig

        return netconfig.check_nic_key(key, value)
    if key.startswith("user."):
        if not _USER_KEY.match(key[5:]):
            raise ValueError("use user.NAME with letters, digits, '.', '_' or '-' after 'user.'")
        return _string(value)
    if key.startswith("environment."):
        if not _ENV_NAME.match(key[12:]):
            raise ValueError("use environment.NAME with a variable name of letters, digits and '_' "
                             "(not starting with a digit)")
        return _string(value)
    return SETTINGS[key].parse(value)


def _unknown(key: str) -> str:
    import difflib

    near = difflib.get_close_matches(key, list(SETTINGS), n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return f"{key}: unknown setting{hint}; known settings: {', '.join(known_keys())}"


def effective(config: dict[str, Any]) -> dict[str, Any]:
    """A validated config with the defaults of the keys it leaves unset."""
    out = {k: s.default for k, s in SETTINGS.items() if s.default is not None}
    out.update(config)
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose effective value differs between two validated configs."""
    a, b = effective(old), effective(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def is_live(key: str) -> bool:
    """Whether a running instance can take a change of `key` (free keys always can)."""
    if key.startswith("nic."):
        return key.split(".", 2)[-1] in ("limits.ingress", "limits.egress")
    s = SETTINGS.get(key)
    return s is None or s.live


def environment(config: dict[str, Any]) -> list[str]:
    """The instance's environment.* settings as NAME=VALUE lines."""
    return [f"{k[12:]}={v}" for k, v in sorted(config.items()) if k.startswith("environment.")]


def show(key: str, value: Any) -> str:
    """A normalized value as a person writes it (sizes back in binary units)."""
    s = SETTINGS.get(key)
    if s is not None and s.type == "size" and isinstance(value, int):
        return format_size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
