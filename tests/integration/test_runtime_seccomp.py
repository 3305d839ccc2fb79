"""linux.seccomp in real containers: errno rules, argument rules, and a notify listener (listenerPath)."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from jaula.linux import seccomp as sc
from tests.support.runtime import Runtime

pytestmark = pytest.mark.root

Bundle = Callable[..., Path]


def _script(cmd: str) -> list[str]:
    return ["/bin/sh", "-c", cmd]


def test_errno_rule_and_allow_default(runtime: Runtime, bundle: Bundle) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]}
    b = bundle(_script("mkdir /tmp/d; echo rc=$?; touch /tmp/f && echo touched"),
               root={"readonly": False}, linux={"seccomp": seccomp})
    out = runtime.run(b, check=True).stdout + runtime.run(b).stderr
    assert "rc=1" in out and "Permission denied" in out, out
    assert "touched" in out


def test_no_new_privileges_off_still_loads_the_filter(runtime: Runtime, bundle: Bundle) -> None:
    """Without no_new_privs the filter must be loaded while CAP_SYS_ADMIN is still held."""
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}]}
    b = bundle(["/usr/bin/probe", "info"], process={"noNewPrivileges": False}, linux={"seccomp": seccomp})
    info = runtime.run_json(b)
    assert info["status"]["Seccomp"].strip() == "2"
    assert info["status"]["NoNewPrivs"].strip() == "0"


def test_argument_rule(runtime: Runtime, bundle: Bundle) -> None:
    """personality(PER_LINUX32 = 8) is refused by an argument rule, other personalities are not."""
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}
    b = bundle(_script("linux32 true; echo rc32=$?; linux64 true; echo rc64=$?"), linux={"seccomp": seccomp})
    result = runtime.run(b)
    assert "rc32=1" in result.stdout and "rc64=0" in result.stdout, (result.stdout, result.stderr)


def test_notify_listener_answers_for_the_container(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    """The runtime hands the notify fd to the agent at listenerPath with the container's state;
    the agent answers the container's mkdir with EROFS."""
    path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(30)
    got: dict = {}

    def agent() -> None:
        conn, _ = srv.accept()
        with conn:
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 4)
            got["state"] = json.loads(msg)
            fd = fds[0]
        try:
            n = sc.notif_recv(fd)
            got["nr"] = n.nr
            sc.notif_send(fd, n.id, error=-errno.EROFS)
        finally:
            os.close(fd)

    t = threading.Thread(target=agent, daemon=True)
    t.start()
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path, "listenerMetadata": "hello",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    b = bundle(_script("mkdir /tmp/d; echo rc=$?"), root={"readonly": False}, linux={"seccomp": seccomp})
    result = runtime.run(b, timeout=30)
    t.join(10)
    srv.close()
    assert "rc=1" in result.stdout, (result.stdout, result.stderr)
    assert "Read-only file system" in result.stderr
    assert got["state"]["fds"] == ["seccompFd"] and got["state"]["metadata"] == "hello"
    assert got["state"]["state"]["id"] and got["state"]["state"]["pid"] > 0
    assert got["nr"] in (sc.syscall_numbers("x86_64")["mkdir"], sc.syscall_numbers("x86_64")["mkdirat"])


def test_bad_profile_is_refused_before_anything_exists(runtime: Runtime, bundle: Bundle) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_FOO", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    b = bundle(["/bin/true"], linux={"seccomp": seccomp})
    result = runtime.run(b)
    assert result.returncode == 3, result
    assert "defaultAction" in result.stderr and "listenerPath" in result.stderr, result.stderr
    assert runtime.container_ids() == []
