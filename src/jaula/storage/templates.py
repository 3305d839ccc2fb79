"""The template store: named root file trees that instances are made from.

Layout under `$JAULA_ROOT/templates` (JAULA_ROOT defaults to /var/lib/jaula):

    <name>/rootfs/          the file tree, owned as in the image (host uid 0 is the image's root)
    <name>/template.json    its metadata (`Template`)
    .<name>.tmp-<pid>/      a build in progress (or an old tree being thrown away after a replace)
    .<name>.del-<pid>/      a template being deleted

A build fills `.<name>.tmp-<pid>/` and publishes it with one rename (renameat2 NOREPLACE, or
EXCHANGE for `replace=True`), so a template is either all there or absent: a failure, a ^C or a
crash never leaves a half-made `<name>/`. Leftovers of dead processes are removed by `cleanup()`,
which every build runs first.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaula.errors import (
    BadState,
    Exists,
    JaulaError,
    NotFound,
    SyscallError,
)
from jaula.lazylog import getLogger
from jaula.names import NAME_MAX, is_name  # noqa: F401 - re-exported
from jaula.names import validate_name as _validate_name
from jaula.record import Record
from jaula.storage import builders
from jaula.storage.progress import Progress, no_progress

log = getLogger(__name__)

DEFAULT_ROOT = "/var/lib/jaula"
METADATA = "template.json"
FORMAT = 1
_LEFTOVER_RE = re.compile(r"\.(?P<name>.+)\.(?:tmp|del)-(?P<pid>[0-9]+)")


def jaula_root() -> Path:
    return Path(os.environ.get("JAULA_ROOT") or DEFAULT_ROOT)


def validate_name(name: object) -> str:
    """`name` if it is a valid template name (a DNS label), else ConfigError saying why."""
    return _validate_name(name, "Template")


class Template(Record):
    """A template's metadata (`template.json`) and where it lives (`path`, not stored)."""

    name: str
    source: str
    created: str                # RFC 3339, UTC
    id: str = ""                # random, new at each build: tells a rebuilt template from the old one
    size: int                   # bytes of regular files and symlinks, each inode once
    os: str                     # os-release ID ("debian"), else "busybox" or "unknown"
    os_version: str = ""        # os-release VERSION_ID, else VERSION_CODENAME
    arch: str = ""              # OCI/Debian names: amd64, arm64...
    entrypoint: list = []
    cmd: list = []
    env: list = []
    workdir: str = "/"
    user: str = ""
    path: Path | None = None

    @property
    def rootfs(self) -> Path:
        assert self.path is not None
        return self.path / "rootfs"

    @property
    def command(self) -> list[str]:
        """What runs by default: Entrypoint followed by Cmd, as an OCI runtime combines them."""
        return list(self.entrypoint) + list(self.cmd)

    def to_json(self) -> dict[str, Any]:
        d = self.as_dict()
        del d["path"]
        return {"format": FORMAT, **d}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Template:
        known = {k: v for k, v in data.items() if k in cls._fields and k != "path"}
        return cls(**known, path=path)


class TemplateStore:
    """Templates under `root` (default `$JAULA_ROOT/templates`), downloads cached under `cache`
    (default `$JAULA_ROOT/cache`)."""

    def __init__(self, root: Path | str | None = None, cache: Path | str | None = None,
                 in_use: Callable[[str], list[str]] | None = None):
        self.root = Path(root) if root is not None else jaula_root() / "templates"
        self.cache = Path(cache) if cache is not None else self.root.parent / "cache"
        # in_use(name) -> the instances whose root is over that template: they keep it from being
        # deleted or replaced (overlayfs forbids changing a lower layer under a mount).
        self.in_use = in_use
        # name -> (identity of its template.json: device, inode, size, mtime; its bytes): a start
        # reads the template at each start; a stat tells whether the file changed (it is replaced
        # whole: a rebuild, a metadata change)
        self._read: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}

    def __repr__(self) -> str:
        return f"TemplateStore({str(self.root)!r})"

    # --- reading --------------------------------------------------------------------------------
    def get(self, name: str) -> Template:
        validate_name(name)
        path = self.root / name
        meta = os.path.join(path, METADATA)
        try:
            st = os.stat(meta)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            kept = self._read.get(name)
            if kept is not None and kept[0] == key:
                raw = kept[1]
            else:
                with open(meta, "rb") as f:
                    raw = f.read()
                self._read[name] = (key, raw)
            data = json.loads(raw)
        except FileNotFoundError:
            raise NotFound(f"Template {name!r} not found in {str(self.root)!r}: see the list of templates, or build it") from None
        except (ValueError, OSError) as e:
            self._read.pop(name, None)
            raise JaulaError(f"Template {name!r}: cannot read {meta!r}: {e}") from None
        return Template.from_json(data, path)

    def exists(self, name: str) -> bool:
        validate_name(name)
        return (self.root / name / METADATA).exists()

    def list(self) -> list[Template]:
        """Every complete template, by name (builds in progress and damaged ones are left out)."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not is_name(name):
                continue
            try:
                found.append(self.get(name))
            except NotFound:
                continue
            except JaulaError as e:
                log.warning("%s", e)
        return found

    # --- building -------------------------------------------------------------------------------
    def build(self, name: str, source: str | Callable[..., builders.ImageDefaults], *, replace: bool = False,
              progress: Progress | None = None, **opts: Any) -> Template:
        """Build template `name` from `source` ("busybox", "debootstrap", "tarball", "oci") with
        that builder's options; Exists if the name is taken, unless `replace`."""
        validate_name(name)
        source_name, build_fn, table = builders.resolve(source)
        builders.check_options(source_name, table, opts)
        final = self.root / name
        if final.exists():
            if not replace:
                raise Exists(f"Template {name!r} exists in {str(self.root)!r}: delete it first, or build with replace")
            self._refuse_if_used(name, "replace")
        progress = progress or no_progress
        self._make_root()
        self.cleanup()
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        if tmp.exists():
            self._discard(tmp)
        os.mkdir(tmp, 0o700)
        try:
            rootfs = tmp / "rootfs"
            scratch = tmp / "scratch"
            os.mkdir(rootfs, 0o755)
            os.mkdir(scratch, 0o700)
            ctx = builders.BuildContext(name=name, rootfs=rootfs, scratch=scratch, cache=self.cache, progress=progress)
            defaults = build_fn(ctx, **opts)
            self._discard(scratch)
            template = self._describe(name, source_name, defaults, rootfs, progress)
            _write_json(tmp / METADATA, template.to_json())
            self._publish(tmp, final, name, replace)
        except BaseException:
            self._discard(tmp)
            raise
        template.path = final
        progress("done", template.size, template.size)
        log.info("template %s built from %s: %d bytes", name, template.source, template.size)
        return template

    def import_tarball(self, name: str, path: Path | str, **kw: Any) -> Template:
        """A template from a root file tree tarball (plain, gzip, bzip2, xz or zstd)."""
        return self.build(name, "tarball", path=path, **kw)

    def import_image(self, name: str, path: Path | str, **kw: Any) -> Template:
        """A template from an OCI image layout (folder or tarball) or a docker/podman save archive."""
        return self.build(name, "oci", path=path, **kw)

    def delete(self, name: str) -> None:
        validate_name(name)
        final = self.root / name
        if not (final / METADATA).exists():
            raise NotFound(f"Template {name!r} not found in {str(self.root)!r}")
        self._refuse_if_used(name, "delete")
        doomed = self.root / f".{name}.del-{os.getpid()}"
        if doomed.exists():
            self._discard(doomed)
        os.rename(final, doomed)  # gone from list() at once; the removal may take a while
        self._discard(doomed)

    def cleanup(self) -> list[str]:
        """Remove the leftovers of builds and deletions whose process is gone; their names."""
        removed = []
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return removed
        for entry in names:
            m = _LEFTOVER_RE.fullmatch(entry)
            if m is None or _alive(int(m["pid"])):
                continue
            log.info("removing leftover %s", entry)
            self._discard(self.root / entry)
            removed.append(entry)
        return removed

    # --- helpers --------------------------------------------------------------------------------
    def _refuse_if_used(self, name: str, action: str) -> None:
        users = self.in_use(name) if self.in_use is not None else []
        if users:
            raise BadState(f"Template {name!r} is used by {', '.join(sorted(users))}: cannot {action} it "
                           "until they are deleted")

    def _make_root(self) -> None:
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)

    def _publish(self, tmp: Path, final: Path, name: str, replace: bool) -> None:
        if replace and final.exists():
            _renameat2(tmp, final, RENAME_EXCHANGE)  # tmp now holds the old tree
            self._discard(tmp)
            return
        try:
            _renameat2(tmp, final, RENAME_NOREPLACE)
        except SyscallError as e:
            if e.errno == errno.EEXIST:
                raise Exists(f"Template {name!r} was made by someone else meanwhile in {str(self.root)!r}") from None
            raise

    def _discard(self, path: Path) -> None:
        """Remove a partial or unwanted tree; what was mounted below it (a failed debootstrap's
        /proc) is detached first, so the removal cannot reach into it."""
        try:
            _unmount_below(path)
            shutil.rmtree(path, onerror=_rmtree_error)
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001 - the caller's error matters more
            log.error("cannot remove %s: %s", path, e)

    def _describe(self, name: str, source_name: str, d: builders.ImageDefaults, rootfs: Path, progress: Progress) -> Template:
        progress("measure", 0, None)
        size = tree_size(rootfs)
        release = os_release(rootfs)
        os_id = release.get("ID") or d.os or ("busybox" if _lexists_in(rootfs, "bin/busybox") else "unknown")
        return Template(
            name=name,
            source=d.source or source_name,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            id=os.urandom(8).hex(),
            size=size,
            os=os_id,
            os_version=release.get("VERSION_ID") or release.get("VERSION_CODENAME", ""),
            arch=d.arch or elf_arch(rootfs) or host_arch(),
            entrypoint=list(d.entrypoint),
            cmd=list(d.cmd),
            env=list(d.env),
            workdir=d.workdir or "/",
            user=d.user,
        )


# --- tree facts -------------------------------------------------------------------------------------
def tree_size(root: Path) -> int:
    """Bytes of regular files and symlinks below `root`, hard links counted once (deterministic:
    the same tree gives the same size on any filesystem, unlike block counts)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    if st.st_nlink > 1:
                        key = (st.st_dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    total += st.st_size
    return total


def read_in_root(root: Path, path: str, limit: int = 1 << 16) -> bytes | None:
    """The first `limit` bytes of `path` resolved inside `root` (its symlinks cannot leave it)."""
    from jaula.linux.fs import open_in_root

    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(rfd, path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except SyscallError:
        return None
    finally:
        os.close(rfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _lexists_in(root: Path, path: str) -> bool:
    return read_in_root(root, path, 1) is not None


def os_release(root: Path) -> dict[str, str]:
    """os-release(5) of the tree: /etc/os-release, else /usr/lib/os-release."""
    for path in ("etc/os-release", "usr/lib/os-release"):
        data = read_in_root(root, path)
        if data is not None:
            return parse_os_release(data.decode("utf-8", "replace"))
    return {}


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key.strip()] = value
    return out


_ELF_MACHINES = {3: "386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm", 62: "amd64", 183: "arm64", 243: "riscv64", 258: "loong64"}
_UNAME_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def elf_arch(root: Path) -> str:
    """The architecture of the tree's shell (or busybox), from its ELF header; '' if none."""
    for path in ("bin/sh", "bin/busybox", "usr/bin/env", "bin/bash"):
        head = read_in_root(root, path, 20)
        if head is None or len(head) < 20 or head[:4] != b"\x7fELF":
            continue
        order = "little" if head[5] == 1 else "big"
        arch = _ELF_MACHINES.get(int.from_bytes(head[18:20], order), "")
        if arch == "ppc64" and order == "little":
            arch = "ppc64le"
        if arch == "mips" and order == "little":
            arch = "mipsle"
        return arch
    return ""


def host_arch() -> str:
    machine = os.uname().machine
    return _UNAME_ARCH.get(machine, machine)


# --- small system helpers ----------------------------------------------------------------------------
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """renameat2(2): NOREPLACE publishes a new template, EXCHANGE swaps in a replacement at once."""
    from jaula.linux.libc import libc

    if libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags)) != 0:
        raise SyscallError("renameat2", ctypes.get_errno(), f"{str(src)!r} to {str(dst)!r}")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmtree_error(func: Callable[..., Any], path: str, exc_info: Any) -> None:
    """A directory without write or search permission (0555 in an image) blocks its removal as
    non-root: open it up and try once more."""
    exc = exc_info[1]
    if isinstance(exc, PermissionError):
        parent = os.path.dirname(path)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path)
            else:
                func(path)
            return
        except OSError:
            pass
    raise exc


def _unmount_below(path: Path) -> None:
    prefix = os.path.realpath(path) + "/"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    points = [p.replace("\\040", " ") for p in points]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        from jaula.linux.mount import MNT_DETACH, umount2

        try:
            umount2(point, MNT_DETACH)
            log.warning("detached %s, left mounted by a failed build", point)
        except OSError as e:
            log.error("cannot detach %s: %s", point, e)
