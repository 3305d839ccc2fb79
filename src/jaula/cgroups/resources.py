"""The OCI `linux.resources` object as dataclasses, validated all at once, and the v1 <-> v2 conversions.

A field left as None was not given: `update` leaves it alone. Unknown properties are ignored, as the
OCI spec requires of runtimes (config.md, "Extensibility").
"""

from __future__ import annotations

import math

from jaula.errors import ConfigError
from jaula.record import Record


class Memory(Record):
    limit: int | None = None            # bytes, -1 unlimited
    reservation: int | None = None      # soft limit (v1) / memory.low (v2)
    swap: int | None = None             # memory+swap as on v1; -1 unlimited
    kernel: int | None = None           # deprecated by OCI and by Linux 5.16
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool | None = None
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


class Cpu(Record):
    shares: int | None = None
    quota: int | None = None            # microseconds per period, -1 unlimited
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


class Pids(Record):
    limit: int                          # -1 (or 0) unlimited


class WeightDevice(Record):
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


class ThrottleDevice(Record):
    major: int
    minor: int
    rate: int                           # bytes or operations per second; 0 removes the limit


class BlockIO(Record):
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: list[WeightDevice] = []
    throttle_read_bps_device: list[ThrottleDevice] = []
    throttle_write_bps_device: list[ThrottleDevice] = []
    throttle_read_iops_device: list[ThrottleDevice] = []
    throttle_write_iops_device: list[ThrottleDevice] = []


class HugepageLimit(Record):
    page_size: str                      # "2MB", "1GB", "64KB"
    limit: int


class InterfacePriority(Record):
    name: str
    priority: int


class Network(Record):
    class_id: int | None = None
    priorities: list[InterfacePriority] = []


class DeviceRule(Record):
    allow: bool
    type: str = "a"                     # "a" all, "c" char, "b" block
    major: int | None = None            # None: any
    minor: int | None = None
    access: str = "rwm"

    def v1_lines(self) -> list[str]:
        """The lines devices.allow / devices.deny take: "c 1:3 rwm"; "a" alone means every device.

        v1 reads "a" as "everything" whatever follows, so a type "a" rule narrowed by number or
        access is written as its char and block halves (the eBPF program of v2 means the same).
        """
        star = lambda n: "*" if n is None else str(n)  # noqa: E731
        if self.type == "a":
            if self.major is None and self.minor is None and self.access == "rwm":
                return ["a"]
            return [f"{t} {star(self.major)}:{star(self.minor)} {self.access}" for t in ("c", "b")]
        return [f"{self.type} {star(self.major)}:{star(self.minor)} {self.access}"]


class Resources(Record):
    memory: Memory | None = None
    cpu: Cpu | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = None
    hugepage_limits: list[HugepageLimit] = []
    network: Network | None = None
    devices: list[DeviceRule] | None = None     # None: leave the device policy as it is
    unified: dict[str, str] = {}

    @classmethod
    def from_oci(cls, d: object, where: str = "linux.resources") -> Resources:
        """Parse and check an OCI `linux.resources` object; ConfigError lists every problem."""
        from jaula.cgroups.ociparse import Parser

        p = Parser()
        res = p.resources(d, where)
        if p.problems:
            raise ConfigError(p.problems)
        return res


# ---- conversions ---------------------------------------------------------------------------------

def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000], runc's and crun's linear formula.

    It maps the v1 default 1024 to 39, not to v2's default 100. crun 1.23 moved to a quadratic
    curve in log space that maps 2->1, 1024->100, 262144->10000: see `shares_to_weight_quadratic`.
    """
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def shares_to_weight_quadratic(shares: int) -> int:
    """crun's newer conversion (containers/crun#1767): 10^((l^2 + 125 l) / 612 - 7/34), l = log2(shares)."""
    l2 = math.log2(shares)
    return min(10000, max(1, math.ceil(10 ** ((l2 * l2 + 125 * l2) / 612.0 - 7.0 / 34.0) - 1e-9)))


def weight_to_shares(weight: int) -> int:
    """The inverse of `shares_to_weight`, for showing a v2 weight to v1-minded users."""
    return 2 + ((weight - 1) * 262142) // 9999


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000] (runc's BlkioWeightToIOWeight)."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def swap_v2(limit: int | None, swap: int | None) -> int | None:
    """memory.swap.max from OCI's memory+swap: swap - limit; -1 is "max", None leaves it unset.

    As runc: an unlimited memory with no swap given means unlimited swap too.
    """
    if swap is None or swap == 0:
        return -1 if limit == -1 and swap is None else None
    if swap == -1:
        return -1
    if limit is None or limit == -1:
        raise ValueError("a swap limit needs a memory limit (OCI swap is memory+swap)")
    if swap < limit:
        raise ValueError(f"swap {swap} is below memory limit {limit} (OCI swap is memory+swap)")
    return swap - limit


def cpus_to_quota(cpus: float, period: int = 100000) -> tuple[int, int]:
    """"1.5 cpus" -> (quota, period) in microseconds: (150000, 100000)."""
    if not cpus > 0:
        raise ValueError(f"cpus {cpus!r} must be positive")
    return max(1000, round(cpus * period)), period


def quota_to_cpus(quota: int, period: int) -> float | None:
    """The inverse of `cpus_to_quota`; None when unlimited."""
    return None if quota < 0 or period <= 0 else quota / period


def max_text(n: int) -> str:
    """v2 spells "unlimited" as max."""
    return "max" if n < 0 else str(n)


def parse_max(text: str) -> int:
    """The reverse: "max" -> -1."""
    text = text.strip()
    return -1 if text == "max" else int(text)
