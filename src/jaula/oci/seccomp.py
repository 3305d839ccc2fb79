"""OCI `linux.seccomp`: the model, its validation, the BPF program it compiles to, and seccomp notify.

We compile the filter ourselves (no libseccomp binding) and keep libseccomp's meaning wherever a
profile written for runc or crun depends on it: unknown syscall names are skipped, the native
architecture is always in the filter, 32-bit ABIs compare only the low half of an argument, and a
64-bit argument is compared as two 32-bit halves (high first) because classic BPF is 32-bit.
Rules for one syscall are tried in config order: the first whose arguments all match decides, so
rules with one action are ORed. All conditions of one rule are ANDed, even two on the same argument
(runc turns those into separate, ORed rules; an AND is what a range like 5 <= arg <= 10 means).
"""

from __future__ import annotations

import os

from jaula.errors import ConfigError, SyscallError
from jaula.linux import seccomp as sc
from jaula.record import Record

ERRNO_MAX = 4095  # MAX_ERRNO: the kernel clamps SECCOMP_RET_ERRNO data to it
EPERM = 1
ARG_MAX = 6
U64 = (1 << 64) - 1

ACTIONS = (
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
)
_RET = {
    "SCMP_ACT_KILL": sc.SECCOMP_RET_KILL_THREAD, "SCMP_ACT_KILL_THREAD": sc.SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": sc.SECCOMP_RET_KILL_PROCESS, "SCMP_ACT_TRAP": sc.SECCOMP_RET_TRAP,
    "SCMP_ACT_ERRNO": sc.SECCOMP_RET_ERRNO, "SCMP_ACT_TRACE": sc.SECCOMP_RET_TRACE,
    "SCMP_ACT_ALLOW": sc.SECCOMP_RET_ALLOW, "SCMP_ACT_LOG": sc.SECCOMP_RET_LOG,
    "SCMP_ACT_NOTIFY": sc.SECCOMP_RET_USER_NOTIF,
}
_TAKES_ERRNO = {"SCMP_ACT_ERRNO": ERRNO_MAX, "SCMP_ACT_TRACE": 0xFFFF}  # the tracer's tag is 16 bits
OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": sc.SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": sc.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": sc.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}


# Syscall names of the last compile() that this kernel's tables lack: skipped, as runc and crun do.
skipped: list[str] = []

ARCHES = sc.ABIS  # SCMP_ARCH_* -> Abi
SUPPORTED_ARCHES = tuple(name for name, abi in ARCHES.items() if abi.table)


class ArgRule(Record):
    """One argument condition; for SCMP_CMP_MASKED_EQ `value` is the mask and `value_two` the datum."""

    index: int
    value: int
    op: str
    value_two: int = 0


class SyscallRule(Record):
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[ArgRule] = []

    @property
    def ret(self) -> int:
        return _ret(self.action, self.errno_ret)


class Seccomp(Record):
    """OCI `linux.seccomp` (defaultAction, defaultErrnoRet, architectures, flags, listenerPath,
    listenerMetadata, syscalls), checked by `from_json`."""

    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = []
    flags: list[str] = []
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[SyscallRule] = []

    @property
    def uses_notify(self) -> bool:
        return self.default_action == "SCMP_ACT_NOTIFY" or any(r.action == "SCMP_ACT_NOTIFY" for r in self.syscalls)

    def kernel_flags(self) -> int:
        """seccomp(2) flags: the config's, NEW_LISTENER for NOTIFY, TSYNC_ESRCH the kernel demands with both."""
        flags = 0
        for name in self.flags:
            flags |= FLAGS[name]
        if self.uses_notify:
            flags |= sc.SECCOMP_FILTER_FLAG_NEW_LISTENER
            if flags & sc.SECCOMP_FILTER_FLAG_TSYNC:
                flags |= sc.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
        return flags

    @classmethod
    def from_json(cls, d: object, where: str = "linux.seccomp") -> Seccomp:
        """Parse and check everything; raises ConfigError naming every problem found."""
        if not isinstance(d, dict):
            raise ConfigError([f"{where}: must be an object, not {_kind(d)}"])
        p: list[str] = []
        action = _action(p, d, "defaultAction", where)
        errno_ret = _errno(p, d, "defaultErrnoRet", where, action)
        arches = _strings(p, d, "architectures", where)
        for i, a in enumerate(arches):
            if a not in ARCHES:
                p.append(f"{where}.architectures[{i}]: {a!r} is not one of {', '.join(ARCHES)}")
            elif not ARCHES[a].table:
                p.append(f"{where}.architectures[{i}]: {a} is not supported by jaula (supported: {', '.join(SUPPORTED_ARCHES)})")
        flags = _strings(p, d, "flags", where)
        for i, f in enumerate(flags):
            if f not in FLAGS:
                p.append(f"{where}.flags[{i}]: {f!r} is not one of {', '.join(FLAGS)}")
        listener_path = _text(p, d, "listenerPath", where, nonempty=True)
        metadata = _text(p, d, "listenerMetadata", where)
        raw = d.get("syscalls")
        raw = [] if raw is None else raw
        rules: list[SyscallRule] = []
        if not isinstance(raw, list):
            p.append(f"{where}.syscalls: must be a list of rules, not {_kind(raw)}")
        else:
            rules = [x for i, r in enumerate(raw) if (x := _rule(p, r, f"{where}.syscalls[{i}]")) is not None]
        notify = [f"{where}.defaultAction"] if action == "SCMP_ACT_NOTIFY" else []
        notify += [f"{where}.syscalls[{i}]" for i, r in enumerate(raw if isinstance(raw, list) else [])
                   if isinstance(r, dict) and r.get("action") == "SCMP_ACT_NOTIFY"]
        if notify and not listener_path:
            p.append(f"{where}.listenerPath is required when SCMP_ACT_NOTIFY is used ({', '.join(notify)})")
        if "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" in flags and not notify:
            p.append(f"{where}.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY in defaultAction or a rule")
        if p:
            raise ConfigError(p)
        assert action is not None
        return cls(action, errno_ret, arches, flags, listener_path, metadata, rules)


def _kind(v: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _uint(v: object, top: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top


def _action(p: list[str], d: dict, key: str, where: str) -> str | None:
    v = d.get(key)
    if v is None:
        p.append(f"{where}.{key} is required: one of {', '.join(ACTIONS)}")
    elif v not in ACTIONS:
        p.append(f"{where}.{key}: {v!r} is not one of {', '.join(ACTIONS)}")
    else:
        return v
    return None


def _errno(p: list[str], d: dict, key: str, where: str, action: str | None) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    top = _TAKES_ERRNO.get(action or "", ERRNO_MAX)
    if not _uint(v, top):
        p.append(f"{where}.{key}: must be an integer from 0 to {top}, not {v!r}")
    elif action is not None and action not in _TAKES_ERRNO:
        p.append(f"{where}.{key}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, not {action}")
    return v


def _strings(p: list[str], d: dict, key: str, where: str) -> list[str]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        p.append(f"{where}.{key}: must be a list of strings, not {v!r}")
        return []
    return list(v)


def _text(p: list[str], d: dict, key: str, where: str, nonempty: bool = False) -> str | None:
    v = d.get(key)
    if v is not None and (not isinstance(v, str) or (nonempty and not v)):
        p.append(f"{where}.{key}: must be a {'non-empty ' if nonempty else ''}string, not {v!r}")
        return None
    return v or None


def _rule(p: list[str], r: object, where: str) -> SyscallRule | None:
    if not isinstance(r, dict):
        p.append(f"{where}: must be an object with names and action, not {_kind(r)}")
        return None
    before = len(p)
    names = r.get("names")
    if not isinstance(names, list) or not names:
        p.append(f"{where}.names: must be a non-empty list of syscall names, not {names!r}")
    else:
        for j, n in enumerate(names):
            if not isinstance(n, str) or not n:
                p.append(f"{where}.names[{j}]: must be a syscall name, not {n!r}")
    action = _action(p, r, "action", where)
    errno_ret = _errno(p, r, "errnoRet", where, action)
    args: list[ArgRule] = []
    raw = r.get("args")
    raw = [] if raw is None else raw
    if not isinstance(raw, list):
        p.append(f"{where}.args: must be a list of argument conditions, not {_kind(raw)}")
        raw = []
    for k, a in enumerate(raw):
        w = f"{where}.args[{k}]"
        if not isinstance(a, dict):
            p.append(f"{w}: must be an object with index, value and op, not {_kind(a)}")
            continue
        if not _uint(a.get("index"), ARG_MAX - 1):
            p.append(f"{w}.index: must be an argument index from 0 to {ARG_MAX - 1}, not {a.get('index')!r}")
        for key, required in (("value", True), ("valueTwo", False)):
            if (required or key in a) and not _uint(a.get(key), U64):
                p.append(f"{w}.{key}: must be an integer from 0 to {U64}, not {a.get(key)!r}")
        if a.get("op") not in OPS:
            p.append(f"{w}.op: {a.get('op')!r} is not one of {', '.join(OPS)}")
        if len(p) == before:
            args.append(ArgRule(a["index"], a["value"], a["op"], a.get("valueTwo", 0)))
    if len(p) > before or action is None:
        return None
    return SyscallRule(list(names or []), action, errno_ret, args)


def _ret(action: str, errno_ret: int | None) -> int:
    """The SECCOMP_RET_* value of an action; ERRNO and TRACE carry errnoRet (EPERM when unset, as runc)."""
    if action in _TAKES_ERRNO:
        return _RET[action] | ((EPERM if errno_ret is None else errno_ret) & sc.SECCOMP_RET_DATA)
    return _RET[action]


def scmp_arch(machine: str) -> str:
    """The SCMP_ARCH_* name of `machine` (platform.machine(), or already an SCMP_ARCH_* name)."""
    name = machine if machine in ARCHES else sc.MACHINES.get(machine)
    if name is None or not ARCHES[name].table:
        raise ConfigError([f"linux.seccomp: the native architecture {machine!r} is not supported "
                           f"(supported: {', '.join(SUPPORTED_ARCHES)})"])
    return name


def compile(seccomp: Seccomp, native_arch: str = os.uname().machine) -> bytes:  # noqa: A001
    """The filter as struct sock_filter bytes.

    Check arch (kill the process for one not listed; the native arch is always listed, as libseccomp
    does), load nr, search the syscalls with rules, try their rules in order, else the default action.
    """
    skipped.clear()
    native = scmp_arch(native_arch)
    names = list(dict.fromkeys([native, *seccomp.architectures]))
    bad = [n for n in names if n not in ARCHES or not ARCHES[n].table]
    if bad:  # from_json refuses these; a Seccomp built in code may not have been through it
        raise ConfigError([f"linux.seccomp.architectures: {', '.join(bad)} not supported (supported: {', '.join(SUPPORTED_ARCHES)})"])
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(ARCHES[name].audit, []).append(name)
    default = _ret(seccomp.default_action, seccomp.default_errno_ret)
    p = sc.Program()
    p.load(sc.SECCOMP_DATA_ARCH)
    entry = {audit: p.new_label("arch") for audit in groups}
    for audit, label in entry.items():
        p.jump_if(sc.BPF_JEQ, audit, label, None)
    p.ret(sc.SECCOMP_RET_KILL_PROCESS)
    for audit, members in groups.items():
        p.place(entry[audit])
        p.load(sc.SECCOMP_DATA_NR)
        if audit != sc.AUDIT_ARCH_X86_64:
            _emit_abi(p, seccomp, members[0], default)
            continue
        # x86_64 and x32 share AUDIT_ARCH_X86_64: x32 numbers have X32_SYSCALL_BIT. nr -1 (a tracer
        # skipping a call) is not an x32 call: it gets the default, as libseccomp does.
        high, kill = p.new_label("x32"), p.new_label("kill")
        if "SCMP_ARCH_X86_64" in members:
            p.jump_if(sc.BPF_JGE, sc.X32_SYSCALL_BIT, high, None)
            _emit_abi(p, seccomp, "SCMP_ARCH_X86_64", default)
            p.place(high)
            if "SCMP_ARCH_X32" in members:
                _emit_abi(p, seccomp, "SCMP_ARCH_X32", default)
                continue
            p.jump_if(sc.BPF_JEQ, 0xFFFFFFFF, None, kill)
            p.ret(default)
        else:
            p.jump_if(sc.BPF_JGE, sc.X32_SYSCALL_BIT, None, kill)
            _emit_abi(p, seccomp, "SCMP_ARCH_X32", default)
        p.place(kill)
        p.ret(sc.SECCOMP_RET_KILL_PROCESS)
    prog = p.assemble()
    if len(prog) // 8 > sc.BPF_MAXINSNS:
        raise ConfigError([f"linux.seccomp: the filter compiles to {len(prog) // 8} BPF instructions; "
                           f"the kernel takes at most {sc.BPF_MAXINSNS}"])
    return prog


def _rules_by_nr(seccomp: Seccomp, arch: str, default: int) -> dict[int, list[SyscallRule]]:
    """Each syscall number's rules in config order, cut after the first without args; none when all give the default."""
    abi = ARCHES[arch]
    assert abi.table is not None
    table = sc.syscall_numbers(abi.table)
    found: dict[int, list[SyscallRule]] = {}
    for rule in seccomp.syscalls:
        for name in rule.names:
            nr = table.get(name)
            if nr is None:
                skipped.append(f"{name} ({arch})")
                continue
            rules = found.setdefault(nr, [])
            if rule not in rules and not (rules and not rules[-1].args):
                rules.append(rule)
    return {nr: rules for nr, rules in found.items() if any(r.ret != default for r in rules)}


def _emit_abi(p: sc.Program, seccomp: Seccomp, arch: str, default: int) -> None:
    """A in: nr. A binary search over runs of numbers that share one outcome, so a profile of
    hundreds of allowed calls stays a few hundred instructions; numbers with argument rules are runs of one."""
    abi = ARCHES[arch]
    runs: list[tuple[int, int | list[SyscallRule]]] = []  # (first nr, outcome); a run ends where the next starts
    pos = 0
    for nr, rules in sorted(_rules_by_nr(seccomp, arch, default).items()):
        if nr > pos:
            runs.append((pos, default))
        runs.append((nr, rules if rules[0].args else rules[0].ret))
        pos = nr + 1
    runs.append((pos, default))
    merged: list[tuple[int, int | list[SyscallRule]]] = []
    for start, outcome in runs:
        if start > 0xFFFFFFFF:
            continue
        if merged and isinstance(outcome, int) and merged[-1][1] == outcome:
            continue
        merged.append((start, outcome))

    def emit(lo: int, hi: int) -> None:  # A is in [merged[lo] start, merged[hi] start)
        if hi - lo == 1:
            outcome = merged[lo][1]
            if isinstance(outcome, int):
                p.ret(outcome)
            else:
                _emit_rules(p, outcome, abi, default)
            return
        mid = (lo + hi) // 2
        right = p.new_label("ge")
        p.jump_if(sc.BPF_JGE, merged[mid][0], right, None)
        emit(lo, mid)
        p.place(right)
        emit(mid, hi)

    emit(0, len(merged))


def _emit_rules(p: sc.Program, rules: list[SyscallRule], abi: sc.Abi, default: int) -> None:
    """The first rule whose conditions all hold returns its action; every path ends in a ret."""
    for rule in rules:
        if not rule.args:
            p.ret(rule.ret)
            return
        miss = p.new_label("miss")
        for arg in rule.args:
            p.test_arg(abi, arg.index, arg.op[len("SCMP_CMP_"):].lower(), arg.value, arg.value_two, miss)
        p.ret(rule.ret)
        p.place(miss)
    p.ret(default)


# The programs this process compiled last, by the profile's repr and the arch: jaulad's spawner
# starts every instance with one of a few profiles, and compiling one in Python takes 3-6 ms.
_compiled: dict[tuple[str, str], bytes] = {}
_COMPILED_KEPT = 8


def compiled(seccomp: Seccomp, native_arch: str = os.uname().machine) -> bytes:
    """compile(), remembered for equal profiles (a repr, ~0.04 ms for the default profile).
    Keyed on what the program is made of only: the listener's path and metadata (jaulad names
    the instance there) are no part of the filter, so each instance's profile still hits."""
    key = (repr((seccomp.default_action, seccomp.default_errno_ret, seccomp.architectures, seccomp.flags,
                 seccomp.syscalls)), native_arch)
    prog = _compiled.pop(key, None)
    if prog is None:
        prog = compile(seccomp, native_arch)
        while len(_compiled) >= _COMPILED_KEPT:
            del _compiled[next(iter(_compiled))]  # the least recently used
    _compiled[key] = prog
    return prog


def install(seccomp: Seccomp, native_arch: str = os.uname().machine, listener: bool = True,
            prog: bytes | None = None) -> int:
    """Load the filter on this thread (TSYNC: all threads), compiled here unless `prog` is its
    program already (compiled()); returns the listener fd, or -1.

    Needs no_new_privs or CAP_SYS_ADMIN, and every later syscall is filtered: call it last before execve.
    listener=False (an exec'd process) loads NOTIFY rules without a listener: those calls fail with ENOSYS.
    """
    flags = seccomp.kernel_flags()
    if not listener:
        flags &= ~(sc.SECCOMP_FILTER_FLAG_NEW_LISTENER | sc.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
                   | sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
    fd = sc.install_filter(prog if prog is not None else compile(seccomp, native_arch), flags)
    return fd if flags & sc.SECCOMP_FILTER_FLAG_NEW_LISTENER else -1


def features() -> dict[str, object]:
    """The linux.seccomp part of `jaula-runtime features` (runtime-spec features.md)."""
    return {"enabled": True, "actions": list(ACTIONS), "operators": list(OPS), "archs": list(SUPPORTED_ARCHES),
            "knownFlags": list(FLAGS), "supportedFlags": [n for n, f in FLAGS.items() if sc.flag_supported(f)]}


def send_to_listener(listener_path: str, listener_fd: int, state: dict, metadata: str | None) -> None:
    """Hand the listener fd to the seccomp agent at `listener_path` (OCI "seccomp notify").

    One connection per container: the ContainerProcessState JSON with the fd in SCM_RIGHTS, then close.
    """
    msg: dict[str, object] = {"ociVersion": state.get("ociVersion", "1.2.0"), "fds": ["seccompFd"], "pid": state.get("pid")}
    if metadata:
        msg["metadata"] = metadata
    msg["state"] = state
    from jaula import fastjson

    data = fastjson.dumps(msg).encode()
    step = "connect"
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.connect(listener_path)
            step = "sendmsg"
            sent = socket.send_fds(s, [data], [listener_fd])
            if sent < len(data):
                s.sendall(data[sent:])
    except OSError as e:
        raise SyscallError(f"{step} seccomp listener", e.errno or 0, repr(listener_path)) from None
