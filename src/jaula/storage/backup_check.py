"""Checks on a volume backup (backup.py's format) before anything of it is extracted.

A backup may come from anyone (another host, a download): GNU tar extracts it as root, so every
member is looked at first, and the whole archive is refused, listing what is wrong, when:
  - a member's name is absolute or has a '..' (`unpack.member_path`), or lies outside the
    layout's folder (upper/ or root/) besides the first member, backup.json;
  - a member lies below a symbolic link of the archive (tar of a real tree never writes one,
    and extracting it would write where the link points);
  - a hard link points outside the layout's folder or to a member not seen before;
  - a member is a device node, except overlayfs's whiteouts (character device 0:0) in an
    overlay layer: an instance gets its /dev from the runtime, and an unprivileged one could
    not have made any other node;
  - the files' content passes `limit` bytes (the instance's disk quota, when it has one).
Besides the layout's folder, an instance's backup may hold its snapshots, each a volume backup
of its own as a plain file `snapshots/NAME.tar` (NAME a DNS label): listed in the summary, and
checked the same way before they are imported.
"""

from __future__ import annotations

import tarfile

from jaula.errors import ConfigError
from jaula.names import RULE, is_name
from jaula.record import Record
from jaula.storage.backup import ARCNAME, META
from jaula.storage.builders.unpack import ArchiveError, member_path
from jaula.storage.fsutil import stop_point

MAX_PROBLEMS = 20  # listed at most; the count says how many more
SNAPSHOTS = "snapshots"


class Summary(Record):
    members: int = 0
    bytes: int = 0
    whiteouts: int = 0
    snapshots: list = []  # noqa: RUF012 - Record copies it; the snapshots/NAME.tar members, in order


def check_archive(tar_path: str, layout: str, limit: int | None = None) -> Summary:
    """Every member of backup `tar_path` checked (module doc); ConfigError lists what is wrong."""
    top = ARCNAME[layout]
    problems: list[str] = []
    links: set[str] = set()
    seen: set[str] = set()
    out = Summary()
    try:
        with tarfile.open(tar_path, "r|*") as tar:
            for i, m in enumerate(tar):
                stop_point()  # a cancelled import stops here (a big archive takes seconds to read)
                out.members += 1
                if i == 0:
                    if m.name != META:
                        problems.append(f"the first member is {m.name!r}, not {META}")
                    continue
                problems += _member(m, top, links, seen, layout, out)
    except (tarfile.TarError, OSError, EOFError) as e:
        problems.append(f"the archive is damaged: {e}")
    if limit is not None and out.bytes > limit:
        problems.append(f"its files hold {out.bytes} bytes, more than the instance's disk quota of {limit} bytes")
    if problems:
        more = len(problems) - MAX_PROBLEMS
        listed = problems[:MAX_PROBLEMS] + ([f"... and {more} more problems"] if more > 0 else [])
        raise ConfigError([f"Backup {tar_path!r} refused: {p}" for p in listed])
    return out


def _member(m: tarfile.TarInfo, top: str, links: set[str], seen: set[str], layout: str, out: Summary) -> list[str]:
    try:
        rel = member_path(m.name)
    except ArchiveError as e:
        return [str(e)]
    if rel == SNAPSHOTS and m.isdir():
        return []
    if rel.startswith(SNAPSHOTS + "/"):
        snap = rel[len(SNAPSHOTS) + 1:].removesuffix(".tar")
        if not (m.isreg() and rel.endswith(".tar") and is_name(snap)):
            return [f"member {m.name!r}: {SNAPSHOTS}/ holds only files NAME.tar, NAME a snapshot's name ({RULE})"]
        out.snapshots.append(snap)
        out.bytes += m.size
        return []
    if rel != top and not rel.startswith(top + "/"):
        return [f"member {m.name!r} is outside {top}/ (and {SNAPSHOTS}/)"]
    parts = rel.split("/")
    for n in range(1, len(parts)):
        if "/".join(parts[:n]) in links:
            return [f"member {m.name!r} lies below the symbolic link {'/'.join(parts[:n])!r}"]
    problems = []
    if m.issym():
        links.add(rel)
    elif m.islnk():
        try:
            target = member_path(m.linkname)
        except ArchiveError as e:
            return [f"hard link {m.name!r}: {e}"]
        if target not in seen:
            problems.append(f"hard link {m.name!r} points to {m.linkname!r}, which is not an earlier member of {top}/")
    elif m.ischr() or m.isblk():
        if layout == "overlay-upper" and m.ischr() and (m.devmajor, m.devminor) == (0, 0):
            out.whiteouts += 1
        else:
            kind = "character" if m.ischr() else "block"
            problems.append(f"member {m.name!r} is a {kind} device {m.devmajor}:{m.devminor} "
                            "(only overlayfs whiteouts, character 0:0, are allowed)")
    elif m.isreg():
        out.bytes += m.size
    elif not (m.isdir() or m.isfifo()):
        problems.append(f"member {m.name!r} is of an unknown type {m.type!r}")
    seen.add(rel)
    return problems
