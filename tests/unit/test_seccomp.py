"""linux.seccomp: validation messages, and the compiled BPF run by a small interpreter.

The interpreter follows the kernel's classic BPF for seccomp (loads from struct seccomp_data, AND,
JEQ/JGT/JGE/JSET/JA, RET K), so rules, 64-bit argument halves, arch checks and far jumps are
checked exactly, without root.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import struct
import threading

import pytest

from jaula.errors import ConfigError
from jaula.linux import seccomp as sc
from jaula.oci import seccomp as oci
from jaula.oci.seccomp import Seccomp

X86_64 = sc.syscall_numbers("x86_64")
X86 = sc.syscall_numbers("x86")
X32 = sc.syscall_numbers("x32")
AARCH64 = sc.syscall_numbers("aarch64")
ALLOW, KILL_PROCESS = sc.SECCOMP_RET_ALLOW, sc.SECCOMP_RET_KILL_PROCESS


def errno(e: int) -> int:
    return sc.SECCOMP_RET_ERRNO | e


def check_program(prog: bytes) -> list[tuple[int, int, int, int]]:
    """What the kernel's classic checker and seccomp's own checker demand of a program."""
    insns = list(struct.iter_unpack("=HBBI", prog))
    assert 0 < len(insns) <= sc.BPF_MAXINSNS and len(prog) % 8 == 0
    assert insns[-1][0] == sc.BPF_RET_K, "the last instruction must be a ret"
    for pc, (code, jt, jf, k) in enumerate(insns):
        assert code in (sc.BPF_LD_W_ABS, sc.BPF_ALU_AND_K, sc.BPF_JMP_JA, sc.BPF_JEQ, sc.BPF_JGT,
                        sc.BPF_JGE, sc.BPF_JSET, sc.BPF_RET_K), f"{pc}: opcode {code:#x}"
        if code == sc.BPF_LD_W_ABS:
            assert k % 4 == 0 and k + 4 <= sc.SECCOMP_DATA_SIZE, f"{pc}: load at {k}"
        if code == sc.BPF_JMP_JA:
            assert pc + 1 + k < len(insns), f"{pc}: ja out of the program"
        elif code in (sc.BPF_JEQ, sc.BPF_JGT, sc.BPF_JGE, sc.BPF_JSET):
            assert pc + 1 + max(jt, jf) < len(insns), f"{pc}: jump out of the program"
    return insns


def run(prog: bytes, nr: int, arch: int = sc.AUDIT_ARCH_X86_64, args: tuple[int, ...] = (), ip: int = 0) -> int:
    """Run the filter on one struct seccomp_data, as the kernel would; returns the SECCOMP_RET_* value."""
    insns = check_program(prog)
    data = struct.pack("=iIQ6Q", nr if nr < 0x80000000 else nr - (1 << 32), arch, ip, *(tuple(args) + (0,) * (6 - len(args))))
    a, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == sc.BPF_LD_W_ABS:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == sc.BPF_ALU_AND_K:
            a &= k
        elif code == sc.BPF_JMP_JA:
            pc += k
        elif code == sc.BPF_RET_K:
            return k
        else:
            taken = {sc.BPF_JEQ: a == k, sc.BPF_JGT: a > k, sc.BPF_JGE: a >= k, sc.BPF_JSET: bool(a & k)}[code]
            pc += jt if taken else jf
        pc += 1


def compile_(cfg: dict, machine: str = "x86_64") -> bytes:
    return oci.compile(Seccomp.from_json(cfg), machine)


def problems(cfg: object) -> list[str]:
    with pytest.raises(ConfigError) as e:
        Seccomp.from_json(cfg)
    return e.value.problems


# ---- validation -------------------------------------------------------------------------------


def test_valid_config_parses() -> None:
    s = Seccomp.from_json({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/agent.sock", "listenerMetadata": "meta",
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_NOTIFY",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        ],
    })
    assert s.default_action == "SCMP_ACT_ERRNO" and s.default_errno_ret == 38
    assert s.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert s.listener_path == "/run/agent.sock" and s.listener_metadata == "meta"
    assert s.syscalls[1].args == [oci.ArgRule(0, 8, "SCMP_CMP_EQ", 0)]
    assert s.syscalls[2].errno_ret == 1 and s.syscalls[2].args[0].value == 0x7E020000
    assert s.uses_notify
    assert s.kernel_flags() == sc.SECCOMP_FILTER_FLAG_LOG | sc.SECCOMP_FILTER_FLAG_NEW_LISTENER


def test_every_problem_is_reported_at_once() -> None:
    got = problems({
        "defaultAction": "SCMP_ACT_NOPE", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX", "SCMP_ARCH_PPC64LE"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_BOGUS"],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": [], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write", 3], "action": "SCMP_ACT_ALLOW", "errnoRet": 5},
            {"names": ["mkdir"], "action": "SCMP_ACT_FOO"},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000, "args": [
                {"index": 6, "value": -1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 1, "valueTwo": "2", "op": "SCMP_CMP_LIKE"},
                "nope"]},
            "not a rule",
        ],
    })
    acts = ", ".join(oci.ACTIONS)
    assert got == [
        f"linux.seccomp.defaultAction: 'SCMP_ACT_NOPE' is not one of {acts}",
        "linux.seccomp.architectures[1]: 'SCMP_ARCH_VAX' is not one of " + ", ".join(oci.ARCHES),
        "linux.seccomp.architectures[2]: SCMP_ARCH_PPC64LE is not supported by jaula "
        "(supported: SCMP_ARCH_X86, SCMP_ARCH_X86_64, SCMP_ARCH_X32, SCMP_ARCH_ARM, SCMP_ARCH_AARCH64)",
        "linux.seccomp.flags[1]: 'SECCOMP_FILTER_FLAG_BOGUS' is not one of " + ", ".join(oci.FLAGS),
        "linux.seccomp.syscalls[1].names: must be a non-empty list of syscall names, not []",
        "linux.seccomp.syscalls[2].names[1]: must be a syscall name, not 3",
        "linux.seccomp.syscalls[2].errnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, not SCMP_ACT_ALLOW",
        f"linux.seccomp.syscalls[3].action: 'SCMP_ACT_FOO' is not one of {acts}",
        "linux.seccomp.syscalls[4].errnoRet: must be an integer from 0 to 4095, not 70000",
        "linux.seccomp.syscalls[4].args[0].index: must be an argument index from 0 to 5, not 6",
        "linux.seccomp.syscalls[4].args[0].value: must be an integer from 0 to 18446744073709551615, not -1",
        "linux.seccomp.syscalls[4].args[1].valueTwo: must be an integer from 0 to 18446744073709551615, not '2'",
        "linux.seccomp.syscalls[4].args[1].op: 'SCMP_CMP_LIKE' is not one of " + ", ".join(oci.OPS),
        "linux.seccomp.syscalls[4].args[2]: must be an object with index, value and op, not a string",
        "linux.seccomp.syscalls[5]: must be an object with names and action, not a string",
    ]


@pytest.mark.parametrize("cfg, message", [
    ([], "linux.seccomp: must be an object, not a list"),
    ({}, "linux.seccomp.defaultAction is required: one of " + ", ".join(oci.ACTIONS)),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, not SCMP_ACT_ALLOW"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": True},
     "linux.seccomp.defaultErrnoRet: must be an integer from 0 to 4095, not True"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": "SCMP_ARCH_X86"},
     "linux.seccomp.architectures: must be a list of strings, not 'SCMP_ARCH_X86'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "linux.seccomp.syscalls: must be a list of rules, not an object"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": ""}, "linux.seccomp.listenerPath: must be a non-empty string, not ''"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"},
     "linux.seccomp.listenerPath is required when SCMP_ACT_NOTIFY is used (linux.seccomp.defaultAction)"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW"},
                                                      {"names": ["b"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath is required when SCMP_ACT_NOTIFY is used (linux.seccomp.syscalls[1])"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY in defaultAction or a rule"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"]}]},
     "linux.seccomp.syscalls[0].action is required: one of " + ", ".join(oci.ACTIONS)),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "args": {}}]},
     "linux.seccomp.syscalls[0].args: must be a list of argument conditions, not an object"),
])
def test_single_problem_messages(cfg: object, message: str) -> None:
    assert problems(cfg) == [message]


def test_trace_takes_a_16_bit_tag_and_errno_defaults() -> None:
    s = Seccomp.from_json({"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 60000,
                           "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO"},
                                        {"names": ["b"], "action": "SCMP_ACT_TRACE"}]})
    assert oci._ret(s.default_action, s.default_errno_ret) == sc.SECCOMP_RET_TRACE | 60000
    assert s.syscalls[0].ret == errno(1)  # EPERM when errnoRet is unset, as runc
    assert s.syscalls[1].ret == sc.SECCOMP_RET_TRACE | 1


def test_tsync_with_a_listener_adds_tsync_esrch() -> None:
    s = Seccomp.from_json({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x", "flags": [
        "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]})
    assert s.kernel_flags() == (sc.SECCOMP_FILTER_FLAG_TSYNC | sc.SECCOMP_FILTER_FLAG_SPEC_ALLOW
                                | sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV | sc.SECCOMP_FILTER_FLAG_NEW_LISTENER
                                | sc.SECCOMP_FILTER_FLAG_TSYNC_ESRCH)
    assert Seccomp.from_json({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC"]}).kernel_flags() == 1


# ---- actions, syscalls, rules ------------------------------------------------------------------


@pytest.mark.parametrize("action, ret", [
    ("SCMP_ACT_KILL", sc.SECCOMP_RET_KILL_THREAD), ("SCMP_ACT_KILL_THREAD", sc.SECCOMP_RET_KILL_THREAD),
    ("SCMP_ACT_KILL_PROCESS", KILL_PROCESS), ("SCMP_ACT_TRAP", sc.SECCOMP_RET_TRAP),
    ("SCMP_ACT_ERRNO", errno(1)), ("SCMP_ACT_TRACE", sc.SECCOMP_RET_TRACE | 1), ("SCMP_ACT_LOG", sc.SECCOMP_RET_LOG),
    ("SCMP_ACT_NOTIFY", sc.SECCOMP_RET_USER_NOTIF), ("SCMP_ACT_ALLOW", ALLOW),
])
def test_each_action(action: str, ret: int) -> None:
    default = "SCMP_ACT_LOG" if action == "SCMP_ACT_ALLOW" else "SCMP_ACT_ALLOW"
    prog = compile_({"defaultAction": default, "listenerPath": "/l", "syscalls": [{"names": ["getcwd"], "action": action}]})
    assert run(prog, X86_64["getcwd"]) == ret
    assert run(prog, X86_64["read"]) == oci._RET[default]


def test_default_errno_ret_and_allow_list() -> None:
    prog = compile_({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                     "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                                  {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})
    assert [run(prog, X86_64[n]) for n in ("read", "write", "exit_group")] == [ALLOW] * 3
    assert run(prog, X86_64["mkdir"]) == errno(13)
    assert run(prog, X86_64["getcwd"]) == errno(38)
    assert run(prog, 5000) == errno(38)


def test_unknown_names_are_skipped_and_recorded() -> None:
    prog = compile_({"defaultAction": "SCMP_ACT_ALLOW",
                     "syscalls": [{"names": ["no_such_call", "getcwd"], "action": "SCMP_ACT_KILL_PROCESS"}]})
    assert run(prog, X86_64["getcwd"]) == KILL_PROCESS
    assert oci.skipped == ["no_such_call (SCMP_ARCH_X86_64)"]


def test_rules_are_tried_in_order_and_ored() -> None:
    eq = lambda v: {"index": 0, "value": v, "op": "SCMP_CMP_EQ"}  # noqa: E731
    prog = compile_({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [eq(0)]},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [eq(8)]},
        {"names": ["personality"], "action": "SCMP_ACT_LOG", "args": [eq(0xFFFFFFFF)]},
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW"},  # after an unconditional rule: never reached
    ]})
    nr = X86_64["personality"]
    assert [run(prog, nr, args=(v,)) for v in (0, 8, 0xFFFFFFFF, 9)] == [ALLOW, ALLOW, sc.SECCOMP_RET_LOG, errno(22)]


def test_args_of_one_rule_are_anded() -> None:
    prog = compile_({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
            {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 100, "op": "SCMP_CMP_GT"},
            {"index": 0, "value": 200, "op": "SCMP_CMP_LE"}]}]})
    nr = X86_64["kill"]
    got = {(pid, sig): run(prog, nr, args=(pid, sig)) for pid in (100, 101, 200, 201) for sig in (9, 15)}
    assert [k for k, v in got.items() if v == errno(1)] == [(101, 9), (200, 9)]


def _holds(op: str, arg: int, value: int, two: int) -> bool:
    return {"SCMP_CMP_NE": arg != value, "SCMP_CMP_LT": arg < value, "SCMP_CMP_LE": arg <= value,
            "SCMP_CMP_EQ": arg == value, "SCMP_CMP_GE": arg >= value, "SCMP_CMP_GT": arg > value,
            "SCMP_CMP_MASKED_EQ": arg & value == two}[op]


def _neighbours(v: int) -> set[int]:
    """Values that differ from v in the high word only, the low word only, or both, across the 32-bit seam."""
    out = {v, 0, oci.U64, 0xFFFFFFFF, 1 << 32}
    for d in (1, 1 << 32, (1 << 32) + 1, (1 << 32) - 1):
        out |= {(v + d) & oci.U64, (v - d) & oci.U64}
    out |= {v ^ (1 << 31), v ^ (1 << 63), v & 0xFFFFFFFF, v & ~0xFFFFFFFF & oci.U64}
    return out


@pytest.mark.parametrize("op", oci.OPS)
def test_64_bit_comparisons_match_unsigned_python(op: str) -> None:
    rng = random.Random(op)
    values = [0, 1, 0xFFFFFFFF, 1 << 32, (1 << 32) + 5, 0x7FFFFFFF_FFFFFFFF, oci.U64, 0x12345678_9ABCDEF0]
    values += [rng.getrandbits(64) for _ in range(4)]
    for value in values:
        two = (value & 0xF0F0F0F0_F0F0F0F0) if op == "SCMP_CMP_MASKED_EQ" else 0
        prog = compile_({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 3, "value": value, "valueTwo": two, "op": op}]}]})
        for arg in _neighbours(value) | _neighbours(two):
            want = errno(1) if _holds(op, arg, value, two) else ALLOW
            assert run(prog, X86_64["ioctl"], args=(0, 0, 0, arg)) == want, (op, hex(value), hex(two), hex(arg))


@pytest.mark.parametrize("op", oci.OPS)
def test_32_bit_abis_compare_the_low_word_only(op: str) -> None:
    value, two = 0x1_0000_0010, 0x10
    prog = compile_({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"], "syscalls": [
        {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": value, "valueTwo": two, "op": op}]}]})
    for arg in (0, 0xF, 0x10, 0x11, 0xFFFFFFFF):
        want = errno(1) if _holds(op, arg, value & 0xFFFFFFFF, two) else ALLOW
        assert run(prog, X86["ioctl"], sc.AUDIT_ARCH_I386, args=(0, arg)) == want, (op, arg)


# ---- architectures -----------------------------------------------------------------------------


def test_native_only_when_no_architectures_are_listed() -> None:
    prog = compile_({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]})
    assert run(prog, X86_64["getcwd"]) == errno(1)
    assert run(prog, X86["getcwd"], sc.AUDIT_ARCH_I386) == KILL_PROCESS
    assert run(prog, X32["getcwd"]) == KILL_PROCESS  # an x32 call without SCMP_ARCH_X32
    assert run(prog, 0xFFFFFFFF) == ALLOW  # nr -1: a tracer skipped the call
    assert run(prog, AARCH64["getcwd"], sc.AUDIT_ARCH_AARCH64) == KILL_PROCESS


def test_x86_family_each_with_its_own_numbers() -> None:
    prog = compile_({"defaultAction": "SCMP_ACT_ALLOW",
                     "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                     "syscalls": [{"names": ["getcwd", "socketcall"], "action": "SCMP_ACT_ERRNO"}]})
    assert run(prog, X86_64["getcwd"]) == errno(1)
    assert run(prog, X86["getcwd"], sc.AUDIT_ARCH_I386) == errno(1)
    assert run(prog, X32["getcwd"]) == errno(1)
    assert X32["getcwd"] == sc.X32_SYSCALL_BIT | X86_64["getcwd"]
    assert run(prog, X86["socketcall"], sc.AUDIT_ARCH_I386) == errno(1)  # i386 only
    assert run(prog, X86["socketcall"]) == ALLOW  # 102 is getuid on x86_64
    assert run(prog, X86_64["getcwd"], sc.AUDIT_ARCH_I386) == ALLOW  # 79 on i386 is settimeofday


def test_x32_only_listed_still_keeps_native() -> None:
    prog = compile_({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X32"],
                     "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]})
    assert run(prog, X86_64["getcwd"]) == errno(1)
    assert run(prog, X32["getcwd"]) == errno(1)


def test_aarch64_native_with_arm() -> None:
    prog = compile_({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
                     "syscalls": [{"names": ["openat", "cacheflush"], "action": "SCMP_ACT_ALLOW"}]}, "aarch64")
    arm = sc.syscall_numbers("arm")
    assert run(prog, AARCH64["openat"], sc.AUDIT_ARCH_AARCH64) == ALLOW
    assert run(prog, arm["openat"], sc.AUDIT_ARCH_ARM) == ALLOW
    assert run(prog, arm["cacheflush"], sc.AUDIT_ARCH_ARM) == ALLOW
    assert run(prog, arm["openat"], sc.AUDIT_ARCH_AARCH64) == errno(1)
    assert run(prog, X86_64["openat"], sc.AUDIT_ARCH_X86_64) == KILL_PROCESS


def test_unsupported_native_architecture() -> None:
    with pytest.raises(ConfigError, match="native architecture 'ppc64le' is not supported"):
        compile_({"defaultAction": "SCMP_ACT_ALLOW"}, "ppc64le")


def test_syscall_tables() -> None:
    assert (X86_64["read"], X86_64["seccomp"], X86_64["open_tree_attr"], X86_64["uretprobe"]) == (0, 317, 467, 335)
    assert (X86["socketcall"], X86["clock_gettime64"], X86["mseal"]) == (102, 403, 462)
    assert (AARCH64["openat"], AARCH64["seccomp"], AARCH64["clone3"], AARCH64["file_setattr"]) == (56, 277, 435, 469)
    assert "open" not in AARCH64 and X32["read"] == 0x40000000
    assert sc.syscall_numbers("arm")["set_tls"] == 0x0F0005
    with pytest.raises(ValueError, match="no syscall table for 'vax'"):
        sc.syscall_numbers("vax")


# ---- program layout ----------------------------------------------------------------------------


def test_program_layout() -> None:
    """Arch check, x32 split, a search over runs of numbers, argument words high then low, default last."""
    prog = compile_({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]})
    assert [line.split(": ", 1)[1] for line in sc.disassemble(prog)] == [
        "ld [4]", "jeq #0xc000003e 3 2", "ret #0x80000000",
        "ld [0]", "jge #0x40000000 19 5",
        "jge #0x50 9 6", "jge #0x4f 8 7", "ret #0x7fff0000", "ret #0x50001",  # getcwd is 79
        "jge #0x87 11 10", "ret #0x7fff0000",
        "jge #0x88 18 12", "ld [20]", "jeq #0x0 14 17", "ld [16]", "jeq #0x8 16 17", "ret #0x50016",  # personality 135
        "ret #0x7fff0000", "ret #0x7fff0000",
        "jeq #0xffffffff 20 21", "ret #0x7fff0000", "ret #0x80000000",  # nr -1 or an x32 call
    ]


def test_far_jumps_get_trampolines() -> None:
    p = sc.Program()
    p.load(0)
    far, near = p.new_label(), p.new_label()
    p.jump_if(sc.BPF_JEQ, 7, far, None)
    p.jump_if(sc.BPF_JEQ, 8, None, far)
    p.goto(near)
    for _ in range(300):
        p.ret(1)
    p.place(near)
    p.ret(2)
    p.place(far)
    p.ret(3)
    prog = p.assemble()
    assert len(prog) // 8 > 300
    assert [run(prog, nr) for nr in (7, 8, 9)] == [3, 2, 3]
    assert any(line.split()[1] == "ja" for line in sc.disassemble(prog)[1:4])
    with pytest.raises(ValueError, match="never placed"):
        q = sc.Program()
        q.jump_if(sc.BPF_JEQ, 1, "nowhere", None)
        q.ret(0)
        q.assemble()


def test_large_profile_over_255_instructions() -> None:
    """Every x86_64 syscall with its own errno and an argument rule: far jumps everywhere."""
    names = sorted(X86_64, key=X86_64.get)
    rules = []
    for i, name in enumerate(names):
        rules.append({"names": [name], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": i % 6, "value": (X86_64[name] + 1) << 32 | i, "op": "SCMP_CMP_EQ"}]})
        rules.append({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 + i % 4000})
    prog = compile_({"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": rules})
    assert len(prog) // 8 > 2000
    assert sum(" ja " in line for line in sc.disassemble(prog)) >= 4  # trampolines for the far halves of the search
    for i, name in enumerate(names):
        args = [0] * 6
        assert run(prog, X86_64[name], args=tuple(args)) == errno(1 + i % 4000), name
        args[i % 6] = (X86_64[name] + 1) << 32 | i
        assert run(prog, X86_64[name], args=tuple(args)) == ALLOW, name
    assert run(prog, 1000) == KILL_PROCESS


def test_x32_rules_in_a_large_program() -> None:
    names = sorted(X32, key=X32.get)
    prog = compile_({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X32", "SCMP_ARCH_X86"],
                     "syscalls": [{"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": i + 2} for i, n in enumerate(names)]})
    for i, n in enumerate(names):
        assert run(prog, X32[n]) == errno(i + 2), n
        if n in X86_64:
            assert run(prog, X86_64[n]) == errno(i + 2), n
    for i, n in itertools.islice(enumerate(names), 0, None, 17):
        if n in X86:
            assert run(prog, X86[n], sc.AUDIT_ARCH_I386) == errno(i + 2), n


def test_too_many_instructions_is_a_config_error() -> None:
    args = [{"index": i, "value": i, "op": "SCMP_CMP_EQ"} for i in range(6)]
    rules = [{"names": [n], "action": "SCMP_ACT_ALLOW", "args": args} for n in list(X86_64)[:250]]
    with pytest.raises(ConfigError, match=r"compiles to \d+ BPF instructions; the kernel takes at most 4096"):
        compile_({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules})


def test_rules_equal_to_the_default_cost_nothing() -> None:
    small = compile_({"defaultAction": "SCMP_ACT_ALLOW"})
    same = compile_({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": list(X86_64), "action": "SCMP_ACT_ALLOW"}]})
    assert small == same


def test_features() -> None:
    f = oci.features()
    assert f["enabled"] is True and f["actions"] == list(oci.ACTIONS) and f["operators"] == list(oci.OPS)
    assert f["archs"] == ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"]
    assert f["knownFlags"] == list(oci.FLAGS) and set(f["supportedFlags"]) <= set(oci.FLAGS)


# ---- seccomp notify ----------------------------------------------------------------------------


def test_send_to_listener(tmp_path) -> None:
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    got: dict = {}

    def agent() -> None:
        conn, _ = server.accept()
        with conn:
            chunks, fds = [], []
            while True:
                data, new_fds, _, _ = socket.recv_fds(conn, 1 << 16, 4)
                fds += new_fds
                if not data:
                    break
                chunks.append(data)
            got["msg"], got["fds"] = json.loads(b"".join(chunks)), fds

    t = threading.Thread(target=agent)
    t.start()
    r, w = os.pipe()
    state = {"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 4242, "bundle": "/b",
             "annotations": {"a": "x" * 100000}}
    oci.send_to_listener(path, w, state, "MKNOD=/dev/null")
    t.join(5)
    server.close()
    assert got["msg"] == {"ociVersion": "1.2.0", "fds": ["seccompFd"], "pid": 4242, "metadata": "MKNOD=/dev/null", "state": state}
    assert len(got["fds"]) == 1
    os.write(got["fds"][0], b"!")
    assert os.read(r, 1) == b"!"
    for fd in (r, w, got["fds"][0]):
        os.close(fd)


def test_send_to_listener_names_the_socket(tmp_path) -> None:
    with pytest.raises(OSError, match=r"connect seccomp listener '.*nobody.sock'"):
        oci.send_to_listener(str(tmp_path / "nobody.sock"), 0, {"pid": 1}, "")


def test_compiled_remembers_each_profile_by_content(monkeypatch) -> None:
    calls = []
    real = oci.compile
    monkeypatch.setattr(oci, "compile", lambda s, arch="x86_64": calls.append(arch) or real(s, arch))
    monkeypatch.setattr(oci, "_compiled", {})
    a = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]}
    b = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["bpf"], "action": "SCMP_ACT_ERRNO"}]}
    pa = oci.compiled(Seccomp.from_json(a), "x86_64")
    assert oci.compiled(Seccomp.from_json(a), "x86_64") is pa and len(calls) == 1  # an equal profile
    pb = oci.compiled(Seccomp.from_json(b), "x86_64")
    assert pb != pa and len(calls) == 2 and pb == real(Seccomp.from_json(b), "x86_64")
    monkeypatch.setattr(oci, "_COMPILED_KEPT", 2)
    c = {"defaultAction": "SCMP_ACT_LOG"}
    oci.compiled(Seccomp.from_json(a), "x86_64")  # a is now the most recently used
    oci.compiled(Seccomp.from_json(c), "x86_64")  # pushes out b
    assert len(oci._compiled) == 2
    oci.compiled(Seccomp.from_json(a), "x86_64")
    assert len(calls) == 3
    oci.compiled(Seccomp.from_json(b), "x86_64")
    assert len(calls) == 4


def test_compiled_shares_a_program_across_listeners(monkeypatch) -> None:
    """jaulad names each instance in listenerMetadata: the filter is the same, so it compiles once;
    a different rule still compiles anew."""
    calls = []
    real = oci.compile
    monkeypatch.setattr(oci, "compile", lambda s, arch="x86_64": calls.append(arch) or real(s, arch))
    monkeypatch.setattr(oci, "_compiled", {})
    rules = [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}]
    one = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules, "listenerPath": "/run/a.sock", "listenerMetadata": "i1"}
    two = {**one, "listenerPath": "/run/b.sock", "listenerMetadata": "i2"}
    p1 = oci.compiled(Seccomp.from_json(one), "x86_64")
    assert oci.compiled(Seccomp.from_json(two), "x86_64") is p1 and len(calls) == 1
    other = {**one, "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_NOTIFY"}]}
    assert oci.compiled(Seccomp.from_json(other), "x86_64") != p1 and len(calls) == 2
