"""linux.seccomp against the real kernel: compiled filters installed in forked children.

Each test forks; the child sets no_new_privs, installs the filter, runs a few calls and reports
them as JSON on a pipe, then _exits. The parent reads the report and the child's wait status.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import signal
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jaula.linux import seccomp as sc
from jaula.linux.proc import set_no_new_privs
from jaula.oci import seccomp as oci


def _seccomp_missing() -> str | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError as e:
        return f"/proc/self/status unreadable: {e}"
    return None if "Seccomp:" in status else "the kernel has no seccomp (no Seccomp: line in /proc/self/status)"


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(_seccomp_missing() is not None, reason=_seccomp_missing() or ""),
]

NR = sc.syscall_numbers("x86_64")
X32 = sc.syscall_numbers("x32")
I386 = sc.syscall_numbers("x86")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
if os.uname().machine != "x86_64":
    pytest.skip("these tests use x86_64 syscall numbers", allow_module_level=True)


def raw(nr: int, *args: int) -> list[int]:
    """[return value, errno] of a raw syscall, errno 0 on success."""
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    return [ret, ctypes.get_errno() if ret == -1 else 0]


def in_child(cfg: dict, body: Callable[..., Any], before: Callable[[int], None] | None = None,
             listener: bool = True) -> tuple[int, Any]:
    """Run `body` in a child under the filter of `cfg`; returns (wait status, body's result or None).

    `before(pid)` runs in the parent while the child works (a seccomp agent, for instance).
    """
    s = oci.Seccomp.from_json(cfg)
    oci.compile(s)  # a compile error fails here, not in the child
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(r)
            set_no_new_privs()
            fd = oci.install(s, listener=listener)
            out = {"ok": body(fd) if fd >= 0 else body()}
        except BaseException as e:  # noqa: BLE001 - report everything to the parent
            out = {"error": repr(e)}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        if before:
            before(pid)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks)) if chunks else None
    if report and "error" in report:
        pytest.fail(f"child failed: {report['error']}")
    return status, report["ok"] if report else None


def _killed_by_sigsys(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def _oserror(fn: Callable[[], Any]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


def test_denied_syscalls_return_the_errno(tmp_path: Path) -> None:
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd", "mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]}
    target = tmp_path / "made"
    status, got = in_child(cfg, lambda: [_oserror(os.getcwd), _oserror(lambda: os.mkdir(target)),
                                         raw(NR["getppid"]), raw(NR["getpid"])[0] > 0])
    assert os.WIFEXITED(status)
    assert got == [errno.EPERM, errno.EPERM, [-1, errno.ENOSYS], True]
    assert not target.exists()


def test_argument_rules() -> None:
    """personality(8) is denied but personality(0xffffffff) (a query) is not; lseek's 64-bit offset by halves."""
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
         "args": [{"index": 1, "value": 1 << 32, "op": "SCMP_CMP_EQ"}]},
        {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ERANGE,
         "args": [{"index": 1, "value": 1 << 40, "op": "SCMP_CMP_GT"}, {"index": 2, "value": os.SEEK_SET, "op": "SCMP_CMP_EQ"}]},
        {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
         "args": [{"index": 1, "value": 0xFF_0000_0000, "valueTwo": 0x70_0000_0000, "op": "SCMP_CMP_MASKED_EQ"}]},
    ]}

    def body() -> list:
        fd = os.memfd_create("seek")
        seek = lambda off: raw(NR["lseek"], fd, off, os.SEEK_SET)  # noqa: E731
        return [raw(NR["personality"], 0xFFFFFFFF)[1], raw(NR["personality"], 8),
                seek(0), seek(1 << 32), seek((1 << 32) + 1), seek(1 << 40), seek((1 << 40) + 1),
                raw(NR["lseek"], fd, (1 << 40) + 1, os.SEEK_CUR)[1], seek(0x70_0000_0005), seek(0x72_0000_0005)]

    status, got = in_child(cfg, body)
    assert got == [0, [-1, errno.EPERM], [0, 0], [-1, errno.EPERM], [(1 << 32) + 1, 0], [1 << 40, 0],
                   [-1, errno.ERANGE], 0, [-1, errno.EDOM], [0x72_0000_0005, 0]]


def test_default_errno_with_an_allow_list() -> None:
    allow = ["read", "write", "close", "exit", "exit_group", "brk", "mmap", "munmap", "mremap", "madvise", "mprotect",
             "futex", "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "sigaltstack", "getpid", "gettid",
             "clock_gettime", "fstat", "newfstatat", "lseek"]
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
           "syscalls": [{"names": allow, "action": "SCMP_ACT_ALLOW"}]}
    status, got = in_child(cfg, lambda: [raw(NR["getuid"]), raw(NR["getpid"])[0] > 0, _oserror(os.getcwd)])
    assert os.WIFEXITED(status)
    assert got == [[-1, errno.EACCES], True, errno.EACCES]


def test_kill_process_dies_by_sigsys() -> None:
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    status, got = in_child(cfg, os.getcwd)
    assert _killed_by_sigsys(status) and got is None


def test_a_large_filter_with_far_jumps() -> None:
    """Hundreds of syscalls each with a 64-bit argument rule: over 1000 instructions, trampolines included."""
    magic = 0x5EC0_0000_0000_0000
    rules = [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 + i % 4000,
              "args": [{"index": 5, "value": magic | nr, "op": "SCMP_CMP_EQ"}]}
             for i, (name, nr) in enumerate(sorted(NR.items(), key=lambda kv: kv[1]))]
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    prog = oci.compile(oci.Seccomp.from_json(cfg))
    assert len(prog) // 8 > 1000 and any(" ja " in line for line in sc.disassemble(prog))
    want = {name: 1 + i % 4000 for i, (name, _) in enumerate(sorted(NR.items(), key=lambda kv: kv[1]))}
    _, got = in_child(cfg, lambda: [raw(NR["getppid"], 0, 0, 0, 0, 0, magic | NR["getppid"]),
                                    raw(NR["getpid"], 0, 0, 0, 0, 0, magic | NR["getppid"])[0] > 0,
                                    raw(NR["uname"], 0, 0, 0, 0, 0, magic | NR["uname"])])
    assert got == [[-1, want["getppid"]], True, [-1, want["uname"]]]


def test_x32_calls_need_scmp_arch_x32() -> None:
    getpid_x32 = X32["getpid"]
    status, _ = in_child({"defaultAction": "SCMP_ACT_ALLOW"}, lambda: raw(getpid_x32))
    assert _killed_by_sigsys(status)
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
           "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                         "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_EQ"}]}]}
    _, got = in_child(cfg, lambda: [raw(getpid_x32, 7), raw(getpid_x32, 8)[1], raw(NR["getpid"], 7)])
    assert got[0] == [-1, errno.EPERM]
    assert got[1] in (0, errno.ENOSYS)  # reaches the kernel: ENOSYS without CONFIG_X86_X32_ABI
    assert got[2] == [-1, errno.EPERM]


def _int80(nr: int) -> int:
    """An i386 syscall from this 64-bit process: mov eax, nr; int 0x80; ret (the compat entry, AUDIT_ARCH_I386)."""
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(b"\xb8" + struct.pack("<I", nr) + b"\xcd\x80\xc3")
    fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    return fn()


def test_i386_calls_need_scmp_arch_x86() -> None:
    both = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    status, got = in_child({"defaultAction": "SCMP_ACT_ALLOW", "architectures": both},
                           lambda: [_int80(I386["getpid"]), os.getpid()])
    if not os.WIFEXITED(status) or got is None or got[0] != got[1]:
        pytest.skip(f"int 0x80 does not work here (ia32 emulation off?): status {status:#x}, {got}")
    status, _ = in_child({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]},
                         lambda: _int80(I386["getpid"]))
    assert _killed_by_sigsys(status)
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": both,
           "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}]}
    _, got = in_child(cfg, lambda: [_int80(I386["getppid"]), _int80(I386["getpid"]) == os.getpid(), raw(NR["getppid"])])
    assert got == [-errno.EPERM, True, [-1, errno.EPERM]]


def test_notify_listener_answers_a_call() -> None:
    """NOTIFY gives a listener fd (NEW_LISTENER, with TSYNC and WAIT_KILLABLE_RECV); a supervisor answers."""
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
           "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
           "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}
    parent_sock, child_sock = socket.socketpair()
    seen: list[sc.Notification] = []

    def body(listener: int) -> list:
        socket.send_fds(child_sock, [b"listener"], [listener])
        return [raw(NR["getppid"], 11, 22), raw(NR["getppid"], 33, 0)]

    def supervisor(pid: int) -> None:
        _, fds, _, _ = socket.recv_fds(parent_sock, 64, 1)
        listener = fds[0]
        try:
            n = sc.notif_recv(listener)
            seen.append(n)
            sc.notif_send(listener, n.id, val=4242)
            n = sc.notif_recv(listener)
            seen.append(n)
            sc.notif_send(listener, n.id, error=-errno.EROFS)
        finally:
            os.close(listener)

    status, got = in_child(cfg, body, before=supervisor)
    parent_sock.close()
    child_sock.close()
    assert got == [[4242, 0], [-1, errno.EROFS]]
    assert [(n.nr, n.arch, n.args[:2]) for n in seen] == [(NR["getppid"], sc.AUDIT_ARCH_X86_64, (11, 22)),
                                                           (NR["getppid"], sc.AUDIT_ARCH_X86_64, (33, 0))]
    assert seen[0].pid > 0 and seen[0].pid == seen[1].pid


def test_notify_without_a_listener_gives_enosys() -> None:
    """An exec'd process loads the filter with listener=False: NOTIFY calls fail with ENOSYS, others run."""
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
           "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}
    _, got = in_child(cfg, lambda: [raw(NR["getppid"]), raw(NR["getpid"])[0] > 0], listener=False)
    assert got == [[-1, errno.ENOSYS], True]


def test_features_lists_what_this_kernel_takes() -> None:
    f = oci.features()
    assert f["supportedFlags"] == ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                   "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    assert not sc.flag_supported(1 << 30)
    assert Path("/proc/self/status").read_text().count("Seccomp:\t0") == 1  # probing loaded nothing


def test_filter_flags_are_accepted() -> None:
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "flags": [
        "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}
    _, got = in_child(cfg, lambda: [_oserror(os.getcwd), Path("/proc/self/status").read_text().count("Seccomp:\t2")])
    assert got == [errno.EPERM, 1]
    assert sc.action_available(sc.SECCOMP_RET_USER_NOTIF) and sc.action_available(sc.SECCOMP_RET_KILL_PROCESS)
    assert not sc.action_available(0x7FFE0000)  # no such action


def _containers_profile(path: Path) -> dict:
    """containers-common's seccomp.json as an OCI linux.seccomp for amd64 with no capabilities."""
    prof = json.loads(path.read_text())
    rules = []
    for r in prof["syscalls"]:
        inc, exc = r.get("includes") or {}, r.get("excludes") or {}
        if inc.get("caps") or inc.get("minKernel") or (inc.get("arches") and "amd64" not in inc["arches"]):
            continue
        if exc.get("arches") and "amd64" in exc["arches"]:
            continue
        rules.append({k: v for k, v in r.items() if k in ("names", "action", "args", "errnoRet")})
    arches = next(([m["architecture"], *m["subArchitectures"]] for m in prof.get("archMap", [])
                   if m["architecture"] == "SCMP_ARCH_X86_64"), [])
    return {"defaultAction": prof["defaultAction"], "defaultErrnoRet": prof.get("defaultErrnoRet"),
            "architectures": arches, "syscalls": rules}


def test_the_containers_default_profile() -> None:
    path = Path("/usr/share/containers/seccomp.json")
    if not path.exists():
        pytest.skip(f"{path} missing (containers-common)")
    cfg = _containers_profile(path)

    def body() -> list:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.close()
        return [sorted(os.listdir("/proc/self"))[:1] != [], raw(NR["socket"], socket.AF_NETLINK, socket.SOCK_RAW, 9),
                raw(NR["chroot"], 0), raw(NR["add_key"], 0, 0, 0, 0, 0)]

    status, got = in_child(cfg, body)
    assert os.WIFEXITED(status)
    assert got == [True, [-1, errno.EINVAL], [-1, errno.EPERM], [-1, cfg["defaultErrnoRet"] or errno.EPERM]]
