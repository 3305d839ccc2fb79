"""Template store logic without real images: names, options, atomic builds, the progress display,
apt sources, and the extractor against hostile archives (escapes, links, whiteouts).

Runs as any user: ownership is only kept when root, which these tests do not check.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from jaula.errors import BadState, ConfigError, Exists, NotFound
from jaula.storage.builders import ImageDefaults, Option, is_str
from jaula.storage.builders.debootstrap import apt_mirror, apt_sources, cache_name
from jaula.storage.builders.streams import extract_stream
from jaula.storage.builders.unpack import ArchiveError, Unpacker, member_path
from jaula.storage.progress import TerminalProgress, human
from jaula.storage.templates import TemplateStore, parse_os_release, validate_name


# --- names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "web1", "debian-12", "x" * 63, "0", "a-b-c"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "is empty"),
    ("../x", "would be a path"),
    ("a/b", "would be a path"),
    ("..", "would be a path"),
    ("a\nb", "contains a control character"),
    ("a\x7f", "contains a control character"),
    ("caf\u00e9", "outside ASCII"),
    ("\u0430pple", "outside ASCII"),  # Cyrillic a: a homoglyph
    ("x" * 64, "64 characters long (at most 63)"),
    ("Web", "uppercase"),
    ("-a", "starts or ends with '-'"),
    ("a-", "starts or ends with '-'"),
    ("a_b", "contains '_'"),
    ("a.b", "contains '.'"),
    ("a b", "contains ' '"),
])
def test_invalid_names_say_why(name: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_name(name)
    msg = str(e.value)
    assert why in msg
    assert msg.startswith(f"Template name {name!a} ")
    assert "lowercase letters (a-z), digits and '-'" in msg
    assert msg.isascii()  # control characters and unicode are shown escaped


def test_invalid_name_creates_nothing(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    for bad in ("../evil", "a/b", "A", ""):
        with pytest.raises(ConfigError):
            store.build(bad, "busybox")
    assert not (tmp_path / "templates").exists()
    assert not (tmp_path / "evil").exists()


def test_unknown_source_and_options_all_reported(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    with pytest.raises(ConfigError, match="Unknown template source 'nope': use one of busybox, debootstrap, oci, tarball"):
        store.build("x", "nope")
    with pytest.raises(ConfigError) as e:
        store.build("x", "tarball", colour="red", devices="yes")
    assert e.value.problems == [
        "tarball: unknown option 'colour' (options: cmd, devices, env, path)",
        "tarball: option 'path' is required (the tar archive of a root file tree)",
        "tarball: option 'devices' must be true or false (create the archive's device nodes (default: skip them; the runtime makes /dev))",
    ]
    assert not (tmp_path / "templates").exists()


def test_get_and_delete_missing(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    assert store.list() == []
    with pytest.raises(NotFound, match="Template 'ghost' not found"):
        store.get("ghost")
    with pytest.raises(NotFound):
        store.delete("ghost")
    with pytest.raises(ConfigError):
        store.get("../etc")


# --- atomic builds ----------------------------------------------------------------------------------
def _tiny(ctx, text: str = "hello") -> ImageDefaults:
    (ctx.rootfs / "etc").mkdir()
    (ctx.rootfs / "etc/os-release").write_text('ID=tiny\nVERSION_ID="1.0"\n')
    (ctx.rootfs / "hello").write_text(text)
    ctx.progress("tiny", 1, 1)
    return ImageDefaults(source="tiny test builder", cmd=["/hello"], env=["A=1"], user="1000")


_tiny.OPTIONS = {"text": Option("what /hello says", is_str)}  # type: ignore[attr-defined]


def _leftovers(store: TemplateStore) -> list[str]:
    return sorted(os.listdir(store.root)) if store.root.exists() else []


def test_build_get_list_delete(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    seen = []
    t = store.build("tiny", _tiny, progress=lambda *a: seen.append(a))
    assert (t.name, t.source, t.os, t.os_version, t.cmd, t.env, t.user, t.workdir) == \
        ("tiny", "tiny test builder", "tiny", "1.0", ["/hello"], ["A=1"], "1000", "/")
    assert t.size == len("hello") + len('ID=tiny\nVERSION_ID="1.0"\n')
    assert t.path == store.root / "tiny" and (t.rootfs / "hello").read_text() == "hello"
    assert t.created.endswith("Z") and time.strptime(t.created, "%Y-%m-%dT%H:%M:%SZ")
    assert ("tiny", 1, 1) in seen and seen[-1][0] == "done"
    assert store.get("tiny") == t
    assert store.list() == [t]
    assert _leftovers(store) == ["tiny"]
    assert stat.S_IMODE(os.stat(store.root / "tiny").st_mode) == 0o700
    store.delete("tiny")
    assert store.list() == [] and _leftovers(store) == []


def test_existing_name_refused_unless_replace(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    store.build("tiny", _tiny)
    with pytest.raises(Exists, match="Template 'tiny' exists"):
        store.build("tiny", _tiny, text="other")
    assert (store.root / "tiny/rootfs/hello").read_text() == "hello"
    t = store.build("tiny", _tiny, text="other", replace=True)
    assert (t.rootfs / "hello").read_text() == "other"
    assert _leftovers(store) == ["tiny"]


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failing_build_leaves_nothing(tmp_path: Path, exc: BaseException) -> None:
    store = TemplateStore(tmp_path / "templates")

    def failing(ctx) -> ImageDefaults:
        (ctx.rootfs / "half").mkdir()
        (ctx.rootfs / "half/done").write_text("x" * 1000)
        os.chmod(ctx.rootfs / "half", 0o555)  # removal must cope with read-only folders
        raise exc

    with pytest.raises(type(exc)):
        store.build("broken", failing)
    assert _leftovers(store) == []
    with pytest.raises(NotFound):
        store.get("broken")


def test_templates_in_use_are_kept(tmp_path: Path) -> None:
    users = {"tiny": ["web2", "web1"]}
    store = TemplateStore(tmp_path / "templates", in_use=lambda name: users.get(name, []))
    first = store.build("tiny", _tiny)
    for action in (lambda: store.delete("tiny"), lambda: store.build("tiny", _tiny, text="new", replace=True)):
        with pytest.raises(BadState, match="Template 'tiny' is used by web1, web2: cannot (delete|replace) it"):
            action()
    assert store.get("tiny") == first
    users.clear()
    second = store.build("tiny", _tiny, text="new", replace=True)
    assert second.id != first.id and len(second.id) == 16
    store.delete("tiny")


def test_failing_replace_keeps_the_old_template(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    store.build("tiny", _tiny)

    def failing(ctx) -> ImageDefaults:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.build("tiny", failing, replace=True)
    assert (store.get("tiny").rootfs / "hello").read_text() == "hello"
    assert _leftovers(store) == ["tiny"]


def test_cleanup_removes_leftovers_of_dead_processes(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    store.root.mkdir(parents=True)
    dead = 2 ** 22 + 1  # above pid_max's ceiling: never a live process
    (store.root / f".old.tmp-{dead}/rootfs").mkdir(parents=True)
    (store.root / f".gone.del-{dead}").mkdir()
    (store.root / f".mine.tmp-{os.getpid()}").mkdir()
    assert sorted(store.cleanup()) == [f".gone.del-{dead}", f".old.tmp-{dead}"]
    assert _leftovers(store) == [f".mine.tmp-{os.getpid()}"]


def test_list_skips_builds_in_progress(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    store.build("tiny", _tiny)
    (store.root / f".next.tmp-{os.getpid()}/rootfs").mkdir(parents=True)
    (store.root / "nometa/rootfs").mkdir(parents=True)
    assert [t.name for t in store.list()] == ["tiny"]


def test_jaula_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAULA_ROOT", str(tmp_path / "jr"))
    store = TemplateStore()
    assert store.root == tmp_path / "jr/templates" and store.cache == tmp_path / "jr/cache"


# --- progress display ---------------------------------------------------------------------------------
def test_progress_plain_lines() -> None:
    out = io.StringIO()
    with TerminalProgress(out, tty=False) as p:
        for done in range(0, 101, 5):
            p("extract", done * 1024, 100 * 1024)
        p("measure", 0, None)
        p("measure", 7, None)
    assert out.getvalue().splitlines() == [
        "extract:   0% (0/100.0k)",
        "extract:  25% (25.0k/100.0k)",
        "extract:  50% (50.0k/100.0k)",
        "extract:  75% (75.0k/100.0k)",
        "extract: 100% (100.0k/100.0k)",
        "measure...",
        "measure: 7",
    ]


def test_progress_tty_redraws_one_line() -> None:
    out = io.StringIO()
    with TerminalProgress(out, tty=True, rate=1e9) as p:
        p("layer 1/2", 0, 200)
        p("layer 1/2", 100, 200)
        p("layer 1/2", 200, 200)
        p("done", 5, 5)
    text = out.getvalue()
    assert text == ("\rlayer 1/2:   0% (0/200)\rlayer 1/2:  50% (100/200)\rlayer 1/2: 100% (200/200)\n"
                    "\rdone: 100% (5/5)\n")


def test_progress_tty_throttles() -> None:
    out = io.StringIO()
    with TerminalProgress(out, tty=True, rate=1) as p:
        for i in range(1000):
            p("x", i, 10_000)
    assert out.getvalue().count("\r") == 2  # the first draw, then the last value when it ends
    assert out.getvalue().endswith("x:   9% (999/9.8k)\n")


def test_human() -> None:
    assert [human(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30)] == ["0", "1023", "1.0k", "5.0M", "3.0G"]


# --- apt sources and small parsers ---------------------------------------------------------------------
def test_apt_sources_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n")
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian\nSuites: trixie trixie-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: trixie-security\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: sid\n")
    (tmp_path / "sources.list.d/other.list").write_text("deb https://apt.example/repo stable main\n")
    assert apt_sources(str(tmp_path)) == [
        (["deb"], ["http://mirror.example/debian"], ["bookworm"]),
        (["deb-src"], ["http://src.example/debian"], ["bookworm"]),
        (["deb"], ["http://deb.example/debian"], ["trixie", "trixie-updates"]),
        (["deb"], ["http://security.example/debian-security"], ["trixie-security"]),
        (["deb"], ["https://apt.example/repo"], ["stable"]),
    ]
    assert apt_mirror("trixie", str(tmp_path)) == "http://deb.example/debian"
    assert apt_mirror("bookworm", str(tmp_path)) == "http://mirror.example/debian"
    assert apt_mirror("forky", str(tmp_path)) == "http://mirror.example/debian"
    assert apt_mirror("forky", str(tmp_path / "none")) == "http://deb.debian.org/debian"


def test_debootstrap_cache_names() -> None:
    from jaula.storage.templates import host_arch

    assert cache_name("bookworm", host_arch(), "minbase", []) == "bookworm.tar"
    assert cache_name("bookworm", "arm64" if host_arch() != "arm64" else "amd64", "minbase", []).startswith("bookworm-a")
    assert cache_name("trixie", host_arch(), "minbase", ["vim"]) != cache_name("trixie", host_arch(), "minbase", ["nano"])


def test_debootstrap_refuses_bad_names_before_anything(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    with pytest.raises(ConfigError) as e:
        store.build("deb", "debootstrap", release="../../etc", include=["ok", "rm -rf"])
    assert e.value.problems == ["debootstrap: release '../../etc' is not a Debian name",
                                "debootstrap: package 'rm -rf' is not a Debian package name"]
    assert _leftovers(store) == []


def test_parse_os_release() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n# x=y\nNAME=\'A \\"b\\"\'\n'
    assert parse_os_release(text) == {"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "ID": "debian",
                                      "VERSION_ID": "12", "NAME": 'A "b"'}


# --- the extractor against hostile archives -------------------------------------------------------------
def _tar(*members: tuple) -> bytes:
    """A tar from (name, kind, extra) tuples: kind 'f' (extra: content), 'd', 'l' (symlink to
    extra), 'h' (hard link to extra), 'c' (char device), 'p' (fifo)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, *extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = None
            if kind == "f":
                data = extra[0] if extra else b"data"
                info.size = len(data)
                info.mode = 0o644
            elif kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, extra[0]
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, extra[0]
            elif kind == "c":
                info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
            elif kind == "p":
                info.type, info.mode = tarfile.FIFOTYPE, 0o600
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _unpack(root: Path, *layers: bytes, whiteouts: bool = False, **kw) -> Unpacker:
    root.mkdir(exist_ok=True)
    with Unpacker(root, whiteouts=whiteouts, owners=False, **kw) as u:
        for data in layers:
            extract_stream(u, io.BytesIO(data), "test layer")
        u.finish()
    return u


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(root to extract into, a folder outside it that must stay untouched)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    return tmp_path / "root", outside


def _untouched(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "host file"


@pytest.mark.parametrize("name, why", [
    ("/etc/passwd", "absolute path"),
    ("../escape", "'..' component"),
    ("a/../../escape", "'..' component"),
    ("./a/./../../x", "'..' component"),
])
def test_escaping_names_refused(sandbox: tuple[Path, Path], name: str, why: str) -> None:
    root, outside = sandbox
    with pytest.raises(ArchiveError, match=why):
        _unpack(root, _tar(("ok", "f"), (name, "f")))
    _untouched(outside)
    assert not (root.parent / "escape").exists()


def test_member_path_normalises() -> None:
    assert member_path("./a//b/./c/") == "a/b/c"
    assert member_path(".") == member_path("./") == ""
    with pytest.raises(ArchiveError, match="NUL"):
        member_path("a\0b")


def test_symlinked_parent_stays_inside(sandbox: tuple[Path, Path]) -> None:
    """`evil -> /` then `evil/pwned`: resolved inside the root, as the instance will see it."""
    root, outside = sandbox
    _unpack(root, _tar(("evil", "l", "/"), ("evil/pwned", "f", b"x"),
                       ("up", "l", "../../../../.."), ("up/uppwned", "f", b"y"),
                       ("dot", "l", "."), ("dot/dot/viadot", "f", b"z"),
                       ("inner", "d"), ("abs", "l", "/inner"), ("abs/viaabs", "f", b"w")))
    _untouched(outside)
    assert (root / "pwned").read_bytes() == b"x"
    assert (root / "inner/viaabs").read_bytes() == b"w"
    assert (root / "uppwned").read_bytes() == b"y"
    assert (root / "viadot").read_bytes() == b"z"


def test_dangling_symlinked_parent_refused(sandbox: tuple[Path, Path]) -> None:
    """`evil -> /host/outside` (absent inside the root) then `evil/pwned`: refused, nothing written."""
    root, outside = sandbox
    with pytest.raises(ArchiveError, match="a folder above it is a symbolic link to something that is not in the root"):
        _unpack(root, _tar(("evil", "l", str(outside)), ("evil/pwned", "f", b"x")))
    _untouched(outside)
    assert os.listdir(root) == ["evil"]


def test_file_over_symlink_replaces_the_link(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    _unpack(root, _tar(("f", "l", str(outside / "secret")), ("f", "f", b"mine"),
                       ("d", "l", str(outside)), ("d", "d"), ("d/x", "f")))
    _untouched(outside)
    assert not (root / "f").is_symlink() and (root / "f").read_bytes() == b"mine"
    assert not (root / "d").is_symlink() and (root / "d/x").is_file()


def test_hardlinks(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    for target in (str(outside / "secret"), "../outside/secret"):
        with pytest.raises(ArchiveError):
            _unpack(root, _tar(("h", "h", target)))
    with pytest.raises(ArchiveError, match="not in the archive"):
        _unpack(root, _tar(("h", "h", "missing")))
    with pytest.raises(ArchiveError, match="is a directory"):
        _unpack(root, _tar(("dir", "d"), ("h", "h", "dir")))
    # a link to a symlink links the symlink itself, never what it points to
    _unpack(root, _tar(("s", "l", str(outside / "secret")), ("h", "h", "s"),
                       ("a", "f", b"shared"), ("sub/b", "h", "a")))
    assert os.readlink(root / "h") == str(outside / "secret")
    assert os.stat(root / "a").st_ino == os.stat(root / "sub/b").st_ino
    # a link through a symlinked folder: the folder resolves inside the root, where there is no secret
    with pytest.raises(ArchiveError, match="not in the archive"):
        _unpack(root, _tar(("via", "l", str(outside)), ("hv", "h", "via/secret")))
    _untouched(outside)
    assert os.stat(outside / "secret").st_nlink == 1


def test_devices_skipped_fifos_kept(tmp_path: Path) -> None:
    u = _unpack(tmp_path / "root", _tar(("dev", "d"), ("dev/null", "c"), ("pipe", "p")))
    assert not (tmp_path / "root/dev/null").exists()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "root/pipe").st_mode)
    assert u.stats.skipped_devices == 1 and u.stats.fifos == 1


def test_modes_times_and_readonly_dirs(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        d = tarfile.TarInfo("ro")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o555, 1_000_000
        tar.addfile(d)
        f = tarfile.TarInfo("ro/suid")
        f.mode, f.mtime, f.size = 0o4755, 2_000_000, 3
        tar.addfile(f, io.BytesIO(b"abc"))
    root = tmp_path / "root"
    _unpack(root, buf.getvalue())
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(root / "ro/suid").st_mode) == 0o4755
    assert os.stat(root / "ro").st_mtime == 1_000_000
    assert os.stat(root / "ro/suid").st_mtime == 2_000_000


def test_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    lower = _tar(("etc", "d"), ("etc/motd", "f"), ("etc/keep", "f"), ("opt", "d"), ("opt/app", "d"),
                 ("opt/app/old", "f"), ("opt/app/sub", "d"), ("opt/app/sub/deep", "f"), ("gone", "d"), ("gone/x", "f"))
    upper = _tar(("etc/.wh.motd", "f", b""), ("opt/app", "d"), ("opt/app/sub", "d"), ("opt/app/sub/new", "f"),
                 ("opt/app/.wh..wh..opq", "f", b""), ("opt/app/fresh", "f"), (".wh.gone", "f", b""),
                 ("etc/.wh.never-there", "f", b""), ("nodir/.wh.x", "f", b""),
                 ("self", "f"), (".wh.self", "f", b""))
    u = _unpack(root, lower, upper, whiteouts=True)
    assert sorted(os.listdir(root)) == ["etc", "opt", "self"]
    assert os.listdir(root / "etc") == ["keep"]
    assert sorted(os.listdir(root / "opt/app")) == ["fresh", "sub"]
    assert os.listdir(root / "opt/app/sub") == ["new"]
    assert u.stats.whiteouts == 6
    with pytest.raises(ArchiveError, match="whiteout"):
        _unpack(tmp_path / "r2", _tar(("a/.wh...", "f", b"")), whiteouts=True)
    # without whiteouts (a plain rootfs tarball) .wh. files are ordinary files
    _unpack(tmp_path / "r3", upper)
    assert (tmp_path / "r3/etc/.wh.motd").exists()


def test_damaged_archives(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a tar archive"):
        _unpack(tmp_path / "a", b"this is not a tar archive at all" * 40)
    data = _tar(("big", "f", b"x" * 100_000))
    with pytest.raises(ArchiveError, match="damaged tar archive: unexpected end of data"):
        _unpack(tmp_path / "b", data[:20_000])


def test_digest_checked(tmp_path: Path) -> None:
    import hashlib

    data = _tar(("a", "f"))
    root = tmp_path / "root"
    root.mkdir()
    with Unpacker(root, owners=False) as u:
        extract_stream(u, io.BytesIO(data), "layer", digest="sha256:" + hashlib.sha256(data).hexdigest())
        with pytest.raises(ArchiveError, match="does not match its digest"):
            extract_stream(u, io.BytesIO(data), "layer", digest="sha256:" + "0" * 64)
