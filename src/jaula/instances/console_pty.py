"""A system instance's console as a pty, and the way its master reaches jaulad's console keeper.

The init gets a pty of the instance's own devpts as its console (OCI `process.terminal`: jaula.oci
makes it, binds the slave on /dev/console and sends the master over a socket pair during
create). The driver hands that master, the console log's fd and a pidfd of the init to the
console keeper (jaula.daemon.console_keeper), one process per jaulad root that drains every
master into its log, so the init never blocks on a full pty and a `kill -9` of jaulad loses
nothing. jaulad asks the keeper for a dup of a master to write input and set the window size.

Protocol: SOCK_SEQPACKET on <jaulad root>/console-keeper.sock (0600), one message a packet,
"VERB args..." in UTF-8, fds by SCM_RIGHTS (jaula.oci.sync's format):
  HOLD <name>      fds [master, log, pidfd]: keep the master until the pidfd says the init ended
                   (no reply: the start path does not wait for a round trip)
  GET <name>       -> "MASTER" with fds [a dup of the master], or "ERROR <text>"
  LIST             -> "HELD <name> <name>..."
  AGENT            -> "AGENT <listeners> <answered> <left to the kernel> <EFAULTs>" (the
                   seccomp agent on <root>/seccomp-agent.sock: jaula.daemon.sysinfo_notify)
  OWNER            jaulad's connection: the keeper lives while it is open or while it holds a
                   master (-> "KEEPER <pid>")
"""

from __future__ import annotations

import _socket
import os

from jaula.errors import BadState, JaulaError

SOCKET_NAME = "console-keeper.sock"
AGENT_SOCKET = "seccomp-agent.sock"   # the keeper's seccomp agent (sysinfo): linux.seccomp.listenerPath
TIMEOUT_S = 5.0


def connect(path: str, timeout: float = TIMEOUT_S) -> _socket.socket:
    """A connection to the keeper at `path` (OSError when none listens, or it answers nothing
    within `timeout`). A blocking socket with SO_SNDTIMEO/SO_RCVTIMEO, not Python's timeout: a
    UNIX connect in non-blocking mode fails with EAGAIN at once when the listen backlog is full,
    a blocking one waits for the keeper's accept (at most SO_SNDTIMEO)."""
    import struct

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC, 0)
    try:
        tv = struct.pack("ll", int(timeout), int(timeout % 1 * 1e6))
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, tv)
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, tv)
        s.connect(path)
    except OSError:
        s.close()
        raise
    return s


def hand_over(sock: _socket.socket, name: str, master: int, log_fd: int, pidfd: int) -> None:
    """Give the keeper an instance's console (it dups what it gets: the caller closes its fds)."""
    from jaula.oci import sync

    sync.send(sock, "HOLD", name, fds=[master, log_fd, pidfd])


def request(path: str, verb: str, arg: str = "") -> tuple[str, str, list[int]]:
    """One question to the keeper and its answer (name, payload, fds); JaulaError when it does not answer."""
    from jaula.oci import sync

    try:
        s = connect(path)
    except OSError as exc:
        raise JaulaError(f"The console keeper does not answer on {path!r} ({exc.strerror}): jaulad starts "
                         "another one; instances started before it have no console until restarted") from None
    try:
        sync.send(s, verb, arg)
        name, payload, fds = sync.recv(s, with_fds=True)
    except OSError as exc:
        raise JaulaError(f"The console keeper on {path!r}: {exc}") from None
    finally:
        s.close()
    if not name:
        raise JaulaError(f"The console keeper on {path!r} closed the connection without an answer")
    return name, payload, fds


def fetch_master(path: str, name: str) -> int:
    """A dup of instance `name`'s console master (the caller closes it); BadState when none is held."""
    verb, payload, fds = request(path, "GET", name)
    if verb == "MASTER" and len(fds) == 1:
        return fds[0]
    for fd in fds:
        os.close(fd)
    raise BadState(payload or f"The console keeper holds no console for instance {name!r}")


def held(path: str) -> list[str]:
    """The names whose console the keeper holds."""
    verb, payload, fds = request(path, "LIST")
    for fd in fds:
        os.close(fd)
    return payload.split() if verb == "HELD" else []
