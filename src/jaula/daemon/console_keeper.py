"""The console keeper: ONE small single-threaded process per jaulad root that holds the pty master
of every running system instance's console and drains it into the instance's console log.

    python -m jaula.daemon.console_keeper --root ROOT      (started by jaulad: console_keeper_service.py)

Why a process of its own: the init must never block because nobody reads its console, and a
`kill -9` of jaulad (live restore keeps instances running) must lose neither the masters nor the
output printed meanwhile. One process for all instances, not one per instance: the memory goal
(< 1 MiB host memory per idle instance) allows an fd set per instance, not a process.

What it holds per instance: the master, a slave fd of the same pty (TIOCGPTPEER: with a slave
always open the master never reads EIO or hangs up while a getty on the console respawns), the
log fd it appends to (O_APPEND; capped to its last 128 KiB every 512 KiB written, as jaulad caps
it every 5 s: console_log.py), and a
pidfd of the init: when the init ends, what is left is drained and everything is closed.
The protocol is in jaula.instances.console_pty. The socket is <ROOT>/console-keeper.sock, 0600.

It lives while jaulad's OWNER connection is open or while it holds a console: a killed jaulad
leaves it to the running instances, and the next jaulad reconnects to it; once jaulad is gone and
the last instance stopped, it exits. It also exits when its socket file is removed or replaced.

It is also the seccomp agent of `security.syscalls.intercept.sysinfo` (jaula.daemon.sysinfo_notify):
jaula.oci hands it each instance process's seccomp listener on <ROOT>/seccomp-agent.sock (OCI
listenerPath: one stream connection per listener, the state JSON with the fd), and it answers
sysinfo(2) for them from the instance's cgroup. A listener is closed when the kernel hangs it up
(no process uses its filter any more); the keeper lives while it holds one.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import select
import signal
import sys
import time

from jaula.instances.console_pty import AGENT_SOCKET, SOCKET_NAME
from jaula.oci import sync

# Small on purpose (11.0 MiB RSS idle; logging, argparse and socket made it 12.8): _socket, not
# socket; a line on stderr (its log file), not logging.
KEEPER_CAP_BYTES = 4 * 128 * 1024   # console_log.KEEPER_CAP_BYTES (that module is imported when needed)


class _Log:
    @staticmethod
    def _say(level: str, msg: str, args: tuple) -> None:
        try:
            sys.stderr.write(f"console-keeper: {level} {msg % args if args else msg}\n")
            sys.stderr.flush()
        except (OSError, ValueError, TypeError):
            pass

    def info(self, msg: str, *args: object) -> None:
        self._say("INFO", msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._say("WARNING", msg, args)

    def exception(self, msg: str, *args: object) -> None:
        import traceback

        self._say("ERROR", msg + "\n" + traceback.format_exc().rstrip(), args)


log = _Log()

TIOCGPTPEER = 0x5441          # _IO('T', 0x41), Linux 4.13: an fd of the slave from the master
CHUNK = 65536
MAX_CLIENTS = 256
CHECK_SOCKET_S = 5.0          # how often it checks that its socket file is still its own
OWNER_WAIT_S = 60.0           # a keeper whose jaulad never connected (and holds nothing) exits after this
HUP_PAUSE_S = 0.5             # a master with no slave open (no TIOCGPTPEER) is looked at again after this


class _Held:
    __slots__ = ("log", "master", "name", "paused_until", "pidfd", "slave", "written")

    def __init__(self, name: str, master: int, slave: int, log_fd: int, pidfd: int) -> None:
        self.name, self.master, self.slave, self.log, self.pidfd = name, master, slave, log_fd, pidfd
        self.paused_until = 0.0
        self.written = 0         # bytes appended since the log was last capped

    def fds(self) -> list[int]:
        return [fd for fd in (self.master, self.slave, self.log, self.pidfd) if fd >= 0]


class _Listener:
    __slots__ = ("cgroup", "id", "pid")

    def __init__(self, cid: str, pid: int, cgroup: object) -> None:
        self.id, self.pid, self.cgroup = cid, pid, cgroup


AGENT_MSG_MAX = 1 << 20       # the OCI state of one listener hand-off (annotations included)


class Keeper:
    def __init__(self, path: str, agent_path: str | None = None) -> None:
        self.path = path
        self.held: dict[str, _Held] = {}
        self.by_fd: dict[int, _Held] = {}          # master and pidfd -> its entry
        self.clients: dict[int, _socket.socket] = {}
        self.owner: int | None = None
        self.had_owner = False
        self.orphan_deadline = time.monotonic() + OWNER_WAIT_S   # no jaulad ever came: exit
        self.poll = select.poll()
        self.listener = self._listen()
        self.ino = os.stat(path).st_ino
        # the seccomp agent: its socket, hand-offs being read (fd -> (conn, data, fds)), listeners held
        self.agent_path = agent_path
        self.agent: _socket.socket | None = None
        self.handoffs: dict[int, tuple[_socket.socket, bytearray, list[int]]] = {}
        self.listeners: dict[int, _Listener] = {}
        self.tops: dict[str, object] = {}         # container id -> its instance's cgroup (from its init at create)
        self.answers = None                        # the Agent, made at the first hand-off (its imports: ~0.4 MiB)
        if agent_path:
            self.agent = self._listen(agent_path, _socket.SOCK_STREAM)

    def _listen(self, path: str | None = None, kind: int = _socket.SOCK_SEQPACKET) -> _socket.socket:
        path = path or self.path
        s = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK, 0)
        tmp = f"{path}.{os.getpid()}"
        old = os.umask(0o177)
        try:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            s.bind(tmp)
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        s.listen(1024)
        os.rename(tmp, path)  # in place at once: a client never sees no socket there
        self.poll.register(s.fileno(), select.POLLIN)
        return s

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        next_check = time.monotonic() + CHECK_SOCKET_S
        while True:
            now = time.monotonic()
            if (self.owner is None and not self.held and not self.listeners
                    and (self.had_owner or now > self.orphan_deadline)):
                log.info("jaulad is gone and no console or seccomp listener is held: exiting")
                return 0
            paused = [h for h in self.held.values() if h.paused_until and h.paused_until <= now]
            for h in paused:
                h.paused_until = 0.0
                self.poll.register(h.master, select.POLLIN)
            waits = [h.paused_until - now for h in self.held.values() if h.paused_until]
            timeout = min([next_check - now, *waits])
            try:
                events = self.poll.poll(max(0, int(timeout * 1000)) + 1)
            except InterruptedError:
                continue
            for fd, ev in events:
                try:
                    self._event(fd, ev)
                except Exception:  # a bug on one fd never ends the keeper (it would hang up every console)
                    log.exception("event %s on fd %d", ev, fd)
                    if fd in self.clients:
                        self._close_client(fd)
                    elif fd in self.handoffs:
                        self._end_handoff(fd)
                    elif fd in self.listeners:
                        self._drop_listener(fd)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_SOCKET_S
                if not self._socket_is_mine():
                    log.info("%s is gone or another keeper's: exiting", self.path)
                    return 0

    def _socket_is_mine(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.ino
        except OSError:
            return False

    def _event(self, fd: int, ev: int) -> None:
        if fd == self.listener.fileno():
            self._accept()
        elif fd in self.clients:
            self._client(fd)
        elif fd in self.listeners:
            self._notified(fd, ev)
        elif self.agent is not None and fd == self.agent.fileno():
            self._accept_handoff()
        elif fd in self.handoffs:
            self._handoff(fd)
        elif (h := self.by_fd.get(fd)) is not None:
            if fd == h.pidfd:
                self.drop(h)
            else:
                self._drain(h, ev)

    # --- consoles ------------------------------------------------------------------------------------
    def _drain(self, h: _Held, ev: int = select.POLLIN) -> None:
        """Move what the master has into the log; never blocks (the master is non-blocking)."""
        for _ in range(16):  # at most 1 MiB at once: the other consoles get their turn
            try:
                data = os.read(h.master, CHUNK)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.EIO:
                    log.warning("console of %s: read: %s", h.name, e)
                data = b""
            if not data:  # no slave open (EIO/POLLHUP): look again a bit later, not in a busy loop
                self._pause(h)
                return
            self._append(h, data)
        if ev & select.POLLHUP:
            self._pause(h)

    def _pause(self, h: _Held) -> None:
        if not h.paused_until:
            h.paused_until = time.monotonic() + HUP_PAUSE_S
            self.poll.unregister(h.master)

    @staticmethod
    def _append(h: _Held, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(h.log, view):]
            except OSError as e:  # a full disk: the output is lost, the init goes on
                log.warning("console of %s: write to its log: %s (%d bytes lost)", h.name, e, len(view))
                return
        h.written += len(data)
        if h.written >= KEEPER_CAP_BYTES:  # bounded on disk even while jaulad is down
            h.written = 0
            from jaula.daemon import console_log

            try:
                console_log.cap_fd(h.log)
            except OSError as e:
                log.warning("console of %s: capping its log: %s", h.name, e)

    def hold(self, name: str, master: int, log_fd: int, pidfd: int) -> None:
        old = self.held.get(name)
        if old is not None:
            self.drop(old)
        os.set_blocking(master, False)
        try:
            slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            log.info("console of %s: no slave fd (TIOCGPTPEER: %s); a hang-up pauses its drain", name, e)
            slave = -1
        h = _Held(name, master, slave, log_fd, pidfd)
        self.held[name] = h
        self.by_fd[master] = self.by_fd[pidfd] = h
        self.poll.register(master, select.POLLIN)
        self.poll.register(pidfd, select.POLLIN)
        log.info("holding the console of %s", name)

    def drop(self, h: _Held) -> None:
        """The init ended (or a new one of the name came): drain what is left, close everything."""
        if not h.paused_until:
            self._drain(h)
        for fd in (h.master, h.pidfd):
            self.by_fd.pop(fd, None)
            try:
                self.poll.unregister(fd)
            except KeyError:
                pass
        for fd in h.fds():
            os.close(fd)
        if self.held.get(h.name) is h:
            del self.held[h.name]
        log.info("dropped the console of %s", h.name)

    # --- the seccomp agent (sysinfo) ---------------------------------------------------------------------
    def _notified(self, fd: int, ev: int) -> None:
        """A listener is readable (a sysinfo waits) or hung up (no process uses its filter any more)."""
        if ev & select.POLLIN:
            try:
                self.answers.answer(fd, self.listeners[fd].cgroup)
            except OSError as e:
                log.warning("seccomp listener of %s: %s: dropped", self.listeners[fd].id, e)
                self._drop_listener(fd)
                return
        if ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) and not ev & select.POLLIN:
            self._drop_listener(fd)

    def _drop_listener(self, fd: int) -> None:
        entry = self.listeners.pop(fd)
        try:
            self.poll.unregister(fd)
        except KeyError:
            pass
        os.close(fd)
        if not any(x.id == entry.id for x in self.listeners.values()):
            self.tops.pop(entry.id, None)

    def _accept_handoff(self) -> None:
        while True:
            try:
                fd, _ = self.agent._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accept on %s: %s", self.agent_path, e)
                return
            conn = _socket.socket(fileno=fd)
            if len(self.handoffs) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            self.handoffs[fd] = (conn, bytearray(), [])
            self.poll.register(fd, select.POLLIN)

    def _end_handoff(self, fd: int) -> tuple[bytearray, list[int]]:
        conn, data, fds = self.handoffs.pop(fd)
        self.poll.unregister(fd)
        conn.close()
        return data, fds

    def _handoff(self, fd: int) -> None:
        """Read a listener hand-off (jaula.oci.seccomp.send_to_listener) to its end, then hold the fd."""
        conn, data, fds = self.handoffs[fd]
        while True:
            try:
                chunk, anc, _flags, _addr = conn.recvmsg(CHUNK, _socket.CMSG_SPACE(4 * 4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk, anc = b"", []
            for level, kind, raw in anc:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    fds.extend(int.from_bytes(raw[i:i + 4], sys.byteorder, signed=True) for i in range(0, len(raw) - 3, 4))
            if not chunk or len(data) + len(chunk) > AGENT_MSG_MAX:
                break
            data += chunk
        data, fds = self._end_handoff(fd)
        import json

        try:
            msg = json.loads(bytes(data))
            state = msg["state"]
            cid, pid, status = str(state["id"]), int(state["pid"]), state.get("status")
        except (ValueError, KeyError, TypeError) as e:
            for f in fds:
                os.close(f)
            log.warning("a seccomp listener hand-off without its OCI state (%s): refused", e)
            return
        if len(fds) != 1:
            for f in fds:
                os.close(f)
            log.warning("a seccomp listener hand-off for %s with %d fds: refused", cid, len(fds))
            return
        if self.answers is None:
            from jaula.daemon.sysinfo_notify import Agent

            self.answers = Agent()
        # the instance's cgroup is its init's while it is created (a systemd moves itself to init.scope later)
        top = self.tops.get(cid) if status != "creating" else None
        if top is None:
            top = self.answers.instance_cgroup(pid)
            if status == "creating" and top is not None:
                self.tops[cid] = top
        lfd = fds[0]
        os.set_blocking(lfd, False)
        self.listeners[lfd] = _Listener(cid, pid, top)
        self.poll.register(lfd, select.POLLIN)

    # --- clients -------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                fd, _ = self.listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accept: %s", e)
                return
            conn = _socket.socket(fileno=fd)  # close-on-exec already (accept4 SOCK_CLOEXEC)
            if len(self.clients) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            self.clients[conn.fileno()] = conn
            self.poll.register(conn.fileno(), select.POLLIN)

    def _close_client(self, fd: int) -> None:
        conn = self.clients.pop(fd)
        self.poll.unregister(fd)
        if fd == self.owner:
            self.owner = None
            log.info("jaulad's connection closed (%d console(s) held)", len(self.held))
        conn.close()

    def _client(self, fd: int) -> None:
        conn = self.clients[fd]
        try:
            verb, arg, fds = sync.recv(conn, with_fds=True)
        except BlockingIOError:
            return
        except OSError:
            verb, arg, fds = "", "", []
        if not verb:
            for f in fds:
                os.close(f)
            self._close_client(fd)
            return
        try:
            reply = self._answer(fd, verb, arg, fds)
        except Exception as e:  # one bad request never ends the keeper
            log.exception("request %s %s", verb, arg)
            reply = ("ERROR", f"the console keeper: {e}", [])
        if reply is not None:
            try:
                sync.send(conn, reply[0], reply[1], fds=reply[2])
            except OSError:
                self._close_client(fd)
            finally:
                for f in reply[2]:
                    os.close(f)

    def _answer(self, fd: int, verb: str, arg: str, fds: list[int]) -> tuple[str, str, list[int]] | None:
        if verb == "HOLD":
            if len(fds) != 3 or not arg:
                for f in fds:
                    os.close(f)
                log.warning("HOLD %r with %d fds refused (needs a name and 3 fds)", arg, len(fds))
                return None
            self.hold(arg, *fds)
            return None
        for f in fds:
            os.close(f)
        if verb == "GET":
            h = self.held.get(arg)
            if h is None:
                why = (f"Instance {arg!r} has no console held by the console keeper: it is not running, it is an "
                       "app instance (its output: jaula logs), or it was started while no keeper ran (restart it)")
                return ("ERROR", why, [])
            return ("MASTER", "", [os.dup(h.master)])
        if verb == "LIST":
            return ("HELD", " ".join(sorted(self.held)), [])
        if verb == "AGENT":   # the seccomp agent's figures: listeners held, answers, kernel's answers, EFAULTs
            a = self.answers
            counts = (len(self.listeners), a.answered, a.continued, a.faulted) if a else (0, 0, 0, 0)
            return ("AGENT", " ".join(map(str, counts)), [])
        if verb == "OWNER":
            if self.owner is not None and self.owner != fd:
                log.warning("a second OWNER connection: it replaces the first")
            self.owner, self.had_owner = fd, True
            return ("KEEPER", str(os.getpid()), [])
        return ("ERROR", f"unknown request {verb!r}", [])


USAGE = ("usage: python -m jaula.daemon.console_keeper --root ROOT [--no-agent]  (jaulad starts it: one per root;"
         " --no-agent: no seccomp agent socket)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    agent = "--no-agent" not in args
    args = [a for a in args if a != "--no-agent"]
    if len(args) != 2 or args[0] != "--root" or not args[1]:
        print(USAGE, file=sys.stderr)
        return 2
    path = os.path.join(os.path.abspath(args[1]), SOCKET_NAME)
    agent_path = os.path.join(os.path.abspath(args[1]), AGENT_SOCKET) if agent else None
    os.chdir("/")  # holds no folder of the root (or a mount) busy
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    keeper = Keeper(path, agent_path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("pid %d serving %s", os.getpid(), keeper.path)
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main())
