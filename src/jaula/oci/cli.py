"""`jaula-runtime`: an OCI runtime with runc's command line. Parses argv and calls `jaula.oci`.

Imports are per verb: `state` or `start` must not pay for what only `create` needs.
"""

from __future__ import annotations

import os
import sys

from jaula import __version__
from jaula.errors import ExitCode, JaulaError
from jaula.oci.argv import Command, Flag, UsageError, parse

PROG = "jaula-runtime"
SPEC_VERSION = "1.2.0"

GLOBAL = [
    Flag("--root", "state directory for containers (default /run/jaula-runtime)", "DIR", default="/run/jaula-runtime"),
    Flag("--log", "log file (default: stderr)", "FILE"),
    Flag("--log-format", "log format: text or json", "FORMAT", default="text"),
    Flag("--debug", "log debug messages"),
    Flag("--systemd-cgroup", "use systemd to manage cgroups (not supported: refused)"),
    Flag("--rootless", "accepted for runc compatibility: true, false or auto", "VALUE"),
    Flag("--criu", "accepted for runc compatibility; checkpointing is not supported", "PATH"),
    Flag("--help,-h", "show this help"),
    Flag("--version,-v", "print the version"),
]

_EXEC_FLAGS = [
    Flag("--console-socket", "UNIX socket that receives the pty master", "PATH"),
    Flag("--cwd", "working directory inside the container", "DIR"),
    Flag("--env,-e", "set an environment variable (NAME=VALUE)", "ENV", repeat=True),
    Flag("--tty,-t", "allocate a pseudo-terminal"),
    Flag("--user,-u", "UID[:GID] to run as", "UID[:GID]"),
    Flag("--additional-gids,-g", "additional group id", "GID", repeat=True),
    Flag("--process,-p", "a process.json (the config's process object) to run", "FILE"),
    Flag("--detach,-d", "do not wait for the process"),
    Flag("--pid-file", "write the process id here", "FILE"),
    Flag("--process-label", "SELinux label of the process", "LABEL"),
    Flag("--apparmor", "AppArmor profile of the process", "PROFILE"),
    Flag("--no-new-privs", "set no_new_privs"),
    Flag("--cap,-c", "add a capability (CAP_...)", "CAP", repeat=True),
    Flag("--preserve-fds", "pass N more fds (from 3) to the process", "N", default="0"),
    Flag("--cgroup", "accepted for runc compatibility; exec joins the container's cgroup", "PATH", repeat=True),
    Flag("--ignore-paused", "accepted for runc compatibility"),
]
_CREATE_FLAGS = [
    Flag("--bundle,-b", "bundle directory (default: the current directory)", "DIR", default="."),
    Flag("--console-socket", "UNIX socket that receives the pty master", "PATH"),
    Flag("--pid-file", "write the init's process id here", "FILE"),
    Flag("--no-pivot", "refused: jaula-runtime always uses pivot_root"),
    Flag("--no-new-keyring", "accepted for runc compatibility; a new session keyring is always made"),
    Flag("--preserve-fds", "pass N more fds (from 3) to the container", "N", default="0"),
]
_UPDATE_FLAGS = [
    Flag("--resources,-r", "a JSON file (or - for stdin) with linux.resources", "FILE"),
    Flag("--memory", "memory limit in bytes", "BYTES"),
    Flag("--memory-reservation", "memory soft limit in bytes", "BYTES"),
    Flag("--memory-swap", "memory plus swap limit in bytes", "BYTES"),
    Flag("--kernel-memory", "ignored (kernel memory limits are gone from recent kernels)", "BYTES"),
    Flag("--cpu-shares", "cpu shares (relative weight)", "N"),
    Flag("--cpu-quota", "cpu quota in microseconds per period", "US"),
    Flag("--cpu-period", "cpu period in microseconds", "US"),
    Flag("--cpu-rt-runtime", "realtime runtime in microseconds", "US"),
    Flag("--cpu-rt-period", "realtime period in microseconds", "US"),
    Flag("--cpuset-cpus", "cpus the container may use (0-3,5)", "LIST"),
    Flag("--cpuset-mems", "memory nodes the container may use", "LIST"),
    Flag("--pids-limit", "maximum number of processes", "N"),
    Flag("--blkio-weight", "block io weight (10 to 1000)", "N"),
]

COMMANDS = {c.name: c for c in [
    Command("create", "Create a container: its init waits for `start`.", "[options] ID", _CREATE_FLAGS),
    Command("start", "Start the process of a created container.", "ID", []),
    Command("run", "Create and start a container, and wait for it unless --detach.", "[options] ID",
            _CREATE_FLAGS + [Flag("--detach,-d", "do not wait for the container"),
                             Flag("--keep", "keep the container's state after it exits")]),
    Command("state", "Print the OCI state of a container as JSON.", "ID", []),
    Command("kill", "Send a signal (default TERM) to a container's init, or to all its processes.", "[options] ID [SIGNAL]",
            [Flag("--all,-a", "signal every process of the container")]),
    Command("delete", "Delete a stopped or created container (--force: any).", "[options] ID",
            [Flag("--force,-f", "kill a running container first")]),
    Command("list", "List containers.", "[options]", [Flag("--quiet,-q", "print ids only"),
                                                      Flag("--format,-f", "table or json", "FORMAT", default="table")]),
    Command("ps", "List the processes of a container.", "[options] ID [PS_ARGS...]",
            [Flag("--format,-f", "table or json", "FORMAT", default="table")]),
    Command("exec", "Run a new process in a running container.", "[options] ID COMMAND [ARGS...]", _EXEC_FLAGS,
            stop_at_positional=True),
    Command("pause", "Freeze every process of a container.", "ID", []),
    Command("resume", "Thaw a paused container.", "ID", []),
    Command("update", "Change the resource limits of a container.", "[options] ID", _UPDATE_FLAGS),
    Command("events", "Print a container's resource statistics as JSON lines (once with --stats).", "[options] ID",
            [Flag("--stats", "print one set of statistics and exit"),
             Flag("--interval", "seconds between statistics", "SECONDS", default="5")]),
    Command("spec", "Write a default config.json.", "[options]",
            [Flag("--bundle,-b", "where to write config.json", "DIR", default="."),
             Flag("--rootless", "a spec for a container run by an unprivileged user")]),
    Command("features", "Print what this runtime supports, as JSON (runtime-spec features.md).", "", []),
]}


def usage() -> str:
    lines = [f"Usage: {PROG} [global options] COMMAND [options] [arguments]", "",
             "An OCI runtime for Linux containers, with runc's command line.", "", "Commands:"]
    lines += [f"  {c.name:<10} {c.summary}" for c in COMMANDS.values()]
    lines += ["", "Global options:"]
    lines += [f"  {', '.join(f.names) + (' ' + f.value if f.value else ''):<28} {f.help}" for f in GLOBAL]
    lines += ["", "Exit codes:"]
    lines += [f"  {v:<3} {k.lower().replace('_', ' ')}" for k, v in vars(ExitCode).items() if not k.startswith("_")]
    lines += ["", f"Run '{PROG} COMMAND --help' for a command's options."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The program (argv None: sys.argv, and the process ends here) or a call (argv given: returns the exit code)."""
    if argv is None:
        import gc

        gc.disable()  # a short-lived process with few cycles: collections during loading are waste (~0.7 ms)
        from jaula.oci import fastload

        fastload.install()  # the verb's imports from one file of compiled code, where it is built
        _exit_now(_main(sys.argv[1:]))
    return _main(argv)


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown (freeing every module and object costs
    ~4 ms here, a sixth of a `run`). Nothing else needs it: files are closed where written, the
    log is unbuffered, sockets and fds go with the process. Only stdio may hold buffered output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError) as e:
            if stream is sys.stdout:  # output lost (a closed pipe, a full disk): say so, and fail as Python would
                try:
                    os.write(2, f"{PROG}: writing the output: {getattr(e, 'strerror', None) or e}\n".encode())
                except OSError:
                    pass
                code = code or 120
    os._exit(code)


def _main(argv: list[str]) -> int:
    log = None
    try:
        g, rest = parse(GLOBAL, argv, stop_at_positional=True, where=PROG)
        if rest:
            from jaula.oci import fastload

            fastload.preload(rest[0])  # nothing unless main() installed the bundle
        from jaula.oci.log import Log

        log = Log(g["log"], g["log_format"], g["debug"])
        from jaula import lazylog

        lazylog.sink = log.from_library
        if g["log_format"] not in ("text", "json"):
            raise UsageError(f"--log-format {g['log_format']!r}: use text or json")
        if g["version"]:
            sys.stdout.write(f"{PROG} version {__version__}\nspec: {SPEC_VERSION}\n")
            return 0
        if g["help"] or not rest:
            sys.stdout.write(usage())
            return 0 if g["help"] else ExitCode.USAGE
        if g["systemd_cgroup"]:
            raise UsageError("--systemd-cgroup is not supported: jaula-runtime manages cgroupfs directly; use the cgroupfs cgroup manager")
        name, args = rest[0], rest[1:]
        cmd = COMMANDS.get(name)
        if cmd is None:
            raise UsageError(f"unknown command {name!r}; commands are {', '.join(COMMANDS)}")
        if "--help" in args[: args.index("--") if "--" in args else len(args)] or "-h" in args[:1]:
            sys.stdout.write(cmd.help(PROG))
            return 0
        opts, pos = parse(cmd.flags, args, cmd.stop_at_positional, f"{PROG} {name}")
        from jaula.oci import commands

        return getattr(commands, "cmd_" + name)(g, opts, pos, log) or 0
    except JaulaError as e:
        return _fail(log, str(e), e.exit_code)
    except OSError as e:
        return _fail(log, str(e), ExitCode.FAILURE)
    except KeyboardInterrupt:
        return 130


def _fail(log, msg: str, code: int) -> int:
    if log is not None:
        log.error(msg)
    sys.stderr.write(f"{PROG}: {msg}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
