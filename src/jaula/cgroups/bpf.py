"""Device rules on cgroup v2 as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE), encoded and loaded here.

cgroup v2 has no devices controller: the kernel asks a program attached to the cgroup. The program is
built as runc's devicefilter builds it: the rules in reverse order, the first match returns, so the
last matching rule of the OCI list wins; no match denies. Loaded with bpf(2) through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from jaula.cgroups.resources import DeviceRule
from jaula.errors import SyscallError
from jaula.record import Record

# linux/bpf_common.h and linux/bpf.h
BPF_LDX, BPF_ALU, BPF_JMP = 0x01, 0x04, 0x05
BPF_W, BPF_MEM = 0x00, 0x60
BPF_K, BPF_X = 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JA, BPF_JEQ, BPF_JNE, BPF_EXIT = 0x00, 0x10, 0x50, 0x90
R0, R1, R2, R3, R4, R5 = range(6)

# struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32 major; u32 minor; }
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_TYPE = {"b": DEV_BLOCK, "c": DEV_CHAR}
_ACC = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}

BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 8, 9
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_QUERY = 13, 15, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI, BPF_F_REPLACE = 2, 4
PROG_NAME = b"jaula_dev"      # how a later process finds the program it must replace
_NR_BPF = {"x86_64": 321, "aarch64": 280}


class Insn(Record, frozen=True):
    """One eBPF instruction: opcode, registers, 16-bit offset, 32-bit immediate."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)


def ldx_w(dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off)


def alu32(op: int, dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm)


def mov32_reg(dst: int, src: int) -> Insn:
    return Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src)


def jne_imm(dst: int, imm: int, off: int) -> Insn:
    return Insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)


def jne_reg(dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_JMP | BPF_JNE | BPF_X, dst, src, off)


def exit_() -> Insn:
    return Insn(BPF_JMP | BPF_EXIT)


def encode(insns: list[Insn]) -> bytes:
    return b"".join(i.encode() for i in insns)


def device_program(rules: list[DeviceRule]) -> list[Insn]:
    """The filter for `rules` (OCI order). R2 type, R3 access, R4 major, R5 minor; R0 = 1 allows."""
    prog = [
        ldx_w(R2, R1, 0), alu32(BPF_AND, R2, 0xFFFF),   # type: low half of access_type
        ldx_w(R3, R1, 0), alu32(BPF_RSH, R3, 16),       # access: high half
        ldx_w(R4, R1, 4), ldx_w(R5, R1, 8),
    ]
    for rule in reversed(rules):
        conds: list[Insn] = []    # each jumps to the next block when the rule does not match; off fixed below
        if rule.type != "a":
            conds.append(jne_imm(R2, _TYPE[rule.type], 0))
        mask = sum(_ACC[c] for c in set(rule.access))
        if mask != ACC_MKNOD | ACC_READ | ACC_WRITE:
            # match when every asked access is in the rule: (access & mask) == access; R1 is free by now
            conds += [mov32_reg(R1, R3), alu32(BPF_AND, R1, mask), jne_reg(R1, R3, 0)]
        if rule.major is not None:
            conds.append(jne_imm(R4, rule.major, 0))
        if rule.minor is not None:
            conds.append(jne_imm(R5, rule.minor, 0))
        block = conds + [alu32(BPF_MOV, R0, 1 if rule.allow else 0), exit_()]
        for j, insn in enumerate(block):
            if insn.code & 0x07 == BPF_JMP and insn.code != BPF_JMP | BPF_EXIT:
                block[j] = Insn(insn.code, insn.dst, insn.src, len(block) - j - 1, insn.imm)
        prog += block
        if not conds:
            return prog           # matches everything: what would follow is unreachable (the verifier refuses that)
    return prog + [alu32(BPF_MOV, R0, 0), exit_()]


# ---- bpf(2) ----------------------------------------------------------------------------------------

class _Load(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class _Attach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("attach_flags", ctypes.c_uint32), ("replace_bpf_fd", ctypes.c_uint32)]


class _Query(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32), ("query_flags", ctypes.c_uint32),
                ("attach_flags", ctypes.c_uint32), ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32)]


class _ById(ctypes.Structure):
    _fields_ = [("prog_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _Info(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise SyscallError("bpf", errno.ENOSYS, f"{what}: unknown syscall number on {os.uname().machine}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        raise SyscallError("bpf", ctypes.get_errno(), what)
    return ret


def load(insns: list[Insn]) -> int:
    """BPF_PROG_LOAD; on refusal, load again with the verifier's log to put it in the error."""
    code = encode(insns)
    buf = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"Apache-2.0")
    attr = _Load(prog_type=BPF_PROG_TYPE_CGROUP_DEVICE, insn_cnt=len(insns),
                 insns=ctypes.addressof(buf), license=ctypes.addressof(lic), prog_name=PROG_NAME,
                 expected_attach_type=BPF_CGROUP_DEVICE)
    try:
        return bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD device filter")
    except SyscallError as e:
        log = ctypes.create_string_buffer(65536)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            return bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD device filter")
        except SyscallError:
            text = log.value.decode(errors="replace").strip()
            raise SyscallError("bpf", e.errno or errno.EINVAL, f"BPF_PROG_LOAD device filter; verifier: {text[-2000:]}") from None


def _attached(dirfd: int, where: str) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    q = _Query(target_fd=dirfd, attach_type=BPF_CGROUP_DEVICE, prog_ids=ctypes.addressof(ids), prog_cnt=64)
    bpf(BPF_PROG_QUERY, q, f"BPF_PROG_QUERY {where!r}")
    return list(ids[: q.prog_cnt])


def _ours(dirfd: int, where: str) -> list[int]:
    """fds of the programs on the cgroup that jaula attached (found by name: a later process updates)."""
    fds = []
    for pid in _attached(dirfd, where):
        try:
            fd = bpf(BPF_PROG_GET_FD_BY_ID, _ById(prog_id=pid), f"BPF_PROG_GET_FD_BY_ID {pid}")
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                continue       # detached meanwhile
            raise
        info = ctypes.create_string_buffer(128)
        bpf(BPF_OBJ_GET_INFO_BY_FD, _Info(bpf_fd=fd, info_len=128, info=ctypes.addressof(info)), "BPF_OBJ_GET_INFO_BY_FD")
        if info.raw[64:80].rstrip(b"\0") == PROG_NAME:
            fds.append(fd)
        else:
            os.close(fd)
    return fds


def set_device_filter(cgroup_dir: str, rules: list[DeviceRule]) -> None:
    """Attach the program for `rules` to the cgroup and take jaula's previous one away."""
    dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    old: list[int] = []
    prog = -1
    try:
        old = _ours(dirfd, cgroup_dir)
        prog = load(device_program(rules))
        where = f"BPF_PROG_ATTACH device filter to {cgroup_dir!r}"
        if len(old) == 1:
            try:   # atomic swap (Linux 5.6): no moment with both programs, or none
                bpf(BPF_PROG_ATTACH, _Attach(dirfd, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI | BPF_F_REPLACE, old[0]), where)
                return
            except SyscallError as e:
                if e.errno != errno.EINVAL:
                    raise
        bpf(BPF_PROG_ATTACH, _Attach(dirfd, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0), where)
        for fd in old:
            bpf(BPF_PROG_DETACH, _Attach(dirfd, fd, BPF_CGROUP_DEVICE, 0, 0), f"BPF_PROG_DETACH old device filter from {cgroup_dir!r}")
    finally:
        for fd in old + ([prog] if prog >= 0 else []):
            os.close(fd)
        os.close(dirfd)


def device_filters(cgroup_dir: str) -> int:
    """How many device programs are attached to the cgroup (for tests and `jaula info`)."""
    dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return len(_attached(dirfd, cgroup_dir))
    finally:
        os.close(dirfd)
