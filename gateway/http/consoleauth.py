"""Who is asking the console: HTTP basic against the users file, or a trusted proxy's header.

Pure decisions (`basic_credentials`, `proxy_user`) and the users as the console holds them
(`Users`: the file read again when it changes, a verified password remembered for a while
so that each page does not cost an scrypt). Nothing here answers HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path

from aiohttp import web

from gateway.passwords import read_users, verify_password

__all__ = ["USER", "Users", "basic_credentials", "proxy_user"]

# Who is asking, as the gate found it: for the views and their audit events.
USER = web.RequestKey("user", str)
# How long a password once verified is taken without hashing it again: a page's requests
# and a few clicks after it; a changed users file forgets every one at once.
_REMEMBER_S = 300.0


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(name, password) from an `Authorization: Basic ...` header (RFC 7617), or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, colon, password = decoded.partition(":")
    return (name, password) if colon and name else None


def proxy_user(
    peer: str | None,
    value: str | None,
    trusted: Sequence[IPv4Network | IPv6Network],
) -> str | None:
    """The user the proxy names, only when the peer is one of the trusted proxies."""
    if peer is None or not value or not value.strip():
        return None
    try:
        address = ip_address(peer)
    except ValueError:
        return None
    if not any(address in network for network in trusted):
        return None
    name = value.strip()
    return name if len(name) <= 256 and name.isprintable() else None


class Users:
    """The users file as the console reads it: again whenever its mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._hashes: dict[str, str] = {}
        self._key = os.urandom(32)  # remembered passwords are kept as HMACs under this key
        self._remembered: dict[bytes, float] = {}

    def check(self, name: str, password: str, *, now: float | None = None) -> bool:
        """Whether the name and password are right. Runs scrypt: call it in a thread.

        Raises:
            OSError, ValueError: the users file cannot be read, or is malformed.
        """
        self._reload()
        at = time.monotonic() if now is None else now
        token = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        until = self._remembered.get(token)
        if until is not None and until > at and name in self._hashes:
            return True
        if not verify_password(password, self._hashes.get(name)):
            return False
        self._remembered[token] = at + _REMEMBER_S
        return True

    def _reload(self) -> None:
        try:
            info = self._path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            self._hashes = read_users(self._path)
            self._stamp = stamp
            self._remembered.clear()
