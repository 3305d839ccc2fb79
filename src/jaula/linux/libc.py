"""Raw syscalls by name, with errno checking: the runtime's way past what `os` lacks.

Python 3.11 lacks os.unshare/os.setns and the new mount API, so they are reached here.
`call()` goes through the tiny C module `jaula.linux._sys` (built by scripts/setup), or through
ctypes when that is not built: `import ctypes` alone costs ~2.5 ms, a tenth of a container's
start, so the hot path never imports it when the C module is there. JAULA_SYSCALL=ctypes forces
the fallback (the tests run both). `libc` (a ctypes CDLL) and `syscall()` remain for the callers
that pass ctypes structures; they import ctypes on first use.
"""

from __future__ import annotations

import os
import sys

from jaula.errors import SyscallError

# Numbers from 424 on are the same on every architecture (the unified syscall table).
_ARCH_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "seccomp": 317, "keyctl": 250, "personality": 135, "mount": 165, "umount2": 166,
               "unshare": 272, "setns": 308, "prctl": 157, "sethostname": 170, "setdomainname": 171,
               "capget": 125, "capset": 126, "fstatfs": 138, "prlimit64": 302, "fcntl": 72, "rt_sigaction": 13},
    "aarch64": {"pivot_root": 41, "seccomp": 277, "keyctl": 219, "personality": 92, "mount": 40, "umount2": 39,
                "unshare": 97, "setns": 268, "prctl": 167, "sethostname": 161, "setdomainname": 162,
                "capget": 90, "capset": 91, "fstatfs": 44, "prlimit64": 261, "fcntl": 25, "rt_sigaction": 134},
}
NR: dict[str, int] = {
    "pidfd_send_signal": 424,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "pidfd_open": 434,
    "clone3": 435,
    "close_range": 436,
    "openat2": 437,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    **_ARCH_NUMBERS.get(os.uname().machine, _ARCH_NUMBERS["x86_64"]),
}


def _load_raw():
    """The raw syscall entry: (function(nr, *args) -> result or -errno, "c" or "ctypes")."""
    if os.environ.get("JAULA_SYSCALL") != "ctypes":
        try:
            from jaula.linux import _sys
        except ImportError:
            pass
        else:
            if getattr(_sys, "VERSION", 0) >= 1:  # 1: syscall(); 2: also seccomp_filter()
                return _sys.syscall, "c"
    __getattr__("_syscall")  # now: after pivot_root the host's ctypes could no longer be imported
    return _ctypes_raw, "ctypes"


def _ctypes_raw(nr: int, *args: object) -> int:
    """What _sys.syscall does, through ctypes: int, None, bytes or a writable buffer per argument."""
    import ctypes  # loaded by _load_raw already

    conv: list[object] = []
    for a in args:
        if a is None or isinstance(a, bytes):
            conv.append(a)
        elif isinstance(a, int):
            conv.append(ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) if a > 0x7FFFFFFFFFFFFFFF else ctypes.c_long(a))
        else:
            conv.append((ctypes.c_char * len(a)).from_buffer(a))  # type: ignore[arg-type]
    ret = __getattr__("_syscall")(ctypes.c_long(nr), *conv)
    return -ctypes.get_errno() if ret == -1 else ret


def _c_seccomp():
    """The C module's seccomp_filter (VERSION 2), or None (no C module, an older build, JAULA_SYSCALL=ctypes)."""
    if BACKEND != "c":
        return None
    from jaula.linux import _sys

    return getattr(_sys, "seccomp_filter", None)


def can_clone3() -> bool:
    """Whether clone3() below is there: the C module's VERSION 3 (not with ctypes)."""
    if BACKEND != "c":
        return False
    from jaula.linux import _sys

    return hasattr(_sys, "clone3")


def can_clone_parent() -> bool:
    """Whether clone3() takes CLONE_PARENT (the C module's VERSION 4: no exit signal of its own then)."""
    if BACKEND != "c":
        return False
    from jaula.linux import _sys

    return getattr(_sys, "VERSION", 0) >= 4


def clone3(flags: int, cgroup_fd: int = -1) -> int:
    """A fork through clone3(2) with CLONE_NEW* `flags`, born in the cgroup2 folder `cgroup_fd` when
    it is >= 0 (CLONE_INTO_CGROUP): the child's pid, 0 in the child (see _sys.c). Only where
    can_clone3(); a failure raises SyscallError."""
    from jaula.linux import _sys

    ret = _sys.clone3(flags, cgroup_fd)
    if ret < 0:
        raise SyscallError("clone3", -ret, f"flags {flags:#x}, cgroup fd {cgroup_fd}")
    return ret


def ready_for_seccomp() -> None:
    """Load now what seccomp_filter() will need: it runs after pivot_root, where ctypes could no longer be imported."""
    if _c_seccomp() is None:
        __getattr__("_syscall")


def seccomp_filter(flags: int, prog: bytes) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, &{len, prog}): the result or -errno. The struct holds
    a pointer, which call() cannot pass: the C module does it, or ctypes."""
    fn = _c_seccomp()
    if fn is not None:
        return fn(flags, prog)
    import ctypes  # loaded by ready_for_seccomp()

    buf = ctypes.create_string_buffer(prog, len(prog))  # kept alive until the call returns
    # struct sock_fprog on a 64-bit machine: u16 len, 6 bytes of padding, the filter's address
    fprog = (len(prog) // 8).to_bytes(2, sys.byteorder) + bytes(6) + ctypes.addressof(buf).to_bytes(8, sys.byteorder)
    return _ctypes_raw(NR["seccomp"], 1, flags, fprog)  # 1: SECCOMP_SET_MODE_FILTER


def call(name: str, *args: object, detail: str = "") -> int:
    """The syscall `name` with plain arguments (see _ctypes_raw); raises SyscallError naming it and `detail`."""
    ret = raw(NR[name], *args)
    if ret < 0:
        raise SyscallError(name, -ret, detail)
    return ret


def __getattr__(name: str) -> object:
    """`libc` and `_syscall` (ctypes), made on first use: importing ctypes is what the hot path avoids."""
    if name not in ("libc", "_syscall"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    fn = lib.syscall
    fn.restype = ctypes.c_long
    globals().update(libc=lib, _syscall=fn)
    return globals()[name]


raw, BACKEND = _load_raw()


def fail(call: str, detail: str = "") -> SyscallError:
    """The error for the ctypes C call that just returned -1."""
    import ctypes

    return SyscallError(call, ctypes.get_errno(), detail)


def check(ret: int, call: str, detail: str = "") -> int:
    if ret < 0:
        raise fail(call, detail)
    return ret


def syscall(name: str, *args: object, detail: str = "") -> int:
    """A raw syscall by name through ctypes (arguments may be ctypes objects); raises SyscallError."""
    import ctypes

    ret = __getattr__("_syscall")(ctypes.c_long(NR[name]), *args)
    if ret < 0:
        raise fail(name, detail)
    return ret


def u64s(*values: int) -> bytes:
    """A C struct of __u64 fields (open_how, mount_attr), in this machine's byte order."""
    return b"".join(v.to_bytes(8, sys.byteorder) for v in values)


def u32s(*values: int) -> bytes:
    """A C array or struct of 32-bit fields; negative values as two's complement (fds, pids)."""
    return b"".join((v & 0xFFFFFFFF).to_bytes(4, sys.byteorder) for v in values)


def fsencode(path: str | bytes | None) -> bytes | None:
    return None if path is None else os.fsencode(path)
