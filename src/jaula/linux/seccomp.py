"""seccomp(2): constants, a classic-BPF assembler with labels, filter install and user notification.

No policy here: `jaula.oci.seccomp` decides what a filter says; this module only builds and loads it.
We compile BPF ourselves (no libseccomp binding), so the assembler resolves labels and turns
conditional jumps that cannot reach their target (8-bit offsets) into JA trampolines (32-bit).
"""

from __future__ import annotations

import errno
import fcntl
import struct
import sys

from jaula.errors import SyscallError
from jaula.linux import libc
from jaula.linux.syscalls_table import TABLES
from jaula.record import Record

# seccomp(2) operations and SECCOMP_SET_MODE_FILTER flags (include/uapi/linux/seccomp.h)
SECCOMP_SET_MODE_STRICT = 0
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4  # needed with TSYNC | NEW_LISTENER, else EINVAL
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5  # needs NEW_LISTENER

# Filter return values, most to least severe; the low 16 bits (SECCOMP_RET_DATA) carry an errno or a tag.
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_DATA = 0x0000FFFF

# AUDIT_ARCH_* (include/uapi/linux/audit.h): EM_* | 64BIT 0x80000000 | LE 0x40000000
AUDIT_ARCH_64BIT = 0x80000000
AUDIT_ARCH_LE = 0x40000000
AUDIT_ARCH_CONVENTION_MIPS64_N32 = 0x20000000
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028
AUDIT_ARCH_ARMEB = 0x00000028
AUDIT_ARCH_MIPS = 0x00000008
AUDIT_ARCH_MIPSEL = 0x40000008
AUDIT_ARCH_MIPS64 = 0x80000008
AUDIT_ARCH_MIPSEL64 = 0xC0000008
AUDIT_ARCH_MIPS64N32 = 0xA0000008
AUDIT_ARCH_MIPSEL64N32 = 0xE0000008
AUDIT_ARCH_PPC = 0x00000014
AUDIT_ARCH_PPC64 = 0x80000015
AUDIT_ARCH_PPC64LE = 0xC0000015
AUDIT_ARCH_S390 = 0x00000016
AUDIT_ARCH_S390X = 0x80000016
AUDIT_ARCH_PARISC = 0x0000000F
AUDIT_ARCH_PARISC64 = 0x8000000F
AUDIT_ARCH_RISCV64 = 0xC00000F3
AUDIT_ARCH_LOONGARCH64 = 0xC0000102
AUDIT_ARCH_M68K = 0x00000004
AUDIT_ARCH_SH = 0x0000002A
AUDIT_ARCH_SHEL = 0x4000002A

X32_SYSCALL_BIT = 0x40000000  # x32 calls reach the filter as AUDIT_ARCH_X86_64 with this bit in nr


class Abi(Record):
    """One syscall ABI a filter may see: its AUDIT_ARCH, its syscall table, whether arguments are 64-bit.

    32-bit ABIs (x32 included) compare only the low word of an argument, as libseccomp does.
    """

    audit: int
    table: str | None  # None: an ABI libseccomp names but we have no syscall table for
    wide: bool = True

    @property
    def little_endian(self) -> bool:
        return bool(self.audit & AUDIT_ARCH_LE)


# By libseccomp's (and the OCI spec's) names.
ABIS: dict[str, Abi] = {
    "SCMP_ARCH_X86": Abi(AUDIT_ARCH_I386, "x86", wide=False), "SCMP_ARCH_X86_64": Abi(AUDIT_ARCH_X86_64, "x86_64"),
    "SCMP_ARCH_X32": Abi(AUDIT_ARCH_X86_64, "x32", wide=False), "SCMP_ARCH_ARM": Abi(AUDIT_ARCH_ARM, "arm", wide=False),
    "SCMP_ARCH_AARCH64": Abi(AUDIT_ARCH_AARCH64, "aarch64"),
    "SCMP_ARCH_MIPS": Abi(AUDIT_ARCH_MIPS, None), "SCMP_ARCH_MIPS64": Abi(AUDIT_ARCH_MIPS64, None),
    "SCMP_ARCH_MIPS64N32": Abi(AUDIT_ARCH_MIPS64N32, None), "SCMP_ARCH_MIPSEL": Abi(AUDIT_ARCH_MIPSEL, None),
    "SCMP_ARCH_MIPSEL64": Abi(AUDIT_ARCH_MIPSEL64, None), "SCMP_ARCH_MIPSEL64N32": Abi(AUDIT_ARCH_MIPSEL64N32, None),
    "SCMP_ARCH_PPC": Abi(AUDIT_ARCH_PPC, None), "SCMP_ARCH_PPC64": Abi(AUDIT_ARCH_PPC64, None),
    "SCMP_ARCH_PPC64LE": Abi(AUDIT_ARCH_PPC64LE, None), "SCMP_ARCH_S390": Abi(AUDIT_ARCH_S390, None),
    "SCMP_ARCH_S390X": Abi(AUDIT_ARCH_S390X, None), "SCMP_ARCH_PARISC": Abi(AUDIT_ARCH_PARISC, None),
    "SCMP_ARCH_PARISC64": Abi(AUDIT_ARCH_PARISC64, None), "SCMP_ARCH_RISCV64": Abi(AUDIT_ARCH_RISCV64, None),
    "SCMP_ARCH_LOONGARCH64": Abi(AUDIT_ARCH_LOONGARCH64, None), "SCMP_ARCH_M68K": Abi(AUDIT_ARCH_M68K, None),
    "SCMP_ARCH_SH": Abi(AUDIT_ARCH_SHEL, None), "SCMP_ARCH_SHEB": Abi(AUDIT_ARCH_SH, None),
}
# platform.machine() -> the native ABI
MACHINES = {
    "x86_64": "SCMP_ARCH_X86_64", "amd64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64",
    "arm64": "SCMP_ARCH_AARCH64", "i386": "SCMP_ARCH_X86", "i486": "SCMP_ARCH_X86", "i586": "SCMP_ARCH_X86",
    "i686": "SCMP_ARCH_X86", "x86": "SCMP_ARCH_X86", "armv6l": "SCMP_ARCH_ARM", "armv7l": "SCMP_ARCH_ARM",
    "armv8l": "SCMP_ARCH_ARM", "arm": "SCMP_ARCH_ARM",
}

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4
SECCOMP_DATA_IP = 8
SECCOMP_DATA_ARGS = 16
SECCOMP_DATA_SIZE = 64

# Classic BPF opcodes (include/uapi/linux/filter.h); seccomp accepts only a subset.
BPF_LD_W_ABS = 0x20  # A <- seccomp_data[k]
BPF_ALU_AND_K = 0x54  # A <- A & k
BPF_JMP_JA = 0x05
BPF_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGT = 0x25
BPF_JGE = 0x35
BPF_JSET = 0x45
BPF_RET_K = 0x06
BPF_MAXINSNS = 4096
_INSN = struct.Struct("=HBBI")  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k

# ioctls on the listener fd: _IOWR('!', 0, struct seccomp_notif) and friends
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
_NOTIF = struct.Struct("=QII iI Q 6Q")  # id, pid, flags, data{nr, arch, ip, args[6]}: 80 bytes
_NOTIF_RESP = struct.Struct("=QqiI")  # id, val, error, flags: 24 bytes


libc.ready_for_seccomp()  # this module is imported before pivot_root; filters are loaded after it


def install_filter(prog: bytes, flags: int = 0) -> int:
    """Load a filter on the calling thread (or all threads with TSYNC).

    Needs no_new_privs or CAP_SYS_ADMIN. Returns the listener fd when NEW_LISTENER is in `flags`, else 0.
    """
    if not prog or len(prog) % _INSN.size or len(prog) // _INSN.size > BPF_MAXINSNS:
        raise ValueError(f"a seccomp program is 1..{BPF_MAXINSNS} instructions of {_INSN.size} bytes, not {len(prog)} bytes")
    ret = libc.seccomp_filter(flags, prog)
    if ret < 0:
        raise SyscallError("seccomp", -ret, f"filter of {len(prog) // _INSN.size} instructions, flags {flags:#x}")
    return ret if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER else 0


def action_available(action: int) -> bool:
    """Whether this kernel knows a SECCOMP_RET_* action (SECCOMP_GET_ACTION_AVAIL)."""
    value = bytearray((action & 0xFFFFFFFF).to_bytes(4, sys.byteorder))  # u32, read by the kernel
    return libc.raw(libc.NR["seccomp"], SECCOMP_GET_ACTION_AVAIL, 0, value) >= 0


def flag_supported(flag: int) -> bool:
    """Whether this kernel takes a SECCOMP_FILTER_FLAG_*: with no program it answers EFAULT, not EINVAL (as runc probes)."""
    if flag & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
        flag |= SECCOMP_FILTER_FLAG_NEW_LISTENER  # EINVAL alone
    ret = libc.raw(libc.NR["seccomp"], SECCOMP_SET_MODE_FILTER, flag, None)
    return ret == -errno.EFAULT  # >= 0 is unreachable: a NULL program never loads


def syscall_numbers(arch: str) -> dict[str, int]:
    """Name -> number for one ABI: "x86_64", "x86", "x32" (numbers carry X32_SYSCALL_BIT), "aarch64", "arm"."""
    try:
        return TABLES[arch]
    except KeyError:
        raise ValueError(f"no syscall table for {arch!r}; known: {', '.join(TABLES)}") from None


class Notification(Record):
    """One struct seccomp_notif: a syscall of `pid` waiting for the supervisor's answer."""

    id: int
    pid: int
    flags: int
    nr: int
    arch: int
    instruction_pointer: int
    args: tuple[int, ...]


def notif_recv(listener_fd: int) -> Notification:
    """Block until a filtered syscall needs an answer (SECCOMP_IOCTL_NOTIF_RECV)."""
    buf = bytearray(_NOTIF.size)  # the kernel wants it zeroed
    try:
        fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    except OSError as e:
        raise SyscallError("ioctl SECCOMP_IOCTL_NOTIF_RECV", e.errno or 0, f"fd {listener_fd}") from None
    nid, pid, flags, nr, arch, ip, *args = _NOTIF.unpack(buf)
    return Notification(nid, pid, flags, nr, arch, ip, tuple(args))


def notif_send(listener_fd: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> None:
    """Answer a notification: the syscall returns `val`, or fails with -`error` (a negative errno)."""
    buf = bytearray(_NOTIF_RESP.pack(notif_id, val, error, flags))
    try:
        fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_SEND, buf, True)
    except OSError as e:
        raise SyscallError("ioctl SECCOMP_IOCTL_NOTIF_SEND", e.errno or 0, f"fd {listener_fd} id {notif_id}") from None


class _Insn(Record):
    code: int
    k: int = 0
    jt: str | None = None  # label; None: the next instruction
    jf: str | None = None
    target: str | None = None  # for JA


# op -> (the jump testing the low word, whether that jump being taken means the condition holds)
_LOW_WORD = {
    "eq": (BPF_JEQ, True), "masked_eq": (BPF_JEQ, True), "ne": (BPF_JEQ, False), "gt": (BPF_JGT, True),
    "ge": (BPF_JGE, True), "lt": (BPF_JGE, False), "le": (BPF_JGT, False),
}


class Program:
    """A classic BPF program written with symbolic labels; `assemble()` lays it out.

    Conditional jumps hold 8-bit offsets; a jump that cannot reach its label goes through a JA
    placed right after it (32-bit offset), as many rounds as it takes for every offset to fit.
    """

    def __init__(self) -> None:
        self._items: list[_Insn | str] = []  # str: a label placed before the next instruction
        self._n = 0

    def new_label(self, hint: str = "L") -> str:
        self._n += 1
        return f"{hint}{self._n}"

    def place(self, label: str) -> None:
        self._items.append(label)

    def load(self, offset: int) -> None:
        """A <- the 32-bit word at `offset` in struct seccomp_data."""
        self._items.append(_Insn(BPF_LD_W_ABS, offset))

    def and_(self, k: int) -> None:
        self._items.append(_Insn(BPF_ALU_AND_K, k & 0xFFFFFFFF))

    def jump_if(self, code: int, k: int, jt: str | None, jf: str | None) -> None:
        """Go to `jt` if A <op> k (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET; unsigned), else `jf`."""
        self._items.append(_Insn(code, k & 0xFFFFFFFF, jt, jf))

    def goto(self, label: str) -> None:
        self._items.append(_Insn(BPF_JMP_JA, target=label))

    def ret(self, k: int) -> None:
        self._items.append(_Insn(BPF_RET_K, k & 0xFFFFFFFF))

    def test_arg(self, abi: Abi, index: int, op: str, value: int, value_two: int, miss: str) -> None:
        """Fall through when args[index] <op> value holds, else go to `miss`. Clobbers A.

        op: eq ne lt le ge gt (unsigned), or masked_eq: (arg & value) == value_two. A 64-bit argument
        is compared as two words, high first: the high words decide unless they are equal.
        """
        base = SECCOMP_DATA_ARGS + 8 * index
        lo_at, hi_at = (base, base + 4) if abi.little_endian else (base + 4, base)
        mask, datum = (value, value_two) if op == "masked_eq" else ((1 << 64) - 1, value)
        code, taken_holds = _LOW_WORD[op]
        ok = self.new_label("ok")
        if abi.wide:
            self.load(hi_at)
            if op == "masked_eq":
                self.and_(mask >> 32)
            if op in ("eq", "masked_eq"):
                self.jump_if(BPF_JEQ, datum >> 32, None, miss)
            elif op == "ne":
                self.jump_if(BPF_JEQ, datum >> 32, None, ok)
            else:
                greater = op in ("gt", "ge")
                self.jump_if(BPF_JGT, datum >> 32, ok if greater else miss, None)
                self.jump_if(BPF_JEQ, datum >> 32, None, miss if greater else ok)
        self.load(lo_at)
        if op == "masked_eq":
            self.and_(mask & 0xFFFFFFFF)
        if taken_holds:
            self.jump_if(code, datum & 0xFFFFFFFF, None, miss)
        else:
            self.jump_if(code, datum & 0xFFFFFFFF, miss, None)
        self.place(ok)

    def _positions(self) -> tuple[list[_Insn], dict[str, int]]:
        insns: list[_Insn] = []
        where: dict[str, int] = {}
        for it in self._items:
            if isinstance(it, str):
                where[it] = len(insns)
            else:
                insns.append(it)
        return insns, where

    def _relax(self) -> bool:
        """Put trampolines behind conditional jumps that cannot reach; False when every jump fits.

        Fixes found in one pass are applied back to front so earlier indices stay valid; offsets
        they lengthen are caught by the next pass.
        """
        where = self._positions()[1]
        far: list[tuple[int, list[str]]] = []
        pos = -1
        for i, it in enumerate(self._items):
            if isinstance(it, str):
                continue
            pos += 1
            if it.code in (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET):
                sides = [s for s in ("jt", "jf") if getattr(it, s) is not None and where[getattr(it, s)] - pos - 1 > 255]
                if sides:
                    far.append((i, sides))
        for i, sides in reversed(far):
            it = self._items[i]
            assert isinstance(it, _Insn)
            added: list[_Insn | str] = []
            for side in sides:
                hop = self.new_label("far")
                added += [hop, _Insn(BPF_JMP_JA, target=getattr(it, side))]
                setattr(it, side, hop)
            for side in ("jt", "jf"):
                if getattr(it, side) is None:  # the fall-through now lies past the trampolines
                    after = self.new_label("next")
                    added.append(after)
                    setattr(it, side, after)
            self._items[i + 1:i + 1] = added
        return bool(far)

    def assemble(self) -> bytes:
        """The struct sock_filter array; raises ValueError for a label never placed or a backward jump."""
        try:
            while self._relax():
                pass
        except KeyError as e:
            raise ValueError(f"BPF label {e.args[0]} is used but never placed") from None
        insns, where = self._positions()
        out = bytearray()
        for pc, it in enumerate(insns):
            def off(label: str | None) -> int:
                if label is None:
                    return 0
                if label not in where:
                    raise ValueError(f"BPF label {label} is used but never placed")
                d = where[label] - pc - 1
                if d < 0:
                    raise ValueError(f"BPF jump from {pc} to {label} goes backwards")
                return d
            if it.code == BPF_JMP_JA:
                out += _INSN.pack(it.code, 0, 0, off(it.target))
            else:
                out += _INSN.pack(it.code, off(it.jt), off(it.jf), it.k)
        return bytes(out)


def disassemble(prog: bytes) -> list[str]:
    """One line per instruction, for logs and failing tests."""
    names = {BPF_JEQ: "jeq", BPF_JGT: "jgt", BPF_JGE: "jge", BPF_JSET: "jset"}
    lines = []
    for pc, (code, jt, jf, k) in enumerate(_INSN.iter_unpack(prog)):
        if code == BPF_LD_W_ABS:
            text = f"ld [{k}]"
        elif code == BPF_ALU_AND_K:
            text = f"and #{k:#x}"
        elif code == BPF_JMP_JA:
            text = f"ja {pc + 1 + k}"
        elif code == BPF_RET_K:
            text = f"ret #{k:#x}"
        elif code in names:
            text = f"{names[code]} #{k:#x} {pc + 1 + jt} {pc + 1 + jf}"
        else:
            text = f"code {code:#x} jt {jt} jf {jf} k {k:#x}"
        lines.append(f"{pc:4d}: {text}")
    return lines
