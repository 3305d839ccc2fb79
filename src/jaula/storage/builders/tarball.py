"""The `tarball` template: a root file tree from a tar archive (plain, gzip, bzip2, xz, zstd).

Members are extracted by `unpack.Unpacker`: numeric owners, modes and xattrs kept, nothing
written outside the root, absolute and '..' names refused, device nodes skipped (`devices=True`
keeps them, for archives you trust).
"""

from __future__ import annotations

import os
from pathlib import Path

from jaula.errors import ConfigError
from jaula.lazylog import getLogger
from jaula.storage.builders import (
    BuildContext,
    ImageDefaults,
    Option,
    is_bool,
    is_path,
    is_str_list,
)
from jaula.storage.builders.streams import extract_stream
from jaula.storage.builders.unpack import Unpacker

log = getLogger(__name__)

OPTIONS = {
    "path": Option("the tar archive of a root file tree", is_path, required=True),
    "devices": Option("create the archive's device nodes (default: skip them; the runtime makes /dev)", is_bool),
    "cmd": Option("the default command (default: /sbin/init when the tree has one, else /bin/sh)", is_str_list),
    "env": Option("the default environment, as NAME=value strings", is_str_list),
}


def build(ctx: BuildContext, path: str | Path, devices: bool = False, cmd: list[str] | None = None,
          env: list[str] | None = None) -> ImageDefaults:
    archive = Path(path)
    try:
        f = open(archive, "rb")
    except OSError as e:
        raise ConfigError(f"tarball: cannot open {str(archive)!r}: {e.strerror}") from None
    with f, Unpacker(ctx.rootfs, devices=devices) as unpacker:
        total = os.fstat(f.fileno()).st_size
        stage = f"extract {archive.name}"
        ctx.progress(stage, 0, total)
        extract_stream(unpacker, f, repr(str(archive)), tick=lambda done: ctx.progress(stage, done, total))
        unpacker.finish()
        stats = unpacker.stats
    if stats.skipped_devices:
        log.info("%s: skipped %d device nodes", archive, stats.skipped_devices)
    if cmd is None:
        cmd = ["/sbin/init"] if os.path.lexists(ctx.rootfs / "sbin/init") else ["/bin/sh"]
    return ImageDefaults(
        source=f"tarball {archive.resolve()}",
        cmd=list(cmd),
        env=list(env) if env is not None else ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    )
