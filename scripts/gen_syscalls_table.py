#!/usr/bin/env python3
"""Generate src/jaula/linux/syscalls_table.py: syscall name -> number, per architecture.

seccomp filters match syscall numbers, and a config names syscalls: we need every ABI's table,
not only the one Python runs on. Sources:
- x86_64, x86 (i386), x32: the kernel's uapi headers (/usr/include/<triplet>/asm/unistd_{64,32,x32}.h).
- aarch64: asm-generic/unistd.h run through cpp with the switches arm64's uapi <asm/unistd.h> sets.
- arm (EABI): linux's arch/arm/tools/syscall.tbl, given with --arm-tbl (Debian ships no arm headers on
  x86_64); without it the ARM table of the existing generated module is kept.
Newer syscalls than the headers are appended from NEWER below (numbers from 424 on are shared by
every architecture but alpha; check arch/x86/entry/syscalls/syscall_64.tbl when adding).

Usage: scripts/gen_syscalls_table.py [--include /usr/include] [--arm-tbl syscall.tbl] [-o OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

X32_BIT = 0x40000000
ARM_NR_BASE = 0x0F0000  # __ARM_NR_BASE: ARM's private calls (cacheflush, set_tls...)

# The headers here are from linux 6.1; these came later (up to linux 6.18).
NEWER_COMMON = {
    "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453, "futex_wake": 454, "futex_wait": 455,
    "futex_requeue": 456, "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460, "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464,
    "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469,
}
NEWER_X86_64 = {"uretprobe": 335, "uprobe": 336}  # "common" in syscall_64.tbl: x86_64 and x32
# The unified 32-bit time64 calls (403..423) and everything from 424 on are the same on all
# 32-bit ABIs, so ARM takes them from the i386 header.
SHARED_32BIT_FROM = 403
ARM_PRIVATE = {"breakpoint": 1, "cacheflush": 2, "usr26": 3, "usr32": 4, "set_tls": 5, "get_tls": 6}
ARM_ALIASES = {"sync_file_range2": "arm_sync_file_range"}
# arch/arm64/include/uapi/asm/unistd.h (and the "64, renameat, rlimit, memfd_secret" ABIs of 6.11+)
ARM64_DEFINES = [
    "__ARCH_WANT_RENAMEAT", "__ARCH_WANT_NEW_STAT", "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS", "__ARCH_WANT_SYS_CLONE3", "__ARCH_WANT_MEMFD_SECRET",
]

_DEFINE = re.compile(r"^#define\s+__NR_(\w+)\s+(?:\(__X32_SYSCALL_BIT\s*\+\s*)?(\d+)\)?\s*$")


def parse_unistd(path: Path, base: int = 0) -> dict[str, int]:
    """`#define __NR_name N` (or `(__X32_SYSCALL_BIT + N)`) lines of an x86 uapi header."""
    table: dict[str, int] = {}
    for line in path.read_text().splitlines():
        m = _DEFINE.match(line)
        if m:
            table[m.group(1)] = base + int(m.group(2))
    if not table:
        sys.exit(f"no syscalls found in {path}")
    return table


def parse_generic(include: Path) -> dict[str, int]:
    """asm-generic/unistd.h as arm64 sees it: let cpp resolve the __NR3264 and #ifdef layers."""
    with tempfile.TemporaryDirectory() as tmp:  # arm64's <asm/bitsperlong.h>, not the host's
        (Path(tmp) / "asm").mkdir()
        (Path(tmp) / "asm/bitsperlong.h").write_text("#define __BITS_PER_LONG 64\n")
        cmd = ["cpp", "-dM", "-nostdinc", "-I", tmp, "-I", str(include)] + [f"-D{d}" for d in ARM64_DEFINES]
        src = "#include <asm-generic/unistd.h>\n"
        out = subprocess.run(cmd + ["-"], input=src, capture_output=True, text=True, check=True).stdout
    raw = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].startswith(("__NR_", "__NR3264_")):
            raw[parts[1]] = parts[2]

    def value(name: str, depth: int = 0) -> int | None:
        v = raw.get(name)
        if v is None or depth > 4:
            return None
        return int(v) if v.isdigit() else value(v, depth + 1)

    table = {}
    for key in raw:
        if key.startswith("__NR_") and key not in ("__NR_syscalls", "__NR_arch_specific_syscall"):
            v = value(key)
            if v is not None:
                table[key[len("__NR_"):]] = v
    return table


def parse_tbl(path: Path, abis: set[str]) -> dict[str, int]:
    """A kernel syscall.tbl: `number abi name [entry...]`, keeping the given ABIs."""
    table = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and not parts[0].startswith("#") and parts[1] in abis:
            table[parts[2]] = int(parts[0])
    return table


def existing(out: Path, attr: str) -> dict[str, int]:
    spec = importlib.util.spec_from_file_location("_old_table", out)
    if spec is None or spec.loader is None or not out.exists():
        sys.exit(f"{out} does not exist: pass --arm-tbl")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(getattr(mod, attr))


def render(name: str, table: dict[str, int], hexa: bool = False) -> str:
    items = [f'"{k}": {hex(v) if hexa else v}' for k, v in sorted(table.items(), key=lambda kv: (kv[1], kv[0]))]
    lines, cur = [], "    "
    for it in items:
        if len(cur) + len(it) + 2 > 110:
            lines.append(cur.rstrip())
            cur = "    "
        cur += it + ", "
    lines.append(cur.rstrip())
    return f"{name}: dict[str, int] = {{\n" + "\n".join(lines) + "\n}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--include", default="/usr/include", type=Path)
    ap.add_argument("--triplet", default="x86_64-linux-gnu")
    ap.add_argument("--arm-tbl", type=Path, help="linux arch/arm/tools/syscall.tbl")
    ap.add_argument("-o", "--out", type=Path,
                    default=Path(__file__).resolve().parent.parent / "src/jaula/linux/syscalls_table.py")
    a = ap.parse_args()
    asm = a.include / a.triplet / "asm"

    x86_64 = parse_unistd(asm / "unistd_64.h") | NEWER_COMMON | NEWER_X86_64
    x86 = parse_unistd(asm / "unistd_32.h") | NEWER_COMMON
    x32 = parse_unistd(asm / "unistd_x32.h", X32_BIT)
    x32 |= {k: X32_BIT + v for k, v in (NEWER_COMMON | NEWER_X86_64).items()}
    aarch64 = parse_generic(a.include) | NEWER_COMMON
    if a.arm_tbl:
        arm = parse_tbl(a.arm_tbl, {"common", "eabi"})
        arm |= {k: v for k, v in x86.items() if v >= SHARED_32BIT_FROM and k not in arm}
        arm |= {k: ARM_NR_BASE + v for k, v in ARM_PRIVATE.items()}
        arm |= {alias: arm[real] for alias, real in ARM_ALIASES.items()}
    else:
        arm = existing(a.out, "ARM")

    header = (
        '"""Syscall name -> number for each ABI seccomp filters may see. GENERATED: do not edit.\n\n'
        "Made by scripts/gen_syscalls_table.py from the linux uapi headers (6.1) plus the calls of\n"
        "linux 6.2..6.18 listed in the script; x32 numbers carry __X32_SYSCALL_BIT (0x40000000).\n"
        '"""\n\n'
    )
    body = "\n".join([
        render("X86_64", x86_64), render("X86", x86), render("X32", x32, hexa=True),
        render("AARCH64", aarch64), render("ARM", arm),
        'TABLES: dict[str, dict[str, int]] = {"x86_64": X86_64, "x86": X86, "x32": X32, '
        '"aarch64": AARCH64, "arm": ARM}\n',
    ])
    a.out.write_text(header + body)
    print(f"wrote {a.out}: " + ", ".join(f"{n} {len(t)}" for n, t in
                                         [("x86_64", x86_64), ("x86", x86), ("x32", x32), ("aarch64", aarch64), ("arm", arm)]))


if __name__ == "__main__":
    main()
