"""The `debootstrap` template: a Debian release from the Debian mirror (minutes), cached.

The first build runs `debootstrap --variant=minbase RELEASE ROOT MIRROR` (the mirror of apt's
own sources unless given) and keeps the result as `$JAULA_ROOT/cache/debootstrap/RELEASE.tar`
(numeric owners, xattrs, devices); later builds are a local untar of that file (seconds).
`refresh=True` downloads again and replaces the cache. Needs the `debootstrap` package.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

from jaula.errors import ConfigError, JaulaError
from jaula.lazylog import getLogger
from jaula.storage.builders import (
    BuildContext,
    ImageDefaults,
    Option,
    is_bool,
    is_str,
    is_str_list,
)
from jaula.storage.builders.streams import extract_stream
from jaula.storage.builders.unpack import Unpacker

log = getLogger(__name__)

DEFAULT_RELEASE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*")

# debootstrap's "I: <Word> ..." lines, grouped into the phases shown (counting packages)
PHASES = {
    "Retrieving": "debootstrap: download", "Validating": "debootstrap: download",
    "Extracting": "debootstrap: extract", "Installing": "debootstrap: install",
    "Unpacking": "debootstrap: install", "Configuring": "debootstrap: configure",
}

OPTIONS = {
    "release": Option(f"the Debian release, such as bookworm or trixie (default {DEFAULT_RELEASE})", is_str),
    "mirror": Option("the Debian mirror URL (default: the first Debian mirror in apt's sources)", is_str),
    "arch": Option("the Debian architecture (default: the host's)", is_str),
    "variant": Option("debootstrap's --variant (default minbase)", is_str),
    "include": Option("more packages to install", is_str_list),
    "cache": Option("use and fill the download cache (default true)", is_bool),
    "refresh": Option("run debootstrap even when the cache has the release, and replace the cache", is_bool),
}


def build(ctx: BuildContext, release: str = DEFAULT_RELEASE, mirror: str | None = None, arch: str | None = None,
          variant: str = "minbase", include: list[str] | None = None, cache: bool = True,
          refresh: bool = False) -> ImageDefaults:
    problems = [f"debootstrap: {what} {value!r} is not a Debian name" for what, value in
                (("release", release), ("arch", arch or "amd64"), ("variant", variant))
                if not _NAME_RE.fullmatch(value)]
    problems += [f"debootstrap: package {p!r} is not a Debian package name" for p in include or [] if not _NAME_RE.fullmatch(p)]
    if problems:
        raise ConfigError(problems)
    arch = arch or _dpkg_arch()
    cache_file = ctx.cache / "debootstrap" / cache_name(release, arch, variant, include or [])
    described = f"debootstrap {release} {variant} {arch}"
    if cache and cache_file.exists() and not refresh:
        info = _read_info(cache_file)
        _untar_cache(ctx, cache_file)
        source = f"{described} from {info.get('mirror', '?')} (cache {cache_file.name} of {info.get('created', '?')})"
    else:
        mirror = mirror or apt_mirror(release)
        _debootstrap(ctx, release, mirror, arch, variant, include or [])
        source = f"{described} from {mirror}"
        if cache:
            _write_cache(ctx, cache_file, mirror)
    cmd = ["/sbin/init"] if os.path.lexists(ctx.rootfs / "sbin/init") else ["/bin/bash"]
    return ImageDefaults(source=source, cmd=cmd, env=[PATH], arch=arch)


def cache_name(release: str, arch: str, variant: str, include: list[str]) -> str:
    """RELEASE.tar for the default build (minbase, host arch), a longer name for others."""
    if variant == "minbase" and arch == _dpkg_arch() and not include:
        return f"{release}.tar"
    extra = "-" + hashlib.sha256(",".join(sorted(include)).encode()).hexdigest()[:8] if include else ""
    return f"{release}-{arch}-{variant}{extra}.tar"


def _dpkg_arch() -> str:
    from jaula.storage.templates import host_arch

    return host_arch()


def _find_debootstrap() -> str:
    for candidate in (shutil.which("debootstrap"), "/usr/sbin/debootstrap"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise JaulaError("debootstrap is missing: apt-get install debootstrap (scripts/setup does)")


def _debootstrap(ctx: BuildContext, release: str, mirror: str, arch: str, variant: str, include: list[str]) -> None:
    cmd = [_find_debootstrap(), f"--variant={variant}", f"--arch={arch}"]
    if include:
        cmd.append("--include=" + ",".join(include))
    cmd += [release, str(ctx.rootfs), mirror]
    env = {"PATH": PATH.partition("=")[2], "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    log.info("running %s", " ".join(cmd))
    tail: deque[str] = deque(maxlen=20)
    phase, count = "debootstrap: release files", 0
    ctx.progress(phase, 0, None)
    # its own session, so that a cancelled build stops dpkg and friends too (killpg below)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            m = re.match(r"I: (\w+)", line)
            if m and m[1] in PHASES:
                if PHASES[m[1]] != phase:
                    phase, count = PHASES[m[1]], 0
                if m[1] != "Validating":
                    count += 1
                ctx.progress(phase, count, None)
        rc = proc.wait()
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    if rc != 0:
        logfile = ctx.rootfs / "debootstrap" / "debootstrap.log"
        more = ""
        if logfile.exists():
            more = "\n  log: " + "\n  log: ".join(logfile.read_text(errors="replace").splitlines()[-10:])
        raise JaulaError(f"debootstrap {release} from {mirror} failed with exit status {rc}:\n  "
                         + "\n  ".join(tail) + more)


def _write_cache(ctx: BuildContext, cache_file: Path, mirror: str) -> None:
    """Keep the tree as a tar (GNU tar: numeric owners, xattrs, sparse files); a failure only
    costs the next build a download."""
    cache_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
    info_file = cache_file.with_suffix(".json")
    info_tmp = cache_file.with_name(f".{info_file.name}.tmp-{os.getpid()}")
    ctx.progress("cache", 0, None)
    try:
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sparse",
                        "-C", str(ctx.rootfs), "-cf", str(tmp), "."], check=True, capture_output=True, text=True)
        info = {"mirror": mirror, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        info_tmp.write_text(json.dumps(info) + "\n")
        os.replace(info_tmp, info_file)
        os.replace(tmp, cache_file)
        ctx.progress("cache", cache_file.stat().st_size, cache_file.stat().st_size)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
        log.warning("cannot write the debootstrap cache %s: %s", cache_file, detail)
        for leftover in (tmp, info_tmp):
            leftover.unlink(missing_ok=True)


def _read_info(cache_file: Path) -> dict[str, str]:
    try:
        return json.loads(cache_file.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def _untar_cache(ctx: BuildContext, cache_file: Path) -> None:
    total = cache_file.stat().st_size
    stage = f"unpack {cache_file.name}"
    ctx.progress(stage, 0, total)
    with open(cache_file, "rb") as f, Unpacker(ctx.rootfs, devices=True) as unpacker:
        extract_stream(unpacker, f, repr(str(cache_file)), tick=lambda done: ctx.progress(stage, done, total))
        unpacker.finish()


# --- apt's sources ------------------------------------------------------------------------------------
def apt_sources(root: str = "/etc/apt") -> list[tuple[list[str], list[str], list[str]]]:
    """(types, URIs, suites) of every entry of apt's sources, one-line and deb822 formats, in
    apt's order (sources.list, then sources.list.d/ by name)."""
    entries = []
    files = [os.path.join(root, "sources.list")] + sorted(glob.glob(os.path.join(root, "sources.list.d", "*")))
    for path in files:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                key = None
                for line in stanza.splitlines():
                    if line.startswith("#"):
                        continue
                    if line[:1] in (" ", "\t") and key:
                        fields[key] += " " + line.strip()
                    elif ":" in line:
                        key, _, value = line.partition(":")
                        key = key.strip().lower()
                        fields[key] = value.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "uris" in fields:
                    entries.append((fields.get("types", "").split(), fields["uris"].split(), fields.get("suites", "").split()))
        elif path.endswith(".list"):
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                line = re.sub(r"\[[^]]*\]", "", line)  # options: [arch=amd64 signed-by=...]
                words = line.split()
                if len(words) >= 3:
                    entries.append(([words[0]], [words[1]], [words[2]]))
    return entries


def apt_mirror(release: str, root: str = "/etc/apt") -> str:
    """The mirror apt uses for Debian: one that lists `release`, else one that serves a plain
    (not -security, not -updates) Debian suite, else deb.debian.org."""
    entries = [(uris, suites) for types, uris, suites in apt_sources(root) if "deb" in types]
    for uris, suites in entries:
        if release in suites:
            return uris[0]
    for uris, suites in entries:
        if any("-" not in s and "/" not in s for s in suites) and re.search(r"/debian/?$", uris[0]):
            return uris[0]
    return DEFAULT_MIRROR
