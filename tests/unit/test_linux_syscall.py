"""jaula.linux.libc's raw syscalls: the C module (_sys) and the ctypes fallback behave alike, and
the runtime's hot path does not import ctypes when the C module is built."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
from pathlib import Path

import pytest

from jaula.errors import SyscallError
from jaula.linux import caps, fs, libc, proc

SRC = Path(__file__).resolve().parents[2] / "src"
PYTHON = "/usr/bin/python3.11"

try:
    from jaula.linux import _sys
except ImportError:
    _sys = None

BACKENDS = [
    pytest.param(lambda: libc._ctypes_raw, id="ctypes"),
    pytest.param(lambda: _sys.syscall, id="c", marks=pytest.mark.skipif(
        _sys is None, reason="jaula.linux._sys is not built (scripts/build-runtime-fast needs gcc and python3.11-dev)")),
]


@pytest.fixture(params=BACKENDS)
def raw(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    fn = request.param()
    monkeypatch.setattr(libc, "raw", fn)  # call() and the wrappers go through it
    monkeypatch.setattr(fs, "raw", fn)
    monkeypatch.setattr(caps, "raw", fn)
    return fn


def test_plain_int_result(raw) -> None:
    assert raw(39 if os.uname().machine == "x86_64" else 172) == os.getpid()  # getpid


def test_failure_is_minus_errno_with_bytes_and_negative_ints(raw) -> None:
    how = libc.u64s(os.O_PATH, 0, 0)
    assert raw(libc.NR["openat2"], -100, b"/no/such/path/here", how, len(how)) == -errno.ENOENT  # AT_FDCWD


def test_none_is_null(raw) -> None:
    # pidfd_send_signal(fd, 0, NULL, 0): signal 0 to ourselves, with a NULL siginfo
    pfd = raw(libc.NR["pidfd_open"], os.getpid(), 0)
    assert pfd >= 0
    try:
        assert raw(libc.NR["pidfd_send_signal"], pfd, 0, None, 0) == 0
    finally:
        os.close(pfd)


def test_writable_buffer_is_filled(raw) -> None:
    fd = os.open("/proc", os.O_PATH | os.O_CLOEXEC)
    try:
        assert fs.fstatfs_type(fd) == fs.PROC_SUPER_MAGIC
    finally:
        os.close(fd)


def test_ints_above_long_max_pass_as_their_unsigned_pattern(raw) -> None:
    soft, hard = proc.getrlimit(resource.RLIMIT_CORE)
    if hard == proc.RLIM_INFINITY:  # 2**64 - 1: raise soft to it and back
        proc.setrlimit(resource.RLIMIT_CORE, proc.RLIM_INFINITY, hard)
        assert resource.getrlimit(resource.RLIMIT_CORE) == (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        proc.setrlimit(resource.RLIMIT_CORE, soft, hard)
    else:  # soft above hard: refused, so the huge value arrived whole
        with pytest.raises(SyscallError) as info:
            proc.setrlimit(resource.RLIMIT_CORE, proc.RLIM_INFINITY, hard)
        assert info.value.errno == errno.EINVAL
    assert proc.getrlimit(resource.RLIMIT_CORE) == (soft, hard)


def test_call_raises_syscall_error_naming_the_call(raw) -> None:
    with pytest.raises(SyscallError) as info:
        fs.open_in_root(os.open("/", os.O_PATH | os.O_CLOEXEC), "/no/such/path/here")
    assert info.value.errno == errno.ENOENT and "openat2" in str(info.value)


def test_capget_and_rlimits_match_the_kernels_view(raw) -> None:
    eff, perm, inh = caps.capget()
    status = dict(line.split(":\t") for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    assert (eff, perm, inh) == (int(status["CapEff"], 16), int(status["CapPrm"], 16), int(status["CapInh"], 16))
    assert proc.getrlimit(resource.RLIMIT_NOFILE) == tuple(
        proc.RLIM_INFINITY if v == resource.RLIM_INFINITY else v for v in resource.getrlimit(resource.RLIMIT_NOFILE))


def test_setrlimit_errors_keep_the_kernels_errno(raw) -> None:
    soft, hard = proc.getrlimit(resource.RLIMIT_NOFILE)
    with pytest.raises(SyscallError) as info:
        proc.setrlimit(resource.RLIMIT_NOFILE, hard + 1 if hard < proc.RLIM_INFINITY else 10, 5)  # soft above hard
    assert info.value.errno == errno.EINVAL
    assert proc.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_memfd_seals(raw) -> None:
    fd = os.memfd_create("t", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        proc.add_seals(fd, proc.F_SEAL_WRITE | proc.F_SEAL_SEAL)
        assert proc.get_seals(fd) == proc.F_SEAL_WRITE | proc.F_SEAL_SEAL
        with pytest.raises(PermissionError):
            os.write(fd, b"x")
    finally:
        os.close(fd)


@pytest.mark.skipif(_sys is None, reason="jaula.linux._sys is not built (scripts/build-runtime-fast)")
def test_c_module_refuses_what_it_cannot_pass() -> None:
    with pytest.raises(TypeError, match="str"):
        _sys.syscall(39, "a string")
    with pytest.raises(TypeError):
        _sys.syscall(39, 1, 2, 3, 4, 5, 6, 7)


def _imports(env: dict[str, str]) -> tuple[str, bool]:
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "import jaula.oci.cli, jaula.oci.create, jaula.oci.lifecycle, jaula.oci.foreground, jaula.linux.caps\n"
            "from jaula.linux import libc\n"
            "print(libc.BACKEND, 'ctypes' in sys.modules)")
    out = subprocess.run([PYTHON, "-S", "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1] == "True"


@pytest.mark.skipif(_sys is None, reason="jaula.linux._sys is not built (scripts/build-runtime-fast)")
def test_hot_path_does_not_import_ctypes_with_the_c_module() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JAULA_SYSCALL"}
    assert _imports(env) == ("c", False)


def test_jaula_syscall_ctypes_forces_the_fallback() -> None:
    assert _imports(dict(os.environ, JAULA_SYSCALL="ctypes")) == ("ctypes", True)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping from the bounding set needs CAP_SETPCAP (run as root)")
def test_bounding_keep_leaves_exactly_the_mask(raw) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the bounding set cannot grow back: drop in a child
        try:
            os.close(r)
            caps.bounding_keep((1 << 0) | (1 << 5))  # CAP_CHOWN, CAP_KILL
            status = Path("/proc/self/status").read_text()
            os.write(w, next(line for line in status.splitlines() if line.startswith("CapBnd:")).split()[1].encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert int(os.read(r, 64), 16) == (1 << 0) | (1 << 5)
    finally:
        os.close(r)
        os.waitpid(pid, 0)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the test's filter uses x86_64's getppid number")
@pytest.mark.parametrize("backend", ["c", "ctypes"])
def test_seccomp_filter_loads_through_each_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "c" and (_sys is None or not hasattr(_sys, "seccomp_filter")):
        pytest.skip("jaula.linux._sys (VERSION 2) is not built (scripts/build-runtime-fast)")
    if backend == "ctypes":
        monkeypatch.setattr(libc, "_c_seccomp", lambda: None)
    libc.ready_for_seccomp()
    k = lambda code, jt, jf, val: code.to_bytes(2, "little") + bytes((jt, jf)) + val.to_bytes(4, "little")
    prog = (k(0x20, 0, 0, 0)                 # A = seccomp_data.nr
            + k(0x15, 0, 1, 110)             # getppid?
            + k(0x06, 0, 0, 0x00050000 | 1)  # SECCOMP_RET_ERRNO | EPERM
            + k(0x06, 0, 0, 0x7FFF0000))     # SECCOMP_RET_ALLOW
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a filter cannot be taken off again: load it in a child
        try:
            os.close(r)
            proc.set_no_new_privs()
            ok = libc.seccomp_filter(0, prog)
            os.write(w, f"{ok} {libc.raw(110)} {libc.raw(39) == os.getpid()}".encode())  # getppid, getpid
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 100).decode().split() == ["0", str(-errno.EPERM), "True"]
    finally:
        os.close(r)
        os.waitpid(pid, 0)
