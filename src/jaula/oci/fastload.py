"""jaula-runtime's own modules from one file of compiled code, instead of ~40 imports.

Importing a module costs ~150 us here: stat its directory and its source, open, read and check its
.pyc, unmarshal; `run` imports ~40 of jaula's. `build()` (scripts/build-runtime-fast, from
scripts/setup) writes the code of every module the runtime may import into one file in
src/jaula/__pycache__; `install()` (jaula-runtime's main, before the verb's imports) serves each of
those from it while its source is unchanged (same size and mtime, the check a .pyc gets) and leaves
everything else to the normal import. No file, another Python, a stale entry: the normal import.
The code comes from the file only, never from the source it was checked against (after pivot_root
that path is inside the container).
"""

from __future__ import annotations

import marshal
import os
import sys

_JAULA = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../src/jaula
PATH = os.path.join(_JAULA, "__pycache__", f"jaula-runtime.{sys.implementation.cache_tag}.bundle")
# What the runtime's verbs may import: these packages whole, and these top-level modules.
PACKAGES = ("oci", "linux", "cgroups")
TOP_LEVEL = ("__init__", "errors", "record", "fastjson", "lazylog", "names")

# The modules a verb imports, each after the ones it imports (as `python -X importtime` lists them):
# preload() runs them straight from the bundle, without the import machinery (~100 us a module).
# A module missing here is imported the normal way when needed; one too many is loaded for nothing.
_COMMON = ("jaula.fastjson", "jaula.oci.log", "jaula.lazylog", "jaula.oci.commands", "jaula.oci.state")
_CREATE = _COMMON + (
    "jaula.oci.lifecycle", "jaula.linux", "jaula.linux.libc", "jaula.linux.mount", "jaula.record",
    "jaula.oci.mountopts", "jaula.oci.config", "jaula.linux.fs", "jaula.oci.timing", "jaula.oci.rootfs", "jaula.oci.sync",
    "jaula.linux.ns", "jaula.linux.proc", "jaula.linux.kfile", "jaula.linux.facade", "jaula.linux.caps",
    "jaula.oci.process", "jaula.oci.init", "jaula.oci.validate", "jaula.oci.create", "jaula.oci.foreground",
    "jaula.cgroups", "jaula.cgroups.resources", "jaula.cgroups.ociparse", "jaula.cgroups.layout",
    "jaula.cgroups.base", "jaula.cgroups.v2", "jaula.cgroups.v1", "jaula.cgroups.devices",
    "jaula.oci.trampoline_blob",
)
VERBS: dict[str, tuple[str, ...]] = {
    "create": _CREATE, "run": _CREATE,
    "start": _COMMON + ("jaula.oci.lifecycle",), "delete": _COMMON + ("jaula.oci.lifecycle",), "state": _COMMON,
}
_installed: Finder | None = None


def _magic() -> bytes:
    return sys.modules["_frozen_importlib_external"].MAGIC_NUMBER


class Finder:
    """A meta path finder and loader over the bundle at `path`, whose index maps each module name
    to (source, is package, its mtime_ns, its size, offset and length of its code in the file)."""

    def __init__(self, path: str, table: dict[str, tuple[str, bool, int, int, int, int]]) -> None:
        self.path = path
        self.table = table

    def find_spec(self, name: str, path: object = None, target: object = None):
        entry = self.table.get(name)
        if entry is None:
            return None
        source, is_package, mtime_ns, size = entry[:4]
        try:
            st = os.stat(source)
        except OSError:
            return None
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            return None  # edited since the build: the normal import compiles it
        spec = sys.modules["_frozen_importlib"].ModuleSpec(name, self, origin=source, is_package=is_package)
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(source)]
        spec.has_location = True
        return spec

    def create_module(self, spec: object) -> None:
        return None

    def exec_module(self, module: object) -> None:
        offset, length = self.table[module.__name__][4:]  # type: ignore[attr-defined]
        # Read each module's code when it is run: a module never run costs nothing, and no fd stays open.
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            code = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(code) != length:
            raise ImportError(f"{self.path}: {module.__name__}'s code is cut short", name=module.__name__)  # type: ignore[attr-defined]
        exec(marshal.loads(code), module.__dict__)  # type: ignore[attr-defined]  # noqa: S102 - our own compiled code


def install(path: str = PATH) -> Finder | None:
    """Put the bundle's finder first on sys.meta_path; None (and nothing changed) without a usable bundle.

    The file: the interpreter's magic number, the length of the index (4 bytes, little-endian),
    the index (marshal), then the modules' code (marshal), one after the other."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            magic = _magic()
            if not head.startswith(magic):
                return None  # written by another Python
            n = int.from_bytes(head[len(magic):len(magic) + 4], "little")
            start = len(magic) + 4
            raw = head[start:start + n]
            if len(raw) < n:
                raw += f.read(n - len(raw))
        table = marshal.loads(raw)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(table, dict):
        return None
    global _installed
    _installed = finder = Finder(path, table)
    sys.meta_path.insert(0, finder)
    return finder


def preload(verb: str) -> None:
    """Run the modules of `verb` (VERBS) from the installed bundle, each as its import would, but
    without the import machinery's per-module work. Nothing without a bundle; a module the bundle
    does not hold or holds stale is left to its normal import."""
    finder = _installed
    if finder is None:
        return
    for name in VERBS.get(verb, ()):
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        if parent not in sys.modules:
            __import__(parent)
        spec = finder.find_spec(name)
        if spec is None:
            continue
        module = type(sys)(name)
        module.__spec__, module.__loader__, module.__file__ = spec, finder, spec.origin
        module.__package__ = spec.parent
        if spec.submodule_search_locations is not None:
            module.__path__ = spec.submodule_search_locations
        sys.modules[name] = module
        try:
            finder.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        setattr(sys.modules[parent], child, module)


def modules(root: str = _JAULA) -> list[tuple[str, str, bool]]:
    """(module name, source path, is package) of everything the bundle holds."""
    out = []
    for name in TOP_LEVEL:
        path = os.path.join(root, name + ".py")
        if os.path.isfile(path):
            out.append(("jaula" if name == "__init__" else f"jaula.{name}", path, name == "__init__"))
    for pkg in PACKAGES:
        for entry in sorted(os.listdir(os.path.join(root, pkg))):
            if entry.endswith(".py"):
                mod = entry[:-3]
                name = f"jaula.{pkg}" if mod == "__init__" else f"jaula.{pkg}.{mod}"
                out.append((name, os.path.join(root, pkg, entry), mod == "__init__"))
    return out


def build(path: str = PATH, root: str = _JAULA) -> int:
    """Compile every module of modules() into the bundle at `path` (atomically); how many."""
    index: dict[str, tuple[str, bool, int, int, int, int]] = {}
    blobs: list[tuple[str, str, bool, int, int, bytes]] = []
    for name, source, is_package in modules(root):
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())  # the stat of what is compiled, even if it changes meanwhile
            code = compile(f.read(), source, "exec", dont_inherit=True)
        blobs.append((name, source, is_package, st.st_mtime_ns, st.st_size, marshal.dumps(code)))
    magic = _magic()
    head = b""
    while True:  # the code starts after the index, whose length depends on the offsets: until stable
        offset = start = len(magic) + 4 + len(head)
        for name, source, is_package, mtime_ns, size, code in blobs:
            index[name] = (source, is_package, mtime_ns, size, offset, len(code))
            offset += len(code)
        head = marshal.dumps(index)
        if len(magic) + 4 + len(head) == start:
            break
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(magic + len(head).to_bytes(4, "little") + head + b"".join(b[5] for b in blobs))
    os.rename(tmp, path)
    return len(blobs)


if __name__ == "__main__":
    print(f"{PATH}: {build()} modules")
