"""The container process's identity and privileges: rlimits, user and groups, capabilities,
no_new_privs, LSM labels, fds and cwd, and the program lookup. Used by init and by exec."""

from __future__ import annotations

import errno
import os
import stat

from jaula.errors import ConfigError, JaulaError, SyscallError
from jaula.linux import caps as capsys
from jaula.linux import proc
from jaula.linux.kfile import write_kernel_file
from jaula.oci.config import Process

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def set_rlimits(p: Process) -> None:
    for rl in p.rlimits:
        soft = min(rl.soft, proc.RLIM_INFINITY)
        hard = min(rl.hard, proc.RLIM_INFINITY)
        try:
            proc.setrlimit(rl.resource, soft, hard)
        except SyscallError as e:
            detail = f"{rl.type} soft={rl.soft} hard={rl.hard}"
            if e.errno == errno.EPERM:
                detail += f" (current hard limit {proc.getrlimit(rl.resource)[1]}; raising it needs CAP_SYS_RESOURCE)"
            raise SyscallError("setrlimit", e.errno, detail) from None


def lsm_enabled(name: str) -> bool:
    if name == "apparmor":
        try:
            with open("/sys/module/apparmor/parameters/enabled") as f:
                return f.read().strip() == "Y"
        except OSError:
            return False
    if name == "selinux":
        return os.path.exists("/sys/fs/selinux/enforce")
    return False


def apply_lsm(p: Process, log) -> None:
    """Labels for the coming execve; where the LSM is off they are ignored with a debug line."""
    if p.apparmor_profile:
        if lsm_enabled("apparmor"):
            _write_attr("apparmor/exec", "/proc/self/attr/exec", f"exec {p.apparmor_profile}")
        else:
            log.debug(f"apparmor is not enabled on this host: profile {p.apparmor_profile!r} ignored")
    if p.selinux_label:
        if lsm_enabled("selinux"):
            _write_attr("exec", "/proc/self/attr/exec", p.selinux_label)
        else:
            log.debug(f"selinux is not enabled on this host: label {p.selinux_label!r} ignored")


def _write_attr(specific: str, generic: str, value: str) -> None:
    path = f"/proc/thread-self/attr/{specific}"
    if not os.path.exists(path):
        path = generic
    write_kernel_file(path, value)


def drop_bounding(p: Process) -> None:
    capsys.bounding_keep(capsys.to_mask((p.capabilities or {}).get("bounding", [])))


def set_user(p: Process, setgroups_allowed: bool = True) -> None:
    """Switch to the process's uid/gid, keeping capabilities across the uid change (set again after)."""
    u = p.user
    proc.prctl(proc.PR_SET_KEEPCAPS, 1)
    try:
        if setgroups_allowed:
            os.setgroups(u.additional_gids)
        os.setresgid(u.gid, u.gid, u.gid)
        os.setresuid(u.uid, u.uid, u.uid)
    except OSError as e:
        raise SyscallError("setresuid", e.errno or errno.EPERM, f"uid {u.uid} gid {u.gid}: is it mapped in the user namespace?") from None
    finally:
        proc.prctl(proc.PR_SET_KEEPCAPS, 0)
    if u.umask is not None:
        os.umask(u.umask)
    else:
        os.umask(0o022)


def set_caps(p: Process) -> None:
    c = p.capabilities or {}
    capsys.capset(capsys.to_mask(c.get("effective", [])), capsys.to_mask(c.get("permitted", [])),
                  capsys.to_mask(c.get("inheritable", [])))
    ambient = c.get("ambient", [])
    if ambient:
        capsys.ambient_clear()
        for name in ambient:
            try:
                capsys.ambient_raise(capsys.BY_NAME[name])
            except SyscallError:
                pass  # as runc: an ambient cap outside permitted+inheritable is skipped


def lookup(p: Process) -> str:
    """The program to execve, found through the container's own PATH, like execvp would."""
    prog = p.args[0]
    if "/" in prog:
        candidates = [prog if os.path.isabs(prog) else os.path.join(p.cwd, prog)]
    else:
        path = next((e[5:] for e in p.env if e.startswith("PATH=")), DEFAULT_PATH)
        candidates = [os.path.join(d or ".", prog) for d in path.split(":")]
    denied = False
    for c in candidates:
        try:
            st = os.stat(c)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(c, os.X_OK):
            return c
        denied = True
    if denied:
        raise JaulaError(f'exec: "{prog}": permission denied')
    if "/" in prog:
        raise JaulaError(f'exec: "{prog}": stat {prog}: no such file or directory')
    raise JaulaError(f'exec: "{prog}": executable file not found in $PATH')


def enter_cwd(p: Process) -> None:
    """chdir to the process's cwd and prove it is inside the container's root.

    A leaked host directory fd used as cwd (/proc/self/fd/N, CVE-2024-21626) leaves the cwd outside
    the root: getcwd then starts with "(unreachable)" and we refuse.
    """
    try:
        os.chdir(p.cwd)
    except OSError as e:
        raise ConfigError(f"process.cwd {p.cwd!r}: {e.strerror}") from None
    try:
        here = os.getcwd()
    except OSError as e:
        raise ConfigError(f"process.cwd {p.cwd!r} is not inside the container: {e.strerror}") from None
    if not here.startswith("/") or here.startswith("(unreachable)"):
        raise ConfigError(f"process.cwd {p.cwd!r} resolves outside the container root")


def close_fds(keep: set[int]) -> None:
    """Close every fd except `keep`: nothing of the host may reach the container.

    By ranges (close_range(2)), never from a listing of /proc/self/fd: after pivot_root, /proc is
    whatever the container's root has there, and an image can ship a fake listing that hides fds.
    """
    lo = 0
    for fd in sorted(keep):
        if fd > lo:
            os.closerange(lo, fd)
        lo = max(lo, fd + 1)
    os.closerange(lo, 0x7FFFFFFF)


TRAMPOLINE_MAGIC = "jaula-exec-trampoline"
_MFD_EXEC = 0x0010  # Linux 6.3: ask for an executable memfd where vm.memfd_noexec would refuse one


def trampoline() -> int | None:
    """A sealed memfd holding the exec trampoline (trampoline.c), or None on an architecture we have none for.

    The container's program is exec'd through it, so that /proc/self/exe at that execve is this
    sealed memfd, never the host's interpreter (CVE-2019-5736: `#!/proc/self/exe`).
    """
    from jaula.oci.trampoline_blob import BLOBS

    blob = BLOBS.get(os.uname().machine)
    if blob is None:
        return None
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create("jaula-exec", flags | _MFD_EXEC)
    except OSError:
        fd = os.memfd_create("jaula-exec", flags)  # before 6.3: memfds are executable anyway
    try:
        os.write(fd, blob)
        proc.add_seals(fd, proc.F_SEAL_SEAL | proc.F_SEAL_SHRINK | proc.F_SEAL_GROW | proc.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


_kept_trampoline: list[int | None] = []


def kept_trampoline() -> int | None:
    """trampoline(), made once per process and kept open: jaulad's spawner gives the same sealed
    memfd to every init it forks (0.5-0.6 ms an init otherwise). Sealed against writes, growth and
    shrinking, it is the same read-only program for every container that could reach it."""
    if not _kept_trampoline:
        _kept_trampoline.append(trampoline())
    return _kept_trampoline[0]


def exec_program(tramp: int | None, exe: str, args: list[str], env: dict[str, str]) -> None:
    """execve the container's program, through the trampoline when there is one. Never returns."""
    if tramp is None:
        os.execve(exe, args, env)
    os.execve(tramp, [TRAMPOLINE_MAGIC, exe, *args], env)
