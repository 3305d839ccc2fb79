"""OCI hooks: run on the host with the container's state on stdin, each with its timeout."""

from __future__ import annotations

import os
import select

from jaula import fastjson
from jaula.errors import HookError
from jaula.linux.proc import pidfd_open
from jaula.oci.config import Hook

DEFAULT_TIMEOUT = 120  # seconds, when the hook gives none


def run(kind: str, hooks: list[Hook], state: dict) -> None:
    """Run every hook of `kind` in order; the first failure stops the rest and raises HookError."""
    data = fastjson.dumps(state).encode()
    for hook in hooks:
        run_one(kind, hook, data)


def run_one(kind: str, hook: Hook, state_json: bytes) -> None:
    r, w = os.pipe()
    out = os.memfd_create("hook-output", os.MFD_CLOEXEC)
    env = dict(e.split("=", 1) for e in hook.env)
    args = hook.args or [hook.path]
    try:
        pid = os.posix_spawn(hook.path, args, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2),
        ])
    except OSError as e:
        os.close(r), os.close(w), os.close(out)
        raise HookError(f"{kind} hook {hook.path!r}: cannot run it: {e.strerror}") from None
    os.close(r)
    try:
        try:
            os.write(w, state_json)
        except BrokenPipeError:
            pass  # a hook may ignore its stdin
        os.close(w)
        timeout = hook.timeout or DEFAULT_TIMEOUT
        pfd = pidfd_open(pid)
        try:
            poller = select.poll()  # poll, not select: a caller may hold fds above 1023
            poller.register(pfd, select.POLLIN)
            ready = poller.poll(timeout * 1000)
        finally:
            os.close(pfd)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise HookError(f"{kind} hook {hook.path!r} timed out after {timeout} s and was killed")
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            os.lseek(out, 0, os.SEEK_SET)
            text = os.read(out, 4096).decode(errors="replace").strip()
            how = f"exit status {code}" if code > 0 else f"signal {-code}"
            raise HookError(f"{kind} hook {hook.path!r} failed with {how}{': ' + text if text else ''}")
    finally:
        os.close(out)
