"""Templates for real, as root and without network: the busybox builder, rootfs tarball import
(every compression) and image import (docker/podman save and OCI layouts, made here from the
busybox tree with a second layer of whiteouts), compared file by file: type, mode, owner,
content hash, link target, hard links and xattrs. The busybox template then boots as a system
instance under jaula-runtime.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from jaula.errors import Exists, NotFound
from jaula.storage import ArchiveError, Template, TemplateStore
from jaula.storage.templates import host_arch, os_release, tree_size

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: templates keep file owners")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TemplateStore:
    monkeypatch.setenv("JAULA_ROOT", str(tmp_path / "jaula"))
    return TemplateStore()


@pytest.fixture
def busybox(store: TemplateStore) -> Template:
    return store.build("bb", "busybox")


# --- comparing trees -----------------------------------------------------------------------------------
def walk(root: Path) -> dict[str, tuple]:
    """Every entry below root: (type, mode, uid, gid, content sha256 | link target | rdev, xattrs),
    plus a "<hardlinks>" entry listing groups of names sharing an inode."""
    out: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(kind):
                with open(path, "rb") as f:
                    what: Any = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(kind):
                what = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                what = st.st_rdev
            else:
                what = None
            xattrs = () if stat.S_ISLNK(kind) else tuple(sorted((k, os.getxattr(path, k)) for k in os.listxattr(path)))
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what, xattrs)
    out["<hardlinks>"] = tuple(sorted(tuple(sorted(g)) for g in inodes.values()))
    return out


def assert_same_tree(got: Path, want: Path) -> None:
    a, b = walk(got), walk(want)
    assert sorted(set(a) ^ set(b)) == []
    different = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert different == {}


# --- busybox ---------------------------------------------------------------------------------------------
def test_busybox_template(store: TemplateStore) -> None:
    stages: list[str] = []
    t = store.build("bb", "busybox", progress=lambda stage, done, total: stages.append(stage))
    root = t.rootfs
    assert t.path == store.root / "bb"
    assert (t.name, t.os, t.os_version, t.arch, t.cmd, t.entrypoint, t.workdir, t.user) == \
        ("bb", "busybox", "", host_arch(), ["/sbin/init"], [], "/", "")
    assert t.source.startswith("busybox 1.") and "/bin/busybox" in t.source
    assert t.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert stages[0] == "busybox" and stages[-1] == "done"
    # the binary, its applets, the files an init needs
    assert (root / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    for applet in ("bin/sh", "sbin/init", "bin/ls", "sbin/ip", "bin/mount", "usr/bin/env"):
        assert os.readlink(root / applet) == "/bin/busybox", applet
    listed = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    assert all(os.path.lexists(root / a) for a in listed)
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert "root:x:0:" in (root / "etc/group").read_text()
    assert (root / "etc/hostname").read_text() == "bb\n"
    assert "::sysinit:/etc/init.d/rcS" in (root / "etc/inittab").read_text()
    for script in ("etc/init.d/rcS", "etc/init.d/rcK", "etc/init.d/console"):
        assert os.access(root / script, os.X_OK), script
        subprocess.run(["/bin/busybox", "sh", "-n", str(root / script)], check=True)  # syntax
    modes = {p: stat.S_IMODE(os.lstat(root / p).st_mode) for p in ("tmp", "var/tmp", "root", "etc/shadow", "bin/busybox")}
    assert modes == {"tmp": 0o1777, "var/tmp": 0o1777, "root": 0o700, "etc/shadow": 0o640, "bin/busybox": 0o755}
    assert {os.lstat(os.path.join(d, n)).st_uid for d, ds, fs in os.walk(root) for n in ds + fs} == {0}
    # the metadata on disk is what build returned
    meta = json.loads((t.path / "template.json").read_text())
    assert meta["format"] == 1 and meta["name"] == "bb" and meta["size"] == t.size
    assert abs(t.size - sum(os.lstat(os.path.join(d, n)).st_size for d, ds, fs in os.walk(root) for n in fs)) < 1 << 10
    assert store.get("bb") == t and store.list() == [t]
    assert sorted(os.listdir(store.root)) == ["bb"]


def test_busybox_refuses_a_dynamic_binary(store: TemplateStore) -> None:
    from jaula.errors import ConfigError

    with pytest.raises(ConfigError, match="dynamically linked: install busybox-static"):
        store.build("bad", "busybox", busybox="/bin/true")
    assert not store.root.exists() or os.listdir(store.root) == []


def test_replace_and_delete(store: TemplateStore, busybox: Template) -> None:
    with pytest.raises(Exists):
        store.build("bb", "busybox")
    again = store.build("bb", "busybox", replace=True, hostname="other")
    assert (again.rootfs / "etc/hostname").read_text() == "other\n"
    store.delete("bb")
    with pytest.raises(NotFound):
        store.get("bb")
    assert os.listdir(store.root) == []


# --- tarballs ---------------------------------------------------------------------------------------------
def enrich(root: Path) -> None:
    """Add what a real root has and busybox's lacks: owners, setuid, a fifo, hard links, xattrs,
    odd names, an empty file, a big file, a read-only folder."""
    (root / "home/user").mkdir()
    os.chown(root / "home/user", 1000, 1000)
    secret = root / "home/user/.secret"
    secret.write_text("mine")
    os.chown(secret, 1000, 1000)
    os.chmod(secret, 0o600)
    suid = root / "usr/bin/suidtool"
    shutil.copyfile("/bin/busybox", suid)
    os.chmod(suid, 0o4755)
    os.mkfifo(root / "run/fifo", 0o620)
    os.chown(root / "run/fifo", 0, 5)
    (root / "usr/lib").mkdir()
    (root / "usr/lib/a").write_bytes(b"hard" * 100)
    os.link(root / "usr/lib/a", root / "usr/lib/b")
    os.link(root / "usr/lib/a", root / "etc/c")
    os.symlink("../lib/a", root / "usr/bin/rel-link")
    os.lchown(root / "usr/bin/rel-link", 1000, 1000)
    os.setxattr(root / "usr/lib/a", "user.origin", b"test")
    os.setxattr(root / "home/user", "user.dir", b"x\x00y")
    (root / "etc/with space \u00e9").write_text("unicode")
    (root / "etc/empty").touch()
    (root / "var/big").write_bytes(os.urandom(1 << 20) + b"\0" * (2 << 20))
    (root / "ro").mkdir(mode=0o555)
    (root / "ro/inside").write_text("x")
    os.chmod(root / "ro", 0o555)


COMPRESSIONS = {"plain": [], "gz": ["-z"], "xz": ["-J"], "bz2": ["-j"], "zst": ["--zstd"]}


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_tarball_round_trip(store: TemplateStore, busybox: Template, tmp_path: Path, compression: str) -> None:
    if compression == "zst" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    enrich(busybox.rootfs)
    archive = tmp_path / f"root.tar.{compression}"
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", *COMPRESSIONS[compression],
                    "-C", str(busybox.rootfs), "-cf", str(archive), "."], check=True,
                   env=dict(os.environ, XZ_OPT="-0", BZIP2="-1"))  # fast levels: the test is about reading
    seen: list[tuple[str, int, int | None]] = []
    t = store.import_tarball("copy", archive, progress=lambda *a: seen.append(a))
    assert_same_tree(t.rootfs, busybox.rootfs)
    assert t.source == f"tarball {archive}"
    assert (t.os, t.arch, t.cmd) == ("busybox", busybox.arch, ["/sbin/init"])
    assert t.size == tree_size(busybox.rootfs) == busybox.size + (3 << 20) + 400 + os.path.getsize("/bin/busybox") + 4 + 7 + 1 + 8
    extract = [s for s in seen if s[0].startswith("extract")]
    assert extract[0][1] == 0 and extract[-1][1] == extract[-1][2] == archive.stat().st_size


def test_tarball_devices_skipped_unless_asked(store: TemplateStore, busybox: Template, tmp_path: Path) -> None:
    dev = busybox.rootfs / "dev"
    os.mknod(dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    archive = tmp_path / "root.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(busybox.rootfs), "-cf", str(archive), "."], check=True)
    assert os.listdir(store.import_tarball("nodev", archive).rootfs / "dev") == []
    t = store.import_tarball("withdev", archive, devices=True)
    assert os.stat(t.rootfs / "dev/null").st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("member, why", [
    ("../../escape", "'..' component"),
    ("/abs/escape", "absolute path"),
    ("etc/../../escape", "'..' component"),
])
def test_tarball_escape_refused_and_nothing_left(store: TemplateStore, tmp_path: Path, member: str, why: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("etc/ok", member):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ArchiveError, match=why):
        store.import_tarball("evil", archive)
    assert os.listdir(store.root) == []
    assert not (tmp_path / "escape").exists() and not (store.root.parent / "escape").exists()


def test_tarball_symlink_escape_stays_inside(store: TemplateStore, tmp_path: Path) -> None:
    """The classic: `hostetc -> /etc` then `hostetc/jaula-pwned`: written inside the template's own
    /etc (as the instance will see it), never on the host; a link to nothing inside is refused."""
    def archive(path: Path, with_etc: bool) -> Path:
        with tarfile.open(path, "w") as tar:
            if with_etc:
                tar.addfile(_info("etc", "d")[0])
            link = tarfile.TarInfo("hostetc")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc"
            tar.addfile(link)
            info, data = _info("hostetc/jaula-pwned", data=b"evil")
            tar.addfile(info, io.BytesIO(data or b""))
        return path

    t = store.import_tarball("inside", archive(tmp_path / "a.tar", with_etc=True))
    assert (t.rootfs / "etc/jaula-pwned").read_bytes() == b"evil"
    with pytest.raises(ArchiveError, match="a folder above it is a symbolic link to something that is not in the root"):
        store.import_tarball("evil", archive(tmp_path / "b.tar", with_etc=False))
    assert not Path("/etc/jaula-pwned").exists()
    assert os.listdir(store.root) == ["inside"]


# --- images -----------------------------------------------------------------------------------------------
IMAGE_CONFIG = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"],
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo $GREETING; id"],
    "WorkingDir": "/opt/keep",
    "User": "1000:1000",
}


def _info(name: str, kind: str = "f", data: bytes = b"", mode: int = 0o644, uid: int = 0) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uid, info.gid = 1_700_000_000, mode, uid, uid
    if kind == "d":
        info.type = tarfile.DIRTYPE
        return info, None
    info.size = len(data)
    return info, data


def layer_tars(rootfs: Path) -> list[bytes]:
    """Layer 1: the busybox tree plus files the second layer changes. Layer 2: whiteouts (a file,
    a folder), an opaque folder, a file over a folder, a file over a symlink, new files."""
    one = io.BytesIO()
    with tarfile.open(fileobj=one, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(rootfs, arcname=".")
        for name, kind, data in [("etc/motd", "f", b"welcome"), ("todelete", "d", b""), ("todelete/x", "f", b"x"),
                                 ("opt", "d", b""), ("opt/keep", "d", b""), ("opt/keep/a", "f", b"a"),
                                 ("opt/keep/sub", "d", b""), ("opt/keep/sub/b", "f", b"b"),
                                 ("opt/app", "d", b""), ("opt/app/x", "f", b"x")]:
            info, payload = _info(name, kind, data, mode=0o755 if kind == "d" else 0o644)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    two = io.BytesIO()
    with tarfile.open(fileobj=two, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, uid in [("etc/.wh.motd", "f", b"", 0), (".wh.todelete", "f", b"", 0),
                                      ("opt/keep", "d", b"", 1000), ("opt/keep/.wh..wh..opq", "f", b"", 0),
                                      ("opt/keep/new", "f", b"new", 1000), ("opt/app", "f", b"now a file", 0),
                                      ("usr/bin/wget", "f", b"not busybox", 0), ("etc/added", "f", b"added", 0)]:
            info, payload = _info(name, kind, data, mode=0o755 if kind == "d" else 0o644, uid=uid)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return [one.getvalue(), two.getvalue()]


def expected_tree(busybox: Template, tmp_path: Path) -> Path:
    """The busybox tree with layer 2's result applied by hand."""
    want = tmp_path / "want"
    subprocess.run(["cp", "-a", str(busybox.rootfs), str(want)], check=True)
    (want / "opt/keep").mkdir(parents=True)
    os.chown(want / "opt", 0, 0)
    os.chmod(want / "opt", 0o755)
    os.chown(want / "opt/keep", 1000, 1000)
    (want / "opt/keep/new").write_bytes(b"new")
    os.chown(want / "opt/keep/new", 1000, 1000)
    (want / "opt/app").write_bytes(b"now a file")
    os.unlink(want / "usr/bin/wget")
    (want / "usr/bin/wget").write_bytes(b"not busybox")
    (want / "etc/added").write_bytes(b"added")
    for p in ("opt/keep/new", "opt/app", "usr/bin/wget", "etc/added"):
        os.chmod(want / p, 0o644)
    return want


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def image_config(layers: list[bytes]) -> bytes:
    return json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": IMAGE_CONFIG,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(x)}" for x in layers]},
        "history": [{"created_by": "test layer 1"}, {"created_by": "test layer 2"}],
    }).encode()


def make_docker_archive(layers: list[bytes], dest: Path) -> Path:
    """`docker save`'s format (also podman's default): manifest.json, <id>.json, <id>/layer.tar."""
    config = image_config(layers)
    cfg_name = f"{_sha(config)}.json"
    files: dict[str, bytes] = {cfg_name: config}
    names = []
    for data in layers:
        lid = _sha(data)
        files[f"{lid}/layer.tar"] = data
        files[f"{lid}/VERSION"] = b"1.0"
        files[f"{lid}/json"] = json.dumps({"id": lid}).encode()
        names.append(f"{lid}/layer.tar")
    files["manifest.json"] = json.dumps([{"Config": cfg_name, "RepoTags": ["localhost/bbtest:latest"], "Layers": names}]).encode()
    files["repositories"] = json.dumps({"localhost/bbtest": {"latest": _sha(layers[-1])}}).encode()
    with tarfile.open(dest, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def make_oci_layout(layers: list[bytes], dest: Path) -> Path:
    """An OCI image layout folder: layer 1 gzip, layer 2 zstd (plain without zstd), one index entry
    among two (the other a different tag) to exercise ref."""
    blobs = dest / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        (blobs / _sha(data)).write_bytes(data)
        return f"sha256:{_sha(data)}"

    l1 = gzip.compress(layers[0], compresslevel=1)
    l2, l2_type = (_zstd(layers[1]), "application/vnd.oci.image.layer.v1.tar+zstd") if shutil.which("zstd") \
        else (layers[1], "application/vnd.oci.image.layer.v1.tar")
    config = image_config(layers)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(l1), "size": len(l1)},
            {"mediaType": l2_type, "digest": put(l2), "size": len(l2)},
        ],
    }).encode()
    only_base = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(l1), "size": len(l1)}],
    }).encode()
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(only_base), "size": len(only_base),
         "annotations": {"org.opencontainers.image.ref.name": "base"}},
    ]}))
    return dest


def _tar_folder(folder: Path, dest: Path) -> Path:
    subprocess.run(["tar", "-C", str(folder), "-cf", str(dest), "."], check=True)
    return dest


@pytest.mark.parametrize("form", ["docker-archive", "oci-folder", "oci-archive"])
def test_image_import(store: TemplateStore, busybox: Template, tmp_path: Path, form: str) -> None:
    layers = layer_tars(busybox.rootfs)
    if form == "docker-archive":
        image, ref = make_docker_archive(layers, tmp_path / "docker.tar"), None
    elif form == "oci-folder":
        image, ref = make_oci_layout(layers, tmp_path / "oci"), "latest"
    else:
        image, ref = _tar_folder(make_oci_layout(layers, tmp_path / "oci"), tmp_path / "oci.tar"), "latest"
    stages: list[str] = []
    t = store.import_image("img", image, ref=ref, progress=lambda stage, done, total: stages.append(stage))
    assert_same_tree(t.rootfs, expected_tree(busybox, tmp_path))
    assert (t.env, t.entrypoint, t.cmd, t.workdir, t.user) == (
        IMAGE_CONFIG["Env"], IMAGE_CONFIG["Entrypoint"], IMAGE_CONFIG["Cmd"], IMAGE_CONFIG["WorkingDir"], IMAGE_CONFIG["User"])
    assert t.command == ["/bin/sh", "-c", "echo $GREETING; id"]
    assert (t.os, t.arch) == ("busybox", busybox.arch)
    assert t.source.startswith("docker " if form == "docker-archive" else "oci ")
    assert t.source.endswith("(localhost/bbtest:latest)" if form == "docker-archive" else "(latest)")
    assert "layer 1/2" in stages and "layer 2/2" in stages
    assert store.get("img") == t


def test_image_ref_selects_and_is_required(store: TemplateStore, busybox: Template, tmp_path: Path) -> None:
    from jaula.errors import ConfigError

    layout = make_oci_layout(layer_tars(busybox.rootfs), tmp_path / "oci")
    with pytest.raises(ConfigError, match=r"holds several images \(base, latest\)"):
        store.import_image("img", layout)
    with pytest.raises(NotFound, match="no image named 'nope'.*names: base, latest"):
        store.import_image("img", layout, ref="nope")
    base = store.import_image("base", layout, ref="base")
    assert (base.rootfs / "etc/motd").read_text() == "welcome"  # only layer 1
    assert sorted(os.listdir(store.root)) == ["base", "bb"]


def test_damaged_image_leaves_nothing(store: TemplateStore, busybox: Template, tmp_path: Path) -> None:
    layout = make_oci_layout(layer_tars(busybox.rootfs), tmp_path / "oci")
    manifest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
    layer2 = json.loads((layout / "blobs/sha256" / manifest).read_text())["layers"][1]["digest"].split(":")[1]
    blob = layout / "blobs/sha256" / layer2
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the compressed trailer: still extracts, wrong digest
    blob.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="does not match its digest|damaged"):
        store.import_image("img", layout, ref="latest")
    assert os.listdir(store.root) == ["bb"]


def test_hostile_layer_refused(store: TemplateStore, busybox: Template, tmp_path: Path) -> None:
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info, data = _info("../../../etc/jaula-pwned", data=b"x")
        tar.addfile(info, io.BytesIO(data or b""))
    layers = [layer_tars(busybox.rootfs)[0], evil.getvalue()]
    with pytest.raises(ArchiveError, match="'..' component"):
        store.import_image("img", make_docker_archive(layers, tmp_path / "evil.tar"))
    assert os.listdir(store.root) == ["bb"]
    # a manifest pointing out of the archive
    bad = tmp_path / "badmanifest"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps([{"Config": "../../etc/passwd", "Layers": []}]))
    with pytest.raises(ArchiveError, match="'..' component"):
        store.import_image("img2", bad)
    assert os.listdir(store.root) == ["bb"]


def test_not_an_image(store: TemplateStore, tmp_path: Path) -> None:
    from jaula.errors import ConfigError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither an OCI image layout"):
        store.import_image("img", tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        store.import_image("img", tmp_path / "missing.tar")


# --- the busybox template boots as a system instance -------------------------------------------------------
def test_busybox_template_runs_init(busybox: Template, runtime, tmp_path: Path) -> None:
    from tests.support.bundle import DEFAULT_CAPS, make_bundle
    from tests.support.containers import status, wait_until

    caps = DEFAULT_CAPS + ["CAP_NET_ADMIN"]  # rcS brings up loopback
    b = make_bundle(tmp_path / "bundle", busybox.command, rootfs=busybox.rootfs, root={"path": "rootfs", "readonly": False},
                    process={"env": busybox.env, "cwd": busybox.workdir,
                             "capabilities": {k: caps for k in ("bounding", "effective", "permitted")}})
    cid = runtime.new_id()
    runtime("run", "--detach", "--bundle", b, cid, check=True)
    try:
        def booted() -> bool:
            r = runtime("exec", cid, "/bin/sh", "-c", "ip -o link show lo; ps -o comm")
            return r.returncode == 0 and "UP" in r.stdout and "sleep" in r.stdout
        wait_until("busybox init to run rcS and the console script", booted)
        out = runtime("exec", cid, "/bin/sh", "-c", "cat /proc/1/comm /etc/hostname", check=True).stdout
        assert out.split() == ["init", "bb"]
        runtime("kill", cid, "TERM", check=True)  # busybox init: shutdown actions, then reboot
        wait_until("the instance to stop on SIGTERM", lambda: status(runtime, cid) == "stopped", timeout=15)
    finally:
        runtime("delete", "--force", cid)


def test_os_release_read_inside_the_root(tmp_path: Path) -> None:
    """etc/os-release is a symlink in Debian; an absolute one must resolve inside the tree."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=inside\n")
    os.symlink("/usr/lib/os-release", root / "etc/os-release")
    assert os_release(root) == {"ID": "inside"}
    os.unlink(root / "etc/os-release")
    os.symlink("/etc/os-release", root / "etc/os-release")  # a loop inside, not the host's file
    assert os_release(root) == {"ID": "inside"}  # falls back to usr/lib/os-release


def test_failed_build_detaches_mounts_before_removing(store: TemplateStore, tmp_path: Path) -> None:
    """A debootstrap that dies leaves /proc mounted in the tree; a bind mount of host files there
    must be detached, not emptied, when the partial tree is removed."""
    from jaula.linux.mount import MS_BIND, mount

    host = tmp_path / "host-files"
    host.mkdir()
    (host / "precious").write_text("keep me")

    def dies_with_mounts(ctx):
        (ctx.rootfs / "proc").mkdir()
        (ctx.rootfs / "host").mkdir()
        mount("proc", str(ctx.rootfs / "proc"), "proc")
        mount(str(host), str(ctx.rootfs / "host"), None, MS_BIND)
        raise RuntimeError("debootstrap died")

    with pytest.raises(RuntimeError, match="debootstrap died"):
        store.build("mounted", dies_with_mounts)
    assert (host / "precious").read_text() == "keep me"
    assert os.listdir(store.root) == []
    with open("/proc/self/mountinfo") as f:
        assert str(store.root) not in f.read()
