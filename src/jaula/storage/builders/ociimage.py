"""The `oci` template: an OCI image layout (folder or tarball) or a `docker save`/`podman save`
archive, its layers applied in order with whiteouts, its config's Env, Cmd, Entrypoint,
WorkingDir and User kept as the template's defaults.

OCI layout (image-spec `image-layout.md`): `index.json` -> manifest (perhaps through a nested
index) -> `config` and `layers`, each a blob at `blobs/<alg>/<hex>` checked against its digest.
docker/podman save: `manifest.json` = [{"Config": path, "RepoTags": [...], "Layers": [paths]}].
A tarball is read in place (tarfile's random access), not unpacked to a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from jaula.errors import ConfigError, NotFound, SyscallError
from jaula.record import Record
from jaula.storage.builders import BuildContext, ImageDefaults, Option, is_path, is_str
from jaula.storage.builders.streams import extract_stream
from jaula.storage.builders.unpack import ArchiveError, Unpacker, member_path

OPTIONS = {
    "path": Option("an OCI image layout (folder or tarball) or a docker/podman save archive", is_path, required=True),
    "ref": Option("which image when the archive holds several: a tag (docker RepoTags, or the OCI "
                  "org.opencontainers.image.ref.name annotation)", is_str),
}

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
REF_NAME = "org.opencontainers.image.ref.name"
_DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_JSON_LIMIT = 16 << 20


class Layer(Record):
    path: str            # inside the image folder or archive
    digest: str = ""     # "sha256:..." to verify the blob against, when the format gives one
    size: int | None = None


class Plan(Record):
    format: str          # "oci" or "docker"
    config: dict
    layers: list
    ref: str = ""


# --- where blobs come from ---------------------------------------------------------------------------
class DirSource:
    """An unpacked image: files opened inside the folder (its symlinks cannot point out of it)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def open(self, rel: str) -> BinaryIO:
        from jaula.linux.fs import open_in_root

        try:
            fd = open_in_root(self.fd, member_path(rel), os.O_RDONLY)
        except SyscallError as e:
            raise ArchiveError(f"Image {str(self.path)!r}: cannot open {rel!r}: {os.strerror(e.errno)}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArchiveError(f"Image {str(self.path)!r}: {rel!r} is not a regular file")
        return open(fd, "rb")

    def exists(self, rel: str) -> bool:
        try:
            self.open(rel).close()
            return True
        except ArchiveError:
            return False

    def size(self, rel: str) -> int:
        with self.open(rel) as f:
            return os.fstat(f.fileno()).st_size

    def close(self) -> None:
        os.close(self.fd)


class TarSource:
    """An image archive read in place: members found by their normalised names."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise ConfigError(f"oci: {str(path)!r} is neither an image folder nor a tar archive: {e}") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in self.tar.getmembers():
            try:
                self.members[member_path(m.name)] = m
            except ArchiveError:
                continue  # never looked up: the manifests' paths are checked the same way

    def _member(self, rel: str) -> tarfile.TarInfo:
        m = self.members.get(member_path(rel))
        if m is None:
            raise ArchiveError(f"Image archive {str(self.path)!r} has no {rel!r}")
        return m

    def open(self, rel: str) -> BinaryIO:
        m = self._member(rel)
        try:
            f = self.tar.extractfile(m)  # follows hard and symbolic links within the archive
        except (KeyError, tarfile.TarError):
            f = None
        if f is None:
            raise ArchiveError(f"Image archive {str(self.path)!r}: {rel!r} is not a file")
        return f  # type: ignore[return-value]

    def exists(self, rel: str) -> bool:
        try:
            self._member(rel)
            return True
        except ArchiveError:
            return False

    def size(self, rel: str) -> int:
        m = self._member(rel)
        if m.issym() or m.islnk():
            with self.open(rel) as f:
                f.seek(0, os.SEEK_END)
                return f.tell()
        return m.size

    def close(self) -> None:
        self.tar.close()


def open_source(path: Path) -> DirSource | TarSource:
    if path.is_dir():
        return DirSource(path)
    if not path.exists():
        raise ConfigError(f"oci: {str(path)!r} does not exist")
    return TarSource(path)


# --- reading the manifests ----------------------------------------------------------------------------
def _load_json(src: DirSource | TarSource, rel: str, digest: str = "") -> Any:
    with src.open(rel) as f:
        data = f.read(_JSON_LIMIT + 1)
    if len(data) > _JSON_LIMIT:
        raise ArchiveError(f"Image: {rel!r} is larger than {_JSON_LIMIT} bytes: not a manifest")
    if digest:
        alg, _, want = digest.partition(":")
        if hashlib.new(alg, data).hexdigest() != want:
            raise ArchiveError(f"Image: {rel!r} does not match its digest {digest}: the image is damaged")
    try:
        return json.loads(data)
    except ValueError as e:
        raise ArchiveError(f"Image: {rel!r} is not valid JSON: {e}") from None


def blob_path(descriptor: dict[str, Any], what: str) -> tuple[str, str]:
    """(path, digest) of a descriptor's blob; the digest is checked so it can be a path."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise ArchiveError(f"Image: {what} has no valid digest (sha256:<64 hex> or sha512:<128 hex>): {digest!r}")
    alg, _, hexa = digest.partition(":")
    return f"blobs/{alg}/{hexa}", digest


def plan(src: DirSource | TarSource, ref: str | None) -> Plan:
    """What to apply: the image config and its layers, in order."""
    if src.exists("index.json"):
        return _plan_oci(src, ref)
    if src.exists("manifest.json"):
        return _plan_docker(src, ref)
    raise ConfigError(f"oci: {str(src.path)!r} is neither an OCI image layout (no index.json) "
                      "nor a docker/podman save archive (no manifest.json)")


def _host_platform() -> tuple[str, str]:
    from jaula.storage.templates import host_arch

    return "linux", host_arch()


def _choose(descriptors: list[dict[str, Any]], ref: str | None, where: str) -> dict[str, Any]:
    if not descriptors:
        raise ArchiveError(f"Image: {where} lists no manifests")
    if ref is not None:
        named = [d for d in descriptors if (d.get("annotations") or {}).get(REF_NAME) == ref
                 or _ref_matches((d.get("annotations") or {}).get("io.containerd.image.name", ""), ref)]
        if not named:
            refs = sorted({(d.get("annotations") or {}).get(REF_NAME, "") for d in descriptors} - {""})
            raise NotFound(f"Image: no image named {ref!r} in {where} (names: {', '.join(refs) or 'none'})")
        descriptors = named
    if len(descriptors) == 1:
        return descriptors[0]
    host_os, host_arch = _host_platform()
    fitting = [d for d in descriptors if (d.get("platform") or {}).get("os") == host_os
               and (d.get("platform") or {}).get("architecture") == host_arch]
    if len(fitting) == 1 or (fitting and ref is not None):
        return fitting[0]
    refs = sorted({(d.get("annotations") or {}).get(REF_NAME, "?") for d in descriptors})
    raise ConfigError(f"oci: {where} holds several images ({', '.join(refs)}) and none or several fit "
                      f"{host_os}/{host_arch}: choose one with ref")


def _ref_matches(tag: str, ref: str) -> bool:
    return bool(tag) and (tag == ref or tag.rpartition("/")[2] == ref or tag.rpartition("/")[2] == f"{ref}:latest")


def _plan_oci(src: DirSource | TarSource, ref: str | None) -> Plan:
    index = _load_json(src, "index.json")
    where = "index.json"
    chosen = _choose(list(index.get("manifests") or []), ref, where)
    for _ in range(8):  # an index may point to an index (multi-platform images)
        path, digest = blob_path(chosen, where)
        manifest = _load_json(src, path, digest)
        media = manifest.get("mediaType") or chosen.get("mediaType")
        if media in INDEX_TYPES or "manifests" in manifest:
            where = f"index {digest}"
            chosen = _choose(list(manifest.get("manifests") or []), None, where)
            continue
        break
    else:
        raise ArchiveError("Image: indexes nested too deep")
    config_path, config_digest = blob_path(manifest.get("config") or {}, f"manifest {digest}'s config")
    config = _load_json(src, config_path, config_digest)
    layers = []
    for i, desc in enumerate(manifest.get("layers") or []):
        lpath, ldigest = blob_path(desc, f"layer {i + 1} of manifest {digest}")
        if not src.exists(lpath):
            raise ArchiveError(f"Image: layer {i + 1} ({ldigest}) is missing from the image (a foreign or non-distributable layer?)")
        layers.append(Layer(path=lpath, digest=ldigest, size=desc.get("size")))
    name = (chosen.get("annotations") or {}).get(REF_NAME) or ref or ""
    return Plan(format="oci", config=config, layers=layers, ref=name)


def _plan_docker(src: DirSource | TarSource, ref: str | None) -> Plan:
    entries = _load_json(src, "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ArchiveError("Image: manifest.json lists no images")
    if ref is not None:
        entries = [e for e in entries if any(_ref_matches(t, ref) for t in e.get("RepoTags") or [])]
        if not entries:
            raise NotFound(f"Image: no image tagged {ref!r} in manifest.json")
    if len(entries) > 1:
        tags = sorted(t for e in entries for t in e.get("RepoTags") or [])
        raise ConfigError(f"oci: the archive holds several images ({', '.join(tags)}): choose one with ref")
    entry = entries[0]
    config = _load_json(src, entry.get("Config") or "")
    layers = []
    for rel in entry.get("Layers") or []:
        if not isinstance(rel, str):
            raise ArchiveError(f"Image: manifest.json lists a layer that is not a path: {rel!r}")
        member_path(rel)  # refuse absolute and '..' paths
        m = re.fullmatch(r"blobs/(sha256|sha512)/([a-f0-9]+)", rel)
        layers.append(Layer(path=rel, digest=f"{m[1]}:{m[2]}" if m else "", size=src.size(rel)))
    tags = entry.get("RepoTags") or []
    return Plan(format="docker", config=config, layers=layers, ref=ref or (tags[0] if tags else ""))


def image_defaults(config: dict[str, Any], source: str) -> ImageDefaults:
    """The template's defaults from an image config (image-spec `config.md`)."""
    c = config.get("config") or {}

    def strings(key: str) -> list[str]:
        v = c.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ArchiveError(f"Image config: {key} must be a list of strings, not {v!r}")
        return list(v)

    arch = config.get("architecture") or ""
    if arch == "arm" and config.get("variant"):
        arch = f"arm{config['variant']}"
    return ImageDefaults(
        source=source,
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        env=strings("Env"),
        workdir=c.get("WorkingDir") or "/",
        user=c.get("User") or "",
        arch=arch,
    )


def build(ctx: BuildContext, path: str | Path, ref: str | None = None) -> ImageDefaults:
    image = Path(path)
    src = open_source(image)
    try:
        p = plan(src, ref)
        n = len(p.layers)
        with Unpacker(ctx.rootfs, whiteouts=True) as unpacker:
            for i, layer in enumerate(p.layers, 1):
                stage = f"layer {i}/{n}"
                total = layer.size if isinstance(layer.size, int) else None
                ctx.progress(stage, 0, total)
                with src.open(layer.path) as f:
                    extract_stream(unpacker, f, f"Image layer {i}/{n} ({layer.path})", digest=layer.digest or None,
                                   tick=lambda done, s=stage, t=total: ctx.progress(s, done, t))
            unpacker.finish()
    finally:
        src.close()
    label = f"{p.format} {image.resolve()}" + (f" ({p.ref})" if p.ref else "")
    return image_defaults(p.config, label)
