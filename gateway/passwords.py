"""The console's users file: names and scrypt password hashes, one `name:hash` line each.

hashlib.scrypt (RFC 7914, in the standard library through OpenSSL) rather than argon2-cffi:
memory-hard and slow on purpose like Argon2, with no new dependency to keep. Each hash
carries its own parameters and salt, so stronger parameters later leave old lines readable.
Checks compare in constant time, and a name not in the file costs a hash too, so the time
taken does not tell which names exist. Reading and writing the file is here (mode 0600,
written whole and durably); asking for passwords is the command's (ops/consoleusers.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path

from gateway.durable import write_durably

__all__ = [
    "USER_NAME",
    "hash_password",
    "parse_users",
    "read_users",
    "render_users",
    "verify_password",
    "write_users",
]

# A name as the audit log and the basic-auth header carry it: no colon, no spaces.
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# n = 2^15, r = 8: 32 MiB and some 50 ms per check on a server core (OWASP's scrypt minimum
# is 2^17 with r = 8, p = 1 at 128 MiB; 2^15 keeps a burst of wrong guesses from taking the
# host's memory while still costing a guesser what a slow hash should).
_N, _R, _P = 2**15, 8, 1
_MAX_MEM = 64 * 1024 * 1024
_SALT_BYTES = 16
_PREFIX = "scrypt"
# Checked against when the name is unknown, so that an unknown name costs a hash too.
_DECOY = (
    f"{_PREFIX}${_N}${_R}${_P}$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` for `password`, with a fresh random salt unless given."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAX_MEM, dklen=32
    )
    return f"{_PREFIX}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches the stored hash; None (no such user) costs a hash too."""
    encoded = _DECOY if stored is None else stored
    try:
        prefix, n, r, p, salt, digest = encoded.split("$")
        expected = _unb64(digest)
        found = hashlib.scrypt(
            password.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAX_MEM,
            dklen=len(expected),
        )
    except ValueError:
        return False  # a line not written by hash_password: nobody can log in with it
    return hmac.compare_digest(found, expected) and prefix == _PREFIX and stored is not None


def parse_users(text: str) -> dict[str, str]:
    """The `name:hash` lines of a users file; blank lines and # comments are skipped.

    Raises:
        ValueError: a line is not `name:hash`, with its line number.
    """
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, encoded = line.partition(":")
        if not colon or not USER_NAME.fullmatch(name) or not encoded.startswith(_PREFIX + "$"):
            raise ValueError(f"line {number} is not name:scrypt$...")
        users[name] = encoded
    return users


def render_users(users: Mapping[str, str]) -> str:
    lines = ["# eservice-gateway console users: gateway console adduser|deluser NAME"]
    lines += [f"{name}:{encoded}" for name, encoded in sorted(users.items())]
    return "\n".join(lines) + "\n"


def read_users(path: Path) -> dict[str, str]:
    """The users in `path`; {} when it does not exist yet.

    Raises:
        OSError: it cannot be read.
        ValueError: a line is malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return parse_users(text)


def write_users(path: Path, users: Mapping[str, str]) -> None:
    """Write the whole file, mode 0600 (the hashes are nobody else's to try offline).

    Raises:
        OSError: it cannot be written.
    """
    write_durably(path, render_users(users).encode("utf-8"), mode=0o600)
    os.chmod(path, 0o600)  # an existing file keeps its mode through os.replace otherwise
