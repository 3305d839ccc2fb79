"""The messages between `jaula-runtime` and the container's init, over a SOCK_SEQPACKET pair.

Like runc's libcontainer/sync.go: every step of the handshake has a name. A message is one
datagram: the name, optionally a space and a payload (text), optionally fds by SCM_RIGHTS.
Plain string constants rather than an Enum: `import enum` costs milliseconds on the hot path.
"""

from __future__ import annotations

import _socket
import os
import sys

from jaula.errors import JaulaError

# init (or the intermediate) -> runtime
USERNS = "USERNS"                # a new user namespace exists: write the id maps
PID = "PID"                      # payload: host pid of the container's init
NAMESPACES = "NAMESPACES"        # a cloned init's namespaces all exist (only when the runtime asks: Plan.tell_namespaces)
CREATE_RUNTIME = "CREATE_RUNTIME"  # namespaces exist, before pivot_root: run prestart/createRuntime hooks
READY = "READY"                  # init waits for start; create may return
SECCOMP = "SECCOMP"              # fds: the seccomp notify listener, for linux.seccomp.listenerPath
ERROR = "ERROR"                  # payload: the error text; init exits
# runtime -> init
IDMAPPED = "IDMAPPED"            # fds: detached idmapped mounts, in the order of the config's idmap mounts
GO_ON = "GO_ON"                  # reply to USERNS (maps written) and CREATE_RUNTIME (payload: the init's host pid)

_MAX = 65536


class ProtocolError(JaulaError):
    pass


def pair() -> tuple[_socket.socket, _socket.socket]:
    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC, 0)


def send(sock: _socket.socket, name: str, payload: str = "", fds: list[int] | None = None) -> None:
    data = (name + (" " + payload if payload else "")).encode()
    if fds:
        raw = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)  # int[] (no `struct`: an import less)
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, raw)])
    else:
        sock.send(data)


def recv(sock: _socket.socket, with_fds: bool = False) -> tuple[str, str, list[int]]:
    """(name, payload, fds); an empty name means the other side closed."""
    fds: list[int] = []
    if with_fds:
        data, anc, _flags, _addr = sock.recvmsg(_MAX, _socket.CMSG_SPACE(4 * 8))
        for level, kind, raw in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.extend(int.from_bytes(raw[i:i + 4], sys.byteorder, signed=True) for i in range(0, len(raw) - 3, 4))
    else:
        data = sock.recv(_MAX)
    text = data.decode(errors="replace")
    name, _, payload = text.partition(" ")
    return name, payload, fds


def expect(sock: _socket.socket, want: str) -> str:
    name, payload, _ = recv(sock)
    if name == want:
        return payload
    if name == ERROR:
        raise JaulaError(payload)
    if not name:
        raise ProtocolError(f"the other side exited while waiting for {want}")
    raise ProtocolError(f"expected {want}, got {name}")


def send_fd_to_path(path: str, fd: int) -> None:
    """Hand `fd` to whoever listens on the UNIX socket `path` (the console socket of runc's CLI)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
    try:
        s.connect(path)
        send(s, "console", fds=[fd])
    finally:
        s.close()


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
