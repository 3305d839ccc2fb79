"""A small eBPF interpreter for BPF_PROG_TYPE_CGROUP_DEVICE programs, with the verifier's first checks.

It runs exactly the instructions jaula's generator may emit and refuses anything else, so a new
instruction in the generator needs a matching line here (and a real-kernel run in the integration tests).
"""

from __future__ import annotations

import struct

from jaula.cgroups import bpf


class Verifier(Exception):
    pass


def run(prog: list[bpf.Insn], dev_type: int, access: int, major: int, minor: int) -> int:
    """Interpret the program on a bpf_cgroup_dev_ctx: the instructions our generator emits, no more."""
    check_cfg(prog)
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    regs[1] = 1 << 40            # a pointer: only loads through it are allowed
    init = {1, 10}
    pc = 0
    mask32, mask64 = 2**32 - 1, 2**64 - 1
    for _ in range(10000):
        i = prog[pc]
        cls, op, srcflag = i.code & 0x07, i.code & 0xF0, i.code & 0x08
        if cls == bpf.BPF_LDX and i.code == bpf.BPF_LDX | bpf.BPF_MEM | bpf.BPF_W:
            if regs[i.src] != 1 << 40 or i.off not in (0, 4, 8):
                raise Verifier(f"bad load at {pc}")
            regs[i.dst] = struct.unpack_from("<I", ctx, i.off)[0]
            init.add(i.dst)
        elif cls == bpf.BPF_ALU:
            if srcflag and i.src not in init:
                raise Verifier(f"R{i.src} read before write at {pc}")
            val = regs[i.src] if srcflag else i.imm & mask32
            if op == bpf.BPF_MOV:
                regs[i.dst] = val & mask32
            elif op == bpf.BPF_AND:
                regs[i.dst] = (regs[i.dst] & val) & mask32
            elif op == bpf.BPF_RSH:
                regs[i.dst] = (regs[i.dst] & mask32) >> val
            else:
                raise Verifier(f"unknown alu op {i.code:#x}")
            init.add(i.dst)
        elif cls == bpf.BPF_JMP:
            if op == bpf.BPF_EXIT:
                if 0 not in init:
                    raise Verifier("R0 unset at exit")
                return regs[0]
            b = regs[i.src] if srcflag else i.imm & mask64
            a = regs[i.dst]
            taken = {bpf.BPF_JA: True, bpf.BPF_JEQ: a == b, bpf.BPF_JNE: a != b}[op]
            if taken:
                pc += i.off
        else:
            raise Verifier(f"unknown instruction {i.code:#x} at {pc}")
        pc += 1
    raise Verifier("loop")


def check_cfg(prog: list[bpf.Insn]) -> None:
    """What the kernel verifier checks first: jumps in range, every instruction reachable, ends in exit."""
    seen, todo = set(), [0]
    while todo:
        pc = todo.pop()
        if pc in seen:
            continue
        if not 0 <= pc < len(prog):
            raise Verifier(f"jump out of range to {pc}")
        seen.add(pc)
        i = prog[pc]
        if i.code == bpf.BPF_JMP | bpf.BPF_EXIT:
            continue
        if i.code & 0x07 == bpf.BPF_JMP:
            todo.append(pc + 1 + i.off)
            if i.code & 0xF0 != bpf.BPF_JA:
                todo.append(pc + 1)
        else:
            todo.append(pc + 1)
    if len(seen) != len(prog):
        raise Verifier(f"unreachable insn {sorted(set(range(len(prog))) - seen)}")
