"""What `run` and `exec` do while they wait in the foreground: forward signals, relay a pty, reap."""

from __future__ import annotations

import _signal
import os

from jaula.linux import proc

FORWARDED = (1, 2, 3, 10, 12, 15, 28)  # HUP INT QUIT USR1 USR2 TERM WINCH


class Foreground:
    """Becomes the subreaper, so the container's process (whose parent exits early) is our child."""

    def __init__(self) -> None:
        proc.set_child_subreaper()
        self.pid = 0
        self.master = -1

    def forward_signals(self) -> None:
        def handler(sig: int, _frame: object) -> None:
            if sig == 28 and self.master >= 0:
                _copy_winsize(0, self.master)
            elif self.pid:
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    pass

        for sig in FORWARDED:
            _signal.signal(sig, handler)

    def wait(self) -> int:
        """Reap until our process exits; its exit code (128+N for a signal, as a shell reports)."""
        if self.master >= 0:
            self._relay()
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                return 255
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                return code if code >= 0 else 128 - code

    def _relay(self) -> None:
        """Copy stdin to the pty and the pty to stdout until the pty closes."""
        import select
        import termios
        import tty

        old = None
        if os.isatty(0):
            old = termios.tcgetattr(0)
            tty.setraw(0)
            _copy_winsize(0, self.master)
        try:
            poller = select.poll()  # poll, not select: the master may be above fd 1023
            for fd in (self.master, 0):
                poller.register(fd, select.POLLIN)
            while True:
                try:
                    ready = {fd for fd, _ in poller.poll()}
                except InterruptedError:
                    continue
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    os.write(1, data)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if not data:
                        poller.unregister(0)
                    else:
                        os.write(self.master, data)
        finally:
            if old is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, old)
            os.close(self.master)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def console_pair():
    """A socket pair standing in for --console-socket: init sends the pty master through it."""
    from jaula.oci import sync

    return sync.pair()


def receive_master(sock) -> int:
    from jaula.oci import sync

    name, _, fds = sync.recv(sock, with_fds=True)
    sock.close()
    if not fds:
        return -1
    return fds[0]
