"""DKIM for notices: the operator's RSA key, the DNS TXT record to publish, and signing.

Gmail and Outlook file unsigned automatic mail as spam; a DKIM signature whose d= matches the
From domain (DMARC alignment) gets the notice to the attorney's inbox. The key is read or
created once, at startup, by `ensure_key()`; `sign()` then needs no I/O (dkimpy reads only the
clock, for the t= tag). This module never sends mail, logs, or looks up DNS.
"""

from __future__ import annotations

import base64
import errno
from dataclasses import dataclass, field
from pathlib import Path

import dkim as dkimpy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from gateway.durable import write_durably
from gateway.errors import ConfigError
from gateway.notices.context import NoticeContext

__all__ = [
    "DkimKey",
    "DkimSigner",
    "default_key_path",
    "dkim_domain",
    "ensure_key",
    "generate_private_key",
    "load_key",
    "sign",
    "txt_record",
    "write_new_key",
    "zone_record",
]

KEY_BITS = 2048  # RFC 8301 §3.2: at least 1024, and 2048 is what receivers now expect
# Signed headers. A name listed once more than it occurs, or listed though absent, is signed
# as "no further instance" (RFC 6376 §5.4.2): nobody can add a second From, To or Subject, or
# a Cc or Reply-To, without breaking the signature.
_SIGNED_HEADERS = (
    "from",
    "from",
    "to",
    "to",
    "cc",
    "reply-to",
    "subject",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-auto-response-suppress",
    "precedence",
    "mime-version",
    "content-type",
    "content-language",
)


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A signing key with the selector and domain it is published under."""

    selector: str
    domain: str
    private_pem: bytes = field(repr=False)  # a secret: never in a repr, a log or an error
    path: Path | None = None

    @property
    def record_name(self) -> str:
        """The DNS name of the TXT record: <selector>._domainkey.<domain>."""
        return f"{self.selector}._domainkey.{self.domain}"


def dkim_domain(context: NoticeContext) -> str:
    """The d= domain: [notices].dkim_domain, else the domain of the notices' From address."""
    return context.notices.dkim_domain or context.from_address.rpartition("@")[2]


def generate_private_key() -> bytes:
    """A new 2048-bit RSA private key as PKCS#1 PEM (what dkimpy and OpenDKIM both read)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())


def txt_record(private_pem: bytes) -> str:
    """The TXT record's text for the key's public half: 'v=DKIM1; k=rsa; p=...'.

    Raises:
        ValueError: the PEM holds no unencrypted RSA private key.
    """
    try:
        key = load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA key (dkimpy signs rsa-sha256)")
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"


def zone_record(key: DkimKey) -> str:
    """The record as a zone-file line, its text split into the 255-byte strings DNS allows."""
    text = txt_record(key.private_pem)
    strings = " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
    return f"{key.record_name}. IN TXT ( {strings} )"


class DkimSigner:
    """Signs notices with one key: dkimpy canonicalises and hashes, OpenSSL does the RSA.

    dkimpy's own RSA is big-integer arithmetic in Python, some 9 times slower than OpenSSL's
    (through `cryptography`) and the bound on how fast notices go out. PKCS#1 v1.5 signatures
    are deterministic, so the signature is the same, byte for byte, as dkimpy's own.
    """

    def __init__(self, key: DkimKey) -> None:
        private = load_pem_private_key(key.private_pem, password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError("not an RSA key (dkimpy signs rsa-sha256)")
        self._key = key
        self._private = private
        self._selector = key.selector.encode("ascii")
        self._domain = key.domain.encode("ascii")

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header prepended (rsa-sha256, relaxed/relaxed)."""
        signer = _OpensslDkim(message, private=self._private)
        signature: bytes = signer.sign(
            self._selector,
            self._domain,
            self._key.private_pem,
            # Relaxed body canonicalisation survives the re-wrapping some relays do.
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=_SIGNED_HEADER_BYTES,
        )
        return signature + message


_SIGNED_HEADER_BYTES = [name.encode("ascii") for name in _SIGNED_HEADERS]


# dkimpy ships no types, so its class is Any to mypy.
class _OpensslDkim(dkimpy.DKIM):  # type: ignore[misc]
    """dkimpy's signer with the one RSA step replaced; everything else is dkimpy's.

    dkimpy offers no way to plug a signer in, so this overrides DKIM.gen_header (dkimpy 1.1),
    repeating its rsa-sha256 path with dkimpy's own folding and header hashing.
    """

    def __init__(self, message: bytes, *, private: rsa.RSAPrivateKey) -> None:
        super().__init__(message, signature_algorithm=b"rsa-sha256")
        self._private = private

    def gen_header(
        self,
        fields: list[tuple[bytes, bytes]],
        include_headers: tuple[bytes, ...],
        canon_policy: object,
        header_name: bytes,
        _pk: object,
        standardize: bool = False,
    ) -> bytes:
        assert not standardize, "only ARC seals use the standardized form"
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkimpy.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkimpy.RE_BTAG.sub(b"\\1", header_value)
        hasher = dkimpy.HashThrough(self.hasher(), self.debug_content)
        headers = canon_policy.canonicalize_headers(self.headers)  # type: ignore[attr-defined]
        self.signed_headers = dkimpy.hash_headers(
            hasher,
            canon_policy,
            headers,
            include_headers,
            (header_name, b" " + header_value),
            dict(fields),
        )
        digest = hasher.digest()
        signature = self._private.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        index = next(i for i, (name, _) in enumerate(fields) if name == b"b")
        fields[index] = (b"b", base64.b64encode(signature))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        folded: bytes = dkimpy.fold(header_value, namelen=len(header_name), linesep=self.linesep)
        return folded


def sign(message: bytes, key: DkimKey) -> bytes:
    """`message` with a DKIM-Signature header prepended (rsa-sha256, relaxed/relaxed).

    For one message; a signer made once (DkimSigner) saves loading the key each time.
    """
    return DkimSigner(key).sign(message)


def default_key_path(context: NoticeContext) -> Path:
    """Where a generated key lives: <state_dir>/dkim/<selector>.<domain>.pem."""
    name = f"{context.notices.dkim_selector}.{dkim_domain(context)}.pem"
    return context.state_dir / "dkim" / name


def load_key(path: Path, *, selector: str, domain: str) -> DkimKey:
    """Read a PEM RSA private key.

    Raises:
        OSError: the file cannot be read.
        ValueError: it holds no usable RSA key.
    """
    pem = path.read_bytes()
    txt_record(pem)  # fail now, at startup, rather than on the first notice
    return DkimKey(selector=selector, domain=domain, private_pem=pem, path=path)


def write_new_key(path: Path, *, selector: str, domain: str) -> DkimKey:
    """Generate a key and store it at `path` (mode 0600), never replacing an existing file.

    Raises:
        FileExistsError: `path` already exists.
        OSError: the directory or file cannot be written.
    """
    pem = generate_private_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where the directory should be: not "key exists"
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path.parent)) from exc
    # Never overwritten: a key that DNS may already publish must not change under it.
    write_durably(path, pem, mode=0o600, overwrite=False)
    return DkimKey(selector=selector, domain=domain, private_pem=pem, path=path)


def ensure_key(context: NoticeContext) -> tuple[DkimKey, bool]:
    """The signing key, created under the state directory when none is configured.

    Returns the key and whether it was created just now; when it was, the caller logs its
    zone_record() so that the operator can publish it.

    Raises:
        ConfigError: the configured key cannot be read or used, or a new one cannot be stored.
    """
    selector, domain = context.notices.dkim_selector, dkim_domain(context)
    configured = context.notices.dkim_key_file
    path = configured or default_key_path(context)
    key_name = "notices.dkim_key_file" if configured else "storage.state_dir"
    try:
        try:
            return load_key(path, selector=selector, domain=domain), False
        except FileNotFoundError:
            if configured is not None:
                raise
        try:
            return write_new_key(path, selector=selector, domain=domain), True
        except FileExistsError:  # another process made it first: use that one
            return load_key(path, selector=selector, domain=domain), False
    except OSError as exc:
        raise ConfigError(key_name, f"DKIM key {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(key_name, f"DKIM key {path}: {exc}") from exc
