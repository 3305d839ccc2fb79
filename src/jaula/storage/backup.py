"""Export and import of a volume as a tarball (a backup), with GNU tar.

Format: a POSIX (pax) tar, plain or compressed by the name's suffix (.tar.gz, .tar.xz, .tar.bz2):
  backup.json   first member: {"format": "jaula-volume", "version": 1, "layout", "kind", "name",
                "template", "size", "created", "exported"}
  upper/...     layout "overlay-upper" (dir and loop pools): the volume's own overlayfs layer,
                not the merged tree, so a backup is as small as the instance's changes; it keeps
                overlayfs's whiteouts (0/0 character devices) and trusted.overlay.* xattrs
                (opaque folders, redirects), which is why every xattr is kept
  root/...      layout "tree" (btrfs pools): the volume's whole tree
Owners are numeric and written as seen inside the instance (a layer stored shifted to host ids
N.. is written as 0..), so the backup can be imported for an instance with any id range.
Importing needs the template the volume was made over (same path, or another given).
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import time

from jaula.errors import ConfigError, NotFound
from jaula.storage.fsutil import run
from jaula.storage.idmap import IdMap, owners
from jaula.storage.pool import Volume

FORMAT = "jaula-volume"
VERSION = 1
META = "backup.json"
ARCNAME = {"overlay-upper": "upper", "tree": "root"}
_COMMON = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--format=posix"]


def meta_of(vol: Volume, layout: str) -> dict:
    return {"format": FORMAT, "version": VERSION, "layout": layout, "kind": vol.kind, "name": vol.name,
            "template": vol.template, "size": vol.size, "created": vol.created, "exported": time.time()}


def write(tar_path: str, meta: dict, parent: str, arcname: str, idmap: IdMap | None,
          more: tuple[tuple[str, str], ...] = ()) -> None:
    """Write `parent`/`arcname` and `meta` to `tar_path` (atomically: a failure leaves nothing);
    `more`: (parent, name) of further trees to add after it, owners as they are."""
    tar_path = os.path.abspath(tar_path)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=os.path.dirname(tar_path)) as tmp:
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        argv = ["tar", "--create", "--auto-compress", "--sparse", *_COMMON]
        if idmap is not None:  # host ids N.. go back to 0..
            uids, gids = owners(os.path.join(parent, arcname))
            for flag, ids, base in (("--owner-map", uids, idmap.uid_base), ("--group-map", gids, idmap.gid_base)):
                path = os.path.join(tmp, flag.strip("-"))
                with open(path, "w") as f:
                    f.writelines(f"+{i} +{i - base}\n" for i in sorted(ids) if base <= i < base + idmap.size)
                argv.append(f"{flag}={path}")
        # the partial file lives in tmp until it is whole; the suffix tells tar how to compress
        partial = os.path.join(tmp, os.path.basename(tar_path))
        argv += [f"--file={partial}", "-C", tmp, META, "-C", parent, arcname]
        for where, name in more:
            argv += ["-C", where, name]
        run(argv)
        os.rename(partial, tar_path)


def read_meta(tar_path: str, layout: str) -> dict:
    """The backup's metadata, checked for a pool whose exports have `layout`."""
    if not isinstance(tar_path, str) or not os.path.isfile(tar_path):
        raise NotFound(f"no backup file {tar_path!r}")
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            first = tar.next()
            if first is None or first.name != META or not first.isfile():
                raise ConfigError(f"{tar_path!r} is not a jaula volume backup: its first member is not {META}")
            meta = json.load(tar.extractfile(first))  # type: ignore[arg-type]
    except (tarfile.TarError, OSError, ValueError) as e:
        raise ConfigError(f"cannot read backup {tar_path!r}: {e}") from None
    problems = []
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{tar_path!r} is not a jaula volume backup (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        problems.append(f"backup version {meta.get('version')!r} is not supported (this jaula reads {VERSION})")
    if meta.get("layout") != layout:
        problems.append(f"backup layout {meta.get('layout')!r} (from a {meta.get('kind')} pool) does not fit "
                        f"this pool, which takes {layout!r}")
    if not isinstance(meta.get("template"), str):
        problems.append("backup names no template")
    size = meta.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        problems.append(f"backup size {size!r} is not a positive integer")
    if problems:
        raise ConfigError(problems)
    return meta


def extract(tar_path: str, dest: str, arcname: str) -> None:
    """Extract member `arcname` (a folder, with everything in it) of the backup into folder `dest`."""
    run(["tar", "--extract", f"--file={os.path.abspath(tar_path)}", "--same-owner", "--same-permissions",
         *_COMMON[:-1], "-C", dest, arcname])
