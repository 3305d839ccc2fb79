"""The config.json model: parsed once, every problem collected, nothing half-read.

`load(bundle)` returns a `Spec` or raises ConfigError listing every problem found, each named by
its JSON path, so a user fixes them all in one go (as runc's validator).
"""

from __future__ import annotations

import os

from jaula import fastjson
from jaula.errors import ConfigError
from jaula.oci import mountopts
from jaula.record import Record

SUPPORTED_VERSIONS = ("1.0.", "1.1.", "1.2.")
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
TIME_CLOCKS = ("monotonic", "boottime")


class Root(Record):
    path: str
    readonly: bool = False


class User(Record):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list = []


class Rlimit(Record):
    type: str
    resource: int
    soft: int
    hard: int


class Process(Record):
    terminal: bool = False
    console_height: int = 0
    console_width: int = 0
    user: User = None  # type: ignore[assignment]
    args: list = []
    env: list = []
    cwd: str = "/"
    capabilities: dict | None = None   # set name -> list of CAP_ names; None: keep none
    rlimits: list = []
    no_new_privileges: bool = False
    apparmor_profile: str = ""
    selinux_label: str = ""
    oom_score_adj: int | None = None


class Mount(Record):
    destination: str
    type: str = ""
    source: str = ""
    options: list = []
    parsed: mountopts.MountOptions = None  # type: ignore[assignment]
    uid_mappings: list = []
    gid_mappings: list = []


class IdMap(Record):
    container_id: int
    host_id: int
    size: int


class Namespace(Record):
    type: str
    path: str = ""


class Device(Record):
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class Hook(Record):
    path: str
    args: list = []
    env: list = []
    timeout: int | None = None


class Linux(Record):
    namespaces: list = []
    uid_mappings: list = []
    gid_mappings: list = []
    devices: list = []
    cgroups_path: str | None = None
    resources: object = None          # jaula.cgroups.Resources, parsed lazily by that package
    resources_json: dict | None = None
    rootfs_propagation: str = ""
    masked_paths: list = []
    readonly_paths: list = []
    mount_label: str = ""
    sysctl: dict = {}
    seccomp: object = None            # jaula.oci.seccomp.Seccomp
    seccomp_json: dict | None = None
    personality: int | None = None
    time_offsets: dict = {}           # clock -> (secs, nanosecs)

    def namespace(self, kind: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None


class Spec(Record):
    oci_version: str
    bundle: str
    root: Root | None = None
    process: Process | None = None
    hostname: str = ""
    domainname: str = ""
    mounts: list = []
    hooks: dict = {}                  # hook name -> list[Hook]
    annotations: dict = {}
    linux: Linux = None  # type: ignore[assignment]


class _Reader:
    """Typed access to a JSON tree that records problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def obj(self, d: object, key: str, where: str) -> dict:
        v = d.get(key) if isinstance(d, dict) else None
        if v is None:
            return {}
        if not isinstance(v, dict):
            self.bad(f"{where}.{key}", f"must be an object, not {type(v).__name__}")
            return {}
        return v

    def get(self, d: dict, key: str, where: str, kind: type | tuple, default: object = None) -> object:
        v = d.get(key, default)
        if v is None or v is default:
            return default
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            self.bad(f"{where}.{key}", f"must be an integer, not {v!r}")
            return default
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.bad(f"{where}.{key}", f"must be {_article(name)}, not {v!r}")
            return default
        return v

    def strlist(self, d: dict, key: str, where: str) -> list[str]:
        v = d.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.bad(f"{where}.{key}", "must be a list of strings")
            return []
        return v

    def list(self, d: dict, key: str, where: str) -> list[dict]:
        v = d.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            self.bad(f"{where}.{key}", "must be a list of objects")
            return []
        return v

    def u32(self, d: dict, key: str, where: str, default: int | None = 0) -> int | None:
        v = self.get(d, key, where, int, default)
        if isinstance(v, int) and not 0 <= v <= 0xFFFFFFFF:
            self.bad(f"{where}.{key}", f"{v} is out of range (0 to 4294967295)")
            return default
        return v  # type: ignore[return-value]


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def load(bundle: str) -> Spec:
    """Read `bundle`/config.json into a Spec, or raise ConfigError with every problem."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path!r}: {e.strerror}") from None
    try:
        doc = fastjson.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{path!r} is not valid JSON: {e}") from None
    return parse(doc, os.path.abspath(bundle))


def parse(doc: object, bundle: str) -> Spec:
    r = _Reader()
    if not isinstance(doc, dict):
        raise ConfigError("config.json must hold a JSON object")
    version = r.get(doc, "ociVersion", "ociVersion", str, "")
    if not version:
        r.bad("ociVersion", "is required (1.0.x to 1.2.x)")
    elif not version.startswith(SUPPORTED_VERSIONS):  # type: ignore[union-attr]
        r.bad("ociVersion", f"{version!r} is not supported; jaula-runtime reads 1.0.x to 1.2.x")
    spec = Spec(oci_version=version, bundle=bundle)

    root = r.obj(doc, "root", "")
    if root:
        p = r.get(root, "path", "root", str, "")
        if not p:
            r.bad("root.path", "is required")
        else:
            p = p if os.path.isabs(p) else os.path.join(bundle, p)
            spec.root = Root(path=os.path.normpath(p), readonly=bool(r.get(root, "readonly", "root", bool, False)))
    elif "root" not in doc:
        r.bad("root", "is required on Linux")

    spec.process = _process(r, doc)
    spec.hostname = r.get(doc, "hostname", "", str, "")  # type: ignore[assignment]
    spec.domainname = r.get(doc, "domainname", "", str, "")  # type: ignore[assignment]
    spec.mounts = [_mount(r, x, f"mounts[{i}]") for i, x in enumerate(r.list(doc, "mounts", ""))]
    hooks = r.obj(doc, "hooks", "")
    for name in hooks:
        if name not in HOOK_NAMES:
            r.bad(f"hooks.{name}", f"is not a hook; known hooks are {', '.join(HOOK_NAMES)}")
            continue
        spec.hooks[name] = [_hook(r, h, f"hooks.{name}[{i}]") for i, h in enumerate(r.list(hooks, name, "hooks"))]
    ann = r.obj(doc, "annotations", "")
    for k, v in ann.items():
        if not isinstance(v, str):
            r.bad(f"annotations.{k}", "must be a string")
    spec.annotations = ann
    spec.linux = _linux(r, r.obj(doc, "linux", ""))
    if r.problems:
        raise ConfigError(r.problems)
    return spec


def parse_process(raw: object) -> Process:
    """A process object alone (exec --process FILE), or ConfigError with every problem."""
    r = _Reader()
    if not isinstance(raw, dict):
        raise ConfigError("the process file must hold a JSON object (the config's process)")
    p = _process(r, {"process": raw})
    if r.problems:
        raise ConfigError(r.problems)
    return p if p is not None else Process(user=User())


def _process(r: _Reader, doc: dict) -> Process | None:
    d = r.obj(doc, "process", "")
    if not d:
        return None
    w = "process"
    p = Process()
    p.terminal = bool(r.get(d, "terminal", w, bool, False))
    cs = r.obj(d, "consoleSize", w)
    p.console_height = r.u32(cs, "height", f"{w}.consoleSize") or 0
    p.console_width = r.u32(cs, "width", f"{w}.consoleSize") or 0
    u = r.obj(d, "user", w)
    gids = u.get("additionalGids") or []
    if not isinstance(gids, list) or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gids):
        r.bad(f"{w}.user.additionalGids", "must be a list of non-negative integers")
        gids = []
    if "username" in u:
        r.bad(f"{w}.user.username", "is for Windows containers; give uid and gid on Linux")
    p.user = User(uid=r.u32(u, "uid", f"{w}.user"), gid=r.u32(u, "gid", f"{w}.user"),
                  umask=r.u32(u, "umask", f"{w}.user", None), additional_gids=gids)
    p.args = r.strlist(d, "args", w)
    if "commandLine" in d:
        r.bad(f"{w}.commandLine", "is for Windows containers; use process.args")
    p.env = r.strlist(d, "env", w)
    for i, e in enumerate(p.env):
        if "=" not in e:
            r.bad(f"{w}.env[{i}]", f"{e!r} is not of the form NAME=VALUE")
    p.cwd = r.get(d, "cwd", w, str, "/")  # type: ignore[assignment]
    caps = d.get("capabilities")
    if caps is not None:
        if not isinstance(caps, dict):
            r.bad(f"{w}.capabilities", "must be an object")
        else:
            from jaula.linux.caps import BY_NAME

            p.capabilities = {}
            for s, names in caps.items():
                if s not in CAP_SETS:
                    r.bad(f"{w}.capabilities.{s}", f"is not a capability set; sets are {', '.join(CAP_SETS)}")
                    continue
                lst = r.strlist(caps, s, f"{w}.capabilities")
                unknown = [n for n in lst if n not in BY_NAME]
                if unknown:
                    r.bad(f"{w}.capabilities.{s}", f"unknown capabilities {', '.join(unknown)} (names look like CAP_NET_ADMIN)")
                p.capabilities[s] = [n for n in lst if n in BY_NAME]
    seen: set[str] = set()
    for i, rl in enumerate(r.list(d, "rlimits", w)):
        where = f"{w}.rlimits[{i}]"
        t = r.get(rl, "type", where, str, "")
        if t not in RLIMITS:
            r.bad(f"{where}.type", f"{t!r} is not a resource limit; known are {', '.join(RLIMITS)}")
            continue
        if t in seen:
            r.bad(f"{where}.type", f"{t} is given twice")
        seen.add(t)  # type: ignore[arg-type]
        soft, hard = rl.get("soft"), rl.get("hard")
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 2**64 - 1 for x in (soft, hard)):
            r.bad(where, "soft and hard must be integers from 0 to 2^64-1")
            continue
        if soft > hard:  # type: ignore[operator]
            r.bad(where, f"soft limit {soft} is above the hard limit {hard}")
        p.rlimits.append(Rlimit(type=t, resource=RLIMITS[t], soft=soft, hard=hard))  # type: ignore[index]
    p.no_new_privileges = bool(r.get(d, "noNewPrivileges", w, bool, False))
    p.apparmor_profile = r.get(d, "apparmorProfile", w, str, "")  # type: ignore[assignment]
    p.selinux_label = r.get(d, "selinuxLabel", w, str, "")  # type: ignore[assignment]
    adj = r.get(d, "oomScoreAdj", w, int, None)
    if isinstance(adj, int) and not -1000 <= adj <= 1000:
        r.bad(f"{w}.oomScoreAdj", f"{adj} is out of range (-1000 to 1000)")
        adj = None
    p.oom_score_adj = adj  # type: ignore[assignment]
    return p


def _idmaps(r: _Reader, d: dict, key: str, where: str) -> list[IdMap]:
    out = []
    for i, x in enumerate(r.list(d, key, where)):
        w = f"{where}.{key}[{i}]"
        c, h, s = (r.u32(x, k, w, None) for k in ("containerID", "hostID", "size"))
        if c is None or h is None or not s:
            r.bad(w, "needs containerID, hostID and a size above 0")
            continue
        out.append(IdMap(container_id=c, host_id=h, size=s))
    return out


def _mount(r: _Reader, d: dict, where: str) -> Mount:
    dest = r.get(d, "destination", where, str, "")
    if not dest:
        r.bad(f"{where}.destination", "is required")
    elif not os.path.isabs(dest):  # type: ignore[arg-type]
        r.bad(f"{where}.destination", f"{dest!r} must be an absolute path inside the container")
    opts = r.strlist(d, "options", where)
    mnt = Mount(destination=os.path.normpath(dest) if dest else "", type=r.get(d, "type", where, str, ""),  # type: ignore[arg-type]
                source=r.get(d, "source", where, str, ""), options=opts, parsed=mountopts.parse(opts))
    mnt.uid_mappings = _idmaps(r, d, "uidMappings", where)
    mnt.gid_mappings = _idmaps(r, d, "gidMappings", where)
    return mnt


def _hook(r: _Reader, d: dict, where: str) -> Hook:
    path = r.get(d, "path", where, str, "")
    if not path or not os.path.isabs(path):  # type: ignore[arg-type]
        r.bad(f"{where}.path", f"{path!r} must be an absolute path on the host")
    timeout = r.get(d, "timeout", where, int, None)
    if isinstance(timeout, int) and timeout <= 0:
        r.bad(f"{where}.timeout", f"{timeout} must be above 0 seconds")
    return Hook(path=path, args=r.strlist(d, "args", where), env=r.strlist(d, "env", where), timeout=timeout)  # type: ignore[arg-type]


def _linux(r: _Reader, d: dict) -> Linux:
    w = "linux"
    lx = Linux()
    for i, ns in enumerate(r.list(d, "namespaces", w)):
        t = r.get(ns, "type", f"{w}.namespaces[{i}]", str, "")
        if t not in NAMESPACE_TYPES:
            r.bad(f"{w}.namespaces[{i}].type", f"{t!r} is not a namespace type; types are {', '.join(NAMESPACE_TYPES)}")
            continue
        lx.namespaces.append(Namespace(type=t, path=r.get(ns, "path", f"{w}.namespaces[{i}]", str, "")))  # type: ignore[arg-type]
    lx.uid_mappings = _idmaps(r, d, "uidMappings", w)
    lx.gid_mappings = _idmaps(r, d, "gidMappings", w)
    for i, dev in enumerate(r.list(d, "devices", w)):
        where = f"{w}.devices[{i}]"
        path, typ = r.get(dev, "path", where, str, ""), r.get(dev, "type", where, str, "")
        if not path or not os.path.isabs(path):  # type: ignore[arg-type]
            r.bad(f"{where}.path", f"{path!r} must be an absolute path")
        if typ not in ("c", "u", "b", "p"):
            r.bad(f"{where}.type", f"{typ!r} must be one of c, u, b, p")
        if typ != "p" and ("major" not in dev or "minor" not in dev):
            r.bad(where, "character and block devices need major and minor")
        mode = r.u32(dev, "fileMode", where, None)
        lx.devices.append(Device(path=os.path.normpath(path) if path else "", type=typ,  # type: ignore[arg-type]
                                 major=r.get(dev, "major", where, int, 0), minor=r.get(dev, "minor", where, int, 0),
                                 file_mode=mode, uid=r.u32(dev, "uid", where, None), gid=r.u32(dev, "gid", where, None)))
    lx.cgroups_path = r.get(d, "cgroupsPath", w, str, None)  # type: ignore[assignment]
    if "resources" in d:
        lx.resources_json = r.obj(d, "resources", w)
    lx.rootfs_propagation = r.get(d, "rootfsPropagation", w, str, "")  # type: ignore[assignment]
    if lx.rootfs_propagation and lx.rootfs_propagation not in mountopts._PROPAGATION:
        r.bad(f"{w}.rootfsPropagation", f"{lx.rootfs_propagation!r} is not one of {', '.join(mountopts._PROPAGATION)}")
    lx.masked_paths = r.strlist(d, "maskedPaths", w)
    lx.readonly_paths = r.strlist(d, "readonlyPaths", w)
    for key, lst in (("maskedPaths", lx.masked_paths), ("readonlyPaths", lx.readonly_paths)):
        for i, p in enumerate(lst):
            if not os.path.isabs(p):
                r.bad(f"{w}.{key}[{i}]", f"{p!r} must be an absolute path inside the container")
    lx.mount_label = r.get(d, "mountLabel", w, str, "")  # type: ignore[assignment]
    sysctl = r.obj(d, "sysctl", w)
    for k, v in sysctl.items():
        if not isinstance(v, str):
            r.bad(f"{w}.sysctl.{k}", "must be a string")
        if "/" in k.replace(".", "") or ".." in k or not k:
            r.bad(f"{w}.sysctl.{k}", "is not a sysctl name (like net.ipv4.ip_forward)")
    lx.sysctl = sysctl
    if "seccomp" in d:
        lx.seccomp_json = r.obj(d, "seccomp", w)
    pers = r.obj(d, "personality", w)
    if pers:
        dom = pers.get("domain")
        if dom not in PERSONALITY_DOMAINS:
            r.bad(f"{w}.personality.domain", f"{dom!r} is not one of {', '.join(PERSONALITY_DOMAINS)}")
        else:
            lx.personality = PERSONALITY_DOMAINS[dom]
    for clock, off in r.obj(d, "timeOffsets", w).items():
        if clock not in TIME_CLOCKS or not isinstance(off, dict):
            r.bad(f"{w}.timeOffsets.{clock}", f"clocks are {', '.join(TIME_CLOCKS)}, each with secs and nanosecs")
            continue
        lx.time_offsets[clock] = (r.get(off, "secs", f"{w}.timeOffsets.{clock}", int, 0),
                                  r.u32(off, "nanosecs", f"{w}.timeOffsets.{clock}") or 0)
    for key in ("intelRdt", "memoryPolicy", "netDevices"):
        if d.get(key):
            r.bad(f"{w}.{key}", "is not supported by jaula-runtime")
    return lx
