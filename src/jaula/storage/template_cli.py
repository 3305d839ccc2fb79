"""Templates by hand, until `jaula` (the daemon's client) has its own verbs:

    python -m jaula.storage.template_cli build bb busybox
    python -m jaula.storage.template_cli build deb12 debootstrap release=bookworm
    python -m jaula.storage.template_cli import-image app ./app.tar ref=latest
    python -m jaula.storage.template_cli import-tarball rootfs ./rootfs.tar.zst
    python -m jaula.storage.template_cli list | show NAME | delete NAME

Builder options are KEY=VALUE (true/false for switches, a,b,c for lists). Templates live in
$JAULA_ROOT/templates (default /var/lib/jaula/templates).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jaula.errors import ExitCode, JaulaError

LIST_OPTIONS = {"include", "cmd", "env"}


def _options(pairs: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise JaulaError(f"Option {pair!r} is not KEY=VALUE")
        if value in ("true", "false"):
            opts[key] = value == "true"
        elif key in LIST_OPTIONS:
            opts[key] = [v for v in value.split(",") if v]
        else:
            opts[key] = value
    return opts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaula.storage.template_cli", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("build", help="build a template: busybox, debootstrap, tarball, oci")
    p.add_argument("name")
    p.add_argument("source")
    p.add_argument("options", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--replace", action="store_true", help="replace a template of that name")
    for verb, what in (("import-tarball", "a root file tree tarball"), ("import-image", "an OCI layout or docker/podman save archive")):
        p = verbs.add_parser(verb, help=f"a template from {what}")
        p.add_argument("name")
        p.add_argument("path")
        p.add_argument("options", nargs="*", metavar="KEY=VALUE")
        p.add_argument("--replace", action="store_true")
    verbs.add_parser("list", help="the templates, one a line")
    verbs.add_parser("show", help="a template's metadata as JSON").add_argument("name")
    verbs.add_parser("delete", help="delete a template").add_argument("name")
    args = parser.parse_args(argv)

    from jaula.storage import TemplateStore, TerminalProgress

    store = TemplateStore()
    try:
        if args.verb in ("build", "import-tarball", "import-image"):
            opts = _options(args.options)
            if args.verb == "build":
                source = args.source
            else:
                source = "tarball" if args.verb == "import-tarball" else "oci"
                opts["path"] = args.path
            with TerminalProgress() as show:
                t = store.build(args.name, source, replace=args.replace, progress=show, **opts)
            print(f"{t.name}: {t.os} {t.os_version} {t.arch}, {t.size / 2**20:.1f} MiB, runs {t.command}".replace("  ", " "))
        elif args.verb == "list":
            for t in store.list():
                print(f"{t.name:20} {t.os + ' ' + t.os_version:16} {t.arch:8} {t.size / 2**20:8.1f} MiB  {t.created}  {t.source}")
        elif args.verb == "show":
            print(json.dumps(store.get(args.name).to_json(), indent=2))
        elif args.verb == "delete":
            store.delete(args.name)
    except JaulaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing was kept", file=sys.stderr)
        return ExitCode.FAILURE
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
