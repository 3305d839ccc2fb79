"""The control center's password: `jaulad --set-password` stores it hashed in $ROOT/web.password
(scrypt, a random salt, mode 0600 from its creation); the clear text is never stored.

    scrypt$N$r$p$SALT$HASH        (SALT and HASH in URL-safe base64)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from jaula.errors import ConfigError, JaulaError

PASSWORD_FILE = "web.password"
N, R, P = 2**14, 8, 1        # scrypt's cost: ~16 MiB and some 50 ms a check
MIN_LENGTH = 8


def password_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / PASSWORD_FILE


def check_new(password: str) -> None:
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"the password has {len(password)} characters: give at least {MIN_LENGTH}")
    if any(ord(c) < 32 for c in password):
        problems.append("the password holds control characters (a newline?): only printable ones are allowed")
    if problems:
        raise ConfigError(problems)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = lambda b: base64.urlsafe_b64encode(b).decode()
    return f"scrypt${N}${R}${P}${b64(salt)}${b64(digest)}"


def verify(password: str, stored: str) -> bool:
    """Whether `password` hashes to `stored` (constant-time comparison of the digests)."""
    try:
        kind, n, r, p, salt, digest = stored.strip().split("$")
        if kind != "scrypt":
            return False
        want = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def set_password(root: str | os.PathLike[str], password: str) -> Path:
    """Store `password`'s hash (replacing an older one atomically; 0600 from its creation)."""
    check_new(password)
    path = password_path(root)
    tmp = path.with_name(f".{PASSWORD_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (hash_password(password) + "\n").encode())
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def stored_hash(root: str | os.PathLike[str]) -> str | None:
    """The stored hash, or None when no password was set; a file others may read is refused."""
    try:
        fd = os.open(password_path(root), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 or st.st_uid != os.geteuid():
            raise JaulaError(f"{str(password_path(root))!r} is readable by others or not ours "
                             f"(mode {st.st_mode & 0o777:o}): set the password again (jaulad --set-password)")
        return os.read(fd, 4096).decode("ascii", "replace").strip() or None
    finally:
        os.close(fd)
