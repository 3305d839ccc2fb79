"""A small command-line parser with runc's conventions (urfave/cli): global flags, then a verb,
its flags, then positional arguments; `--flag value`, `--flag=value`, repeatable flags, `--`.

`argparse` costs about 7 ms to import; this costs nothing measurable.
"""

from __future__ import annotations

from jaula.errors import ExitCode, JaulaError


class UsageError(JaulaError):
    exit_code = ExitCode.USAGE


class Flag:
    def __init__(self, names: str, help: str, value: str | None = None, repeat: bool = False, default: object = None):
        self.names = names.split(",")
        self.dest = self.names[0].lstrip("-").replace("-", "_")
        self.help = help
        self.value = value          # the metavar; None for a boolean switch
        self.repeat = repeat
        self.default = default if default is not None else ([] if repeat else (None if value else False))


class Command:
    def __init__(self, name: str, summary: str, usage: str, flags: list[Flag], stop_at_positional: bool = False):
        self.name, self.summary, self.usage, self.flags = name, summary, usage, flags
        self.stop_at_positional = stop_at_positional

    def help(self, prog: str) -> str:
        lines = [f"Usage: {prog} {self.name} {self.usage}".rstrip(), "", self.summary, ""]
        if self.flags:
            lines.append("Options:")
            for f in self.flags:
                names = ", ".join(f.names) + (f" {f.value}" if f.value else "")
                lines.append(f"  {names:<32} {f.help}")
        return "\n".join(lines) + "\n"


def parse(flags: list[Flag], args: list[str], stop_at_positional: bool, where: str) -> tuple[dict, list[str]]:
    """Returns (values by dest, positional arguments)."""
    by_name = {n: f for f in flags for n in f.names}
    values: dict = {f.dest: (list(f.default) if f.repeat else f.default) for f in flags}
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            pos.extend(args[i:])
            break
        if a.startswith("-") and len(a) > 1:
            name, eq, inline = a.partition("=")
            if name.startswith("-") and not name.startswith("--") and len(name) > 2 and name[:2] in by_name and not eq:
                name, inline, eq = name[:2], name[2:], "="  # -p5 style
            f = by_name.get(name) or by_name.get("--" + name.lstrip("-"))
            if f is None:
                raise UsageError(f"{where}: unknown option {name!r} (see --help)")
            if f.value is None:
                if eq and inline.lower() not in ("true", "false", "1", "0"):
                    raise UsageError(f"{where}: {name} is a switch; give {name} or {name}=false")
                v: object = not (eq and inline.lower() in ("false", "0"))
            elif eq:
                v = inline
            else:
                if i >= len(args):
                    raise UsageError(f"{where}: {name} needs a value ({f.value})")
                v = args[i]
                i += 1
            if f.repeat:
                values[f.dest].append(v)
            else:
                values[f.dest] = v
        else:
            pos.append(a)
            if stop_at_positional:
                pos.extend(args[i:])
                break
    return values, pos


def to_int(text: str | None, what: str, minimum: int | None = None) -> int | None:
    if text is None:
        return None
    try:
        n = int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a whole number") from None
    if minimum is not None and n < minimum:
        raise UsageError(f"{what}: {n} is below the minimum {minimum}")
    return n
