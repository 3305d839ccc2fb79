"""Tar streams from compressed, counted and digest-checked input, fed to an `Unpacker`.

gzip, bzip2 and xz are tarfile's own; zstd (no module in the standard library) goes through the
`zstd` program, fed by a thread so that the input can come from any file object (a blob inside
an image archive). Progress is counted on the compressed input, whose size is known.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable
from typing import BinaryIO

from jaula.storage.builders.unpack import ArchiveError, Unpacker

_CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CountingReader:
    """A read-only file object that counts (and optionally hashes) what goes through it.

    `peek(n)` looks at the first bytes (the compression magic) without consuming them.
    """

    def __init__(self, raw: BinaryIO, digest: str | None = None):
        self.raw = raw
        self.pos = 0
        self._head = b""
        self.algorithm, _, self.expected = (digest or "").partition(":")
        self.hash = hashlib.new(self.algorithm) if digest else None

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            more = self.raw.read(n - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:n]

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                data, self._head = self._head, b""
                data += self.raw.read() if n < 0 else self.raw.read(n - len(data))
            else:
                data, self._head = self._head[:n], self._head[n:]
        else:
            data = self.raw.read(n)
        self.pos += len(data)
        if self.hash is not None:
            self.hash.update(data)
        return data

    def readable(self) -> bool:
        return True

    def verify(self, what: str) -> None:
        """Read to the end and compare the digest given at construction, if any."""
        while self.read(_CHUNK):
            pass
        if self.hash is not None and self.hash.hexdigest() != self.expected:
            raise ArchiveError(f"{what}: content does not match its digest {self.algorithm}:{self.expected} "
                               f"(got {self.algorithm}:{self.hash.hexdigest()}): the image is damaged")


class TarStream:
    """`.tar`: a tarfile in stream mode over `reader` (plain, gzip, bzip2, xz, or zstd).

    `close()` after the last member (checks that zstd ended well); `abort()` on failure.
    """

    def __init__(self, reader: CountingReader, what: str):
        self.reader = reader
        self.what = what
        self.proc: subprocess.Popen | None = None
        self._feeder: threading.Thread | None = None
        self._feed_error: BaseException | None = None
        source: BinaryIO = reader  # type: ignore[assignment]
        if reader.peek(4) == ZSTD_MAGIC:
            zstd = shutil.which("zstd")
            if zstd is None:
                raise ArchiveError(f"{what} is zstd-compressed and the zstd program is missing: apt-get install zstd")
            self.proc = subprocess.Popen([zstd, "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            self._feeder = threading.Thread(target=self._feed, name="zstd-feed", daemon=True)
            self._feeder.start()
            source = self.proc.stdout  # type: ignore[assignment]
        try:
            self.tar = tarfile.open(fileobj=source, mode="r|*")
        except tarfile.TarError as e:
            self.abort()
            raise ArchiveError(self.zstd_complaint() or f"{what} is not a tar archive (plain, gzip, bzip2, xz or zstd): {e}") from None

    def _feed(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            while chunk := self.reader.read(_CHUNK):
                self.proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as e:  # noqa: BLE001 - raised again by close()
            self._feed_error = e
        finally:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def abort(self) -> None:
        """Stop zstd: closing its output ends it with SIGPIPE if it was still writing."""
        if self.proc is None:
            return
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._feeder is not None:
            self._feeder.join()

    def zstd_complaint(self) -> str | None:
        """zstd's own words when it failed by itself (a damaged frame, a wrong checksum)."""
        if self.proc is None or self.proc.returncode is None or self.proc.returncode <= 0:
            return None  # fine, or ended by our SIGPIPE/SIGKILL
        assert self.proc.stderr is not None
        said = self.proc.stderr.read().decode(errors="replace").strip().replace("/*stdin*\\ : ", "")
        return f"{self.what}: zstd failed ({said or f'exit status {self.proc.returncode}'}): the data is damaged"

    def close(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdout is not None
        while self.proc.stdout.read(_CHUNK):  # tar's end blocks and padding
            pass
        self.abort()
        if self._feed_error is not None:
            raise self._feed_error
        if (complaint := self.zstd_complaint()) is not None:
            raise ArchiveError(complaint)


def extract_stream(unpacker: Unpacker, raw: BinaryIO, what: str, *, digest: str | None = None,
                   tick: Callable[[int], None] | None = None) -> None:
    """Decompress `raw` as needed and extract its tar stream through `unpacker`.

    `tick(bytes_read)` is called as the compressed input is consumed; `digest` ("sha256:hex"),
    when given, must match the whole compressed input.
    """
    reader = CountingReader(raw, digest)
    stream = TarStream(reader, what)
    try:
        unpacker.layer(stream.tar, (lambda: tick(reader.pos)) if tick else None)
    except (tarfile.TarError, EOFError) as e:
        stream.abort()
        raise ArchiveError(stream.zstd_complaint() or f"{what}: damaged tar archive: {e}") from None
    except BaseException:
        stream.abort()
        raise
    stream.close()
    reader.verify(what)
    if tick is not None:
        tick(reader.pos)
