"""One function per verb of `jaula-runtime`: turn parsed flags into calls of the library."""

from __future__ import annotations

import os
import sys

from jaula import fastjson
from jaula.errors import ConfigError, Exists, JaulaError
from jaula.oci.argv import UsageError, to_int


def _one_id(pos: list[str], verb: str, extra: int = 0) -> str:
    if not pos:
        raise UsageError(f"{verb}: give the container id")
    if len(pos) > 1 + extra:
        raise UsageError(f"{verb}: unexpected arguments {pos[1 + extra:]}")
    return pos[0]


def _load(g: dict, cid: str):
    from jaula.oci import state

    return state.load(g["root"], cid)


def _create_options(o: dict, verb: str, console_fd: object = None):
    from jaula.oci.create import Options

    return Options(console_socket=o["console_socket"], pid_file=o["pid_file"],
                   preserve_fds=to_int(o["preserve_fds"], f"{verb} --preserve-fds", 0) or 0,
                   no_pivot=o["no_pivot"], console_fd=console_fd)


def cmd_create(g, o, pos, log) -> int:
    from jaula.oci.create import create

    cid = _one_id(pos, "create")
    create(g["root"], cid, o["bundle"], _create_options(o, "create"), log)
    return 0


def cmd_start(g, o, pos, log) -> int:
    from jaula.oci import lifecycle

    lifecycle.start(_load(g, _one_id(pos, "start")), log)
    return 0


def cmd_run(g, o, pos, log) -> int:
    from jaula.oci import lifecycle
    from jaula.oci.create import create

    cid = _one_id(pos, "run")
    fg = peer = console_fd = None
    if not o["detach"]:
        from jaula.oci.foreground import Foreground

        fg = Foreground()
        if not o["console_socket"]:
            from jaula.oci import sync

            console_fd, peer = sync.pair()
    c = create(g["root"], cid, o["bundle"], _create_options(o, "run", console_fd), log)
    if fg is not None:
        fg.pid = c.pid
        fg.forward_signals()
        if console_fd is not None:
            console_fd.close()
    try:
        lifecycle.start(c, log)
    except BaseException:
        lifecycle.delete(c, force=True, log=log)
        raise
    if fg is None:
        return 0
    if peer is not None:
        from jaula.oci import sync

        peer.setblocking(False)
        try:
            name, _, fds = sync.recv(peer, with_fds=True)
            fg.master = fds[0] if fds else -1
        except BlockingIOError:
            fg.master = -1
        peer.close()
    code = fg.wait()
    if not o["keep"]:
        lifecycle.delete(c, force=True, log=log)
    return code


def cmd_state(g, o, pos, log) -> int:
    c = _load(g, _one_id(pos, "state"))
    sys.stdout.write(_pretty(c.oci_state()) + "\n")
    return 0


def _pretty(obj: object) -> str:
    import json

    return json.dumps(obj, indent=2)


def cmd_kill(g, o, pos, log) -> int:
    from jaula.oci import lifecycle, signals

    cid = _one_id(pos, "kill", extra=1)
    sig = signals.parse(pos[1]) if len(pos) > 1 else 15
    lifecycle.kill(_load(g, cid), sig, o["all"])
    return 0


def cmd_delete(g, o, pos, log) -> int:
    from jaula.errors import NotFound
    from jaula.oci import lifecycle

    cid = _one_id(pos, "delete")
    try:
        c = _load(g, cid)
    except NotFound:
        if o["force"]:
            return 0  # runc: delete --force of a missing container succeeds
        raise
    lifecycle.delete(c, o["force"], log)
    return 0


def cmd_list(g, o, pos, log) -> int:
    from jaula.oci import state

    items = []
    for cid in state.list_ids(g["root"]):
        try:
            items.append(state.load(g["root"], cid).oci_state())
        except (JaulaError, OSError, ValueError):
            continue
    if o["quiet"]:
        sys.stdout.write("".join(i["id"] + "\n" for i in items))
    elif o["format"] == "json":
        sys.stdout.write(fastjson.dumps(items) + "\n")
    elif o["format"] == "table":
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(i["id"], str(i["pid"]), i["status"], i["bundle"], i["created"], i["owner"] or "root") for i in items]
        widths = [max(len(r[k]) for r in rows) for k in range(6)]
        for r in rows:
            sys.stdout.write("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    else:
        raise UsageError(f"list --format {o['format']!r}: use table or json")
    return 0


def cmd_ps(g, o, pos, log) -> int:
    from jaula.oci import lifecycle

    if not pos:
        raise UsageError("ps: give the container id")
    c = _load(g, pos[0])
    pids = lifecycle.pids(c)
    if o["format"] == "json":
        sys.stdout.write(fastjson.dumps(pids) + "\n")
        return 0
    if o["format"] != "table":
        raise UsageError(f"ps --format {o['format']!r}: use table or json")
    import subprocess

    out = subprocess.run(["ps"] + (pos[1:] or ["-ef"]), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise JaulaError(f"ps {' '.join(pos[1:] or ['-ef'])}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise JaulaError("ps: its output has no PID column")
    col = header.index("PID")
    sys.stdout.write(lines[0] + "\n")
    want = set(pids)
    for line in lines[1:]:
        f = line.split()
        if len(f) > col and f[col].isdigit() and int(f[col]) in want:
            sys.stdout.write(line + "\n")
    return 0


def cmd_exec(g, o, pos, log) -> int:
    from jaula.oci import config
    from jaula.oci.execute import ExecOptions, execute
    from jaula.oci.validate import validate

    if not pos:
        raise UsageError("exec: give the container id and a command")
    c = _load(g, pos[0])
    spec = config.load(c.bundle)
    validate(spec, need_process=False)
    if o["process"]:
        raw = fastjson.loads(sys.stdin.read() if o["process"] == "-" else open(o["process"]).read())
        p = config.parse_process(raw)
    else:
        if len(pos) < 2:
            raise UsageError("exec: give a command to run (or --process FILE)")
        base = spec.process
        p = config.Process(
            terminal=o["tty"], args=pos[1:], env=list(base.env) if base else [], cwd=base.cwd if base else "/",
            user=config.User(uid=base.user.uid, gid=base.user.gid, additional_gids=list(base.user.additional_gids)) if base else config.User(),
            capabilities={k: list(v) for k, v in (base.capabilities or {}).items()} if base else None,
            rlimits=list(base.rlimits) if base else [], no_new_privileges=base.no_new_privileges if base else False,
            apparmor_profile=base.apparmor_profile if base else "", selinux_label=base.selinux_label if base else "")
    p.terminal = p.terminal or o["tty"]
    if o["cwd"]:
        p.cwd = o["cwd"]
    for e in o["env"]:
        if "=" not in e:
            raise UsageError(f"exec --env {e!r}: use NAME=VALUE")
        name = e.split("=", 1)[0]
        p.env = [x for x in p.env if not x.startswith(name + "=")] + [e]
    if o["user"]:
        uid, _, gid = o["user"].partition(":")
        p.user.uid = to_int(uid, "exec --user", 0)
        if gid:
            p.user.gid = to_int(gid, "exec --user", 0)
    for gid in o["additional_gids"]:
        p.user.additional_gids.append(to_int(gid, "exec --additional-gids", 0))
    if o["cap"]:
        from jaula.linux.caps import BY_NAME

        bad = [c_ for c_ in o["cap"] if c_ not in BY_NAME]
        if bad:
            raise UsageError(f"exec --cap: unknown capabilities {bad}")
        caps = p.capabilities if p.capabilities is not None else {}
        for s in ("bounding", "effective", "permitted"):
            caps[s] = list(dict.fromkeys(caps.get(s, []) + o["cap"]))
        p.capabilities = caps
    if o["no_new_privs"]:
        p.no_new_privileges = True
    if o["apparmor"]:
        p.apparmor_profile = o["apparmor"]
    if o["process_label"]:
        p.selinux_label = o["process_label"]
    opts = ExecOptions(detach=o["detach"], pid_file=o["pid_file"], console_socket=o["console_socket"],
                       preserve_fds=to_int(o["preserve_fds"], "exec --preserve-fds", 0) or 0)
    return execute(c, spec, p, opts, log)


def cmd_pause(g, o, pos, log) -> int:
    from jaula.oci import lifecycle

    lifecycle.pause(_load(g, _one_id(pos, "pause")))
    return 0


def cmd_resume(g, o, pos, log) -> int:
    from jaula.oci import lifecycle

    lifecycle.resume(_load(g, _one_id(pos, "resume")))
    return 0


def cmd_update(g, o, pos, log) -> int:
    from jaula.oci import lifecycle

    c = _load(g, _one_id(pos, "update"))
    if o["resources"]:
        text = sys.stdin.read() if o["resources"] == "-" else open(o["resources"]).read()
        try:
            res = fastjson.loads(text)
        except ValueError as e:
            raise ConfigError(f"update --resources: not valid JSON: {e}") from None
        if not isinstance(res, dict):
            raise ConfigError("update --resources: must hold a JSON object (linux.resources)")
    else:
        res = {}

    def num(key: str) -> int | None:
        return to_int(o[key], "update --" + key.replace("_", "-"))

    mem = {k: v for k, v in (("limit", num("memory")), ("reservation", num("memory_reservation")),
                             ("swap", num("memory_swap"))) if v is not None}
    cpu = {k: v for k, v in (("shares", num("cpu_shares")), ("quota", num("cpu_quota")), ("period", num("cpu_period")),
                             ("realtimeRuntime", num("cpu_rt_runtime")), ("realtimePeriod", num("cpu_rt_period")),
                             ("cpus", o["cpuset_cpus"]), ("mems", o["cpuset_mems"])) if v is not None}
    if mem:
        res.setdefault("memory", {}).update(mem)
    if cpu:
        res.setdefault("cpu", {}).update(cpu)
    if o["pids_limit"] is not None:
        res["pids"] = {"limit": num("pids_limit")}
    if o["blkio_weight"] is not None:
        res.setdefault("blockIO", {})["weight"] = num("blkio_weight")
    if not res:
        raise UsageError("update: give --resources FILE or at least one limit flag (see --help)")
    lifecycle.update(c, res)
    return 0


def cmd_events(g, o, pos, log) -> int:
    import time

    from jaula.cgroups.base import reopen

    c = _load(g, _one_id(pos, "events"))
    interval = float(o["interval"].rstrip("s"))
    if interval <= 0:
        raise UsageError("events --interval must be above 0")
    cg = reopen(c.data.get("cgroupPaths") or {})
    if not o["stats"]:
        import gc

        gc.enable()  # main() turns it off for short calls; this one may run for days
    while True:
        if c.status() == "stopped":
            raise JaulaError(f"container {c.id!r} is stopped")
        sys.stdout.write(fastjson.dumps({"type": "stats", "id": c.id, "data": _runc_stats(cg.stats())}) + "\n")
        sys.stdout.flush()
        if o["stats"]:
            return 0
        time.sleep(interval)


def _runc_stats(st) -> dict:
    """runc's `events` schema (cpu, memory, pids) plus our beancounter rows."""
    mem, pids = st.row("memory"), st.row("pids")
    return {
        "cpu": {"usage": {"total": st.cpu_usage_ns or 0}},
        "memory": {"usage": {"usage": mem.held or 0, "max": mem.maxheld or 0, "limit": mem.limit or 0,
                             "failcnt": mem.failcnt or 0}} if mem else {},
        "pids": {"current": pids.held or 0, "limit": pids.limit or 0} if pids else {},
        "beancounters": [r.as_dict() for r in st.rows],
    }


def cmd_spec(g, o, pos, log) -> int:
    from jaula.oci.spec import default_spec

    path = os.path.join(o["bundle"], "config.json")
    if os.path.exists(path):
        raise Exists(f"{path!r} exists already: remove it first or choose another --bundle")
    with open(path, "w") as f:
        f.write(_pretty(default_spec(rootless=o["rootless"])) + "\n")
    return 0


def cmd_features(g, o, pos, log) -> int:
    from jaula.oci.features import features

    sys.stdout.write(_pretty(features()) + "\n")
    return 0
