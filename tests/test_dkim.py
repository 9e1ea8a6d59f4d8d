"""DKIM: the key made on first start, the DNS record to publish, and signatures that verify."""

from __future__ import annotations

import asyncio
import base64
import re
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dkim as dkimpy
import dns.resolver
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_public_key,
)

from gateway.cli import main
from gateway.config import default_config_path, load_settings
from gateway.errors import ConfigError
from gateway.notices import dkim
from gateway.notices.context import NoticeContext
from gateway.notices.render import NoticeKind, NoticeRenderer, notice_bytes, sample_message
from tests.dnsserver import DnsServer

NOW = datetime(2017, 9, 12, 17, 0, tzinfo=UTC)


def settings_with(state_dir: Path, **notices: str) -> NoticeContext:
    environ = {"GATEWAY_STORAGE__STATE_DIR": str(state_dir)}
    environ.update({f"GATEWAY_NOTICES__{key.upper()}": value for key, value in notices.items()})
    return NoticeContext.from_settings(load_settings(default_config_path(), environ=environ))


@pytest.fixture(scope="module")
def key() -> dkim.DkimKey:
    return dkim.DkimKey("notices2017", "occ-chicago.example", dkim.generate_private_key())


@pytest.fixture(scope="module")
def notice() -> bytes:
    context = NoticeContext.from_settings(load_settings(default_config_path(), environ={}))
    office = context.offices[0]
    message = NoticeRenderer(context).render(
        NoticeKind.NOT_FILED, office, sample_message(office), now=NOW
    )
    return notice_bytes(message)


def verifies(signed: bytes, key: dkim.DkimKey) -> bool:
    """dkimpy's verifier, with DNS answered from the record the operator would publish."""
    record = dkim.txt_record(key.private_pem).encode("ascii")

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == f"{key.record_name}.".encode() else None

    return bool(dkimpy.verify(signed, dnsfunc=lookup))


def test_generated_key_is_2048_bit_rsa_in_pkcs1_pem(key: dkim.DkimKey) -> None:
    assert key.private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    public_der = base64.b64decode(dkim.txt_record(key.private_pem).split("p=", 1)[1])
    public = load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048


def test_txt_record_and_zone_record_publish_the_public_half(key: dkim.DkimKey) -> None:
    text = dkim.txt_record(key.private_pem)
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*", text)
    line = dkim.zone_record(key)
    assert line.startswith('notices2017._domainkey.occ-chicago.example. IN TXT ( "')
    strings = re.findall(r'"([^"]*)"', line)
    assert all(len(s) <= 255 for s in strings)
    assert len(strings) > 1
    assert "".join(strings) == text


def test_signed_notice_verifies_against_the_published_record(
    key: dkim.DkimKey, notice: bytes
) -> None:
    signed = dkim.sign(notice, key)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert signed.endswith(notice)
    header = signed[: len(signed) - len(notice)].decode("ascii")
    assert "d=occ-chicago.example" in header
    assert "s=notices2017" in header
    assert verifies(signed, key)


def dkimpy_signed(message: bytes, key: dkim.DkimKey) -> bytes:
    """The notice as dkimpy alone signs it: its own canonicalisation and its own RSA."""
    signature: bytes = dkimpy.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode() for name in dkim._SIGNED_HEADERS],
    )
    return signature + message


def _timestamp(signed: bytes) -> bytes:
    found = re.search(rb" t=(\d+);", signed)
    assert found is not None
    return found.group(1)


def test_the_signer_makes_dkimpys_own_signature_byte_for_byte(
    key: dkim.DkimKey, notice: bytes
) -> None:
    signer = dkim.DkimSigner(key)
    # Both stamp t= from the clock: a pair that straddles a second is made again.
    for _ in range(3):
        ours, theirs = signer.sign(notice), dkimpy_signed(notice, key)
        if _timestamp(ours) == _timestamp(theirs):
            break
    assert ours == theirs


async def test_the_signature_verifies_against_the_key_published_in_dns(
    key: dkim.DkimKey, notice: bytes
) -> None:
    signed = dkim.DkimSigner(key).sign(notice)
    zone = {(key.record_name, "TXT"): [dkim.txt_record(key.private_pem)]}
    async with asyncio.timeout(10), DnsServer(zone) as server:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = server.port
        resolver.lifetime = 5.0

        def lookup(name: bytes, timeout: float = 5) -> bytes:
            answer = resolver.resolve(name.decode(), "TXT")
            return b"".join(b"".join(rdata.strings) for rdata in answer)

        # dkimpy's verifier blocks on its lookups; the server answers on this loop.
        assert await asyncio.to_thread(dkimpy.verify, signed, dnsfunc=lookup)
        tampered = signed.replace(b"eservice.ice.gov", b"eservice.evil.gov")
        assert not await asyncio.to_thread(dkimpy.verify, tampered, dnsfunc=lookup)
    assert any(q.name.startswith(key.record_name) for q in server.queries)


def test_a_signer_refuses_a_key_that_is_not_rsa(key: dkim.DkimKey) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    with pytest.raises(ValueError, match="not an RSA key"):
        dkim.DkimSigner(dkim.DkimKey(key.selector, key.domain, pem))


@pytest.mark.parametrize(
    ("change", "description"),
    [
        (lambda m: b"Cc: victim@evil.example\r\n" + m, "an added Cc"),
        (lambda m: b"To: second@evil.example\r\n" + m, "a second To"),
        (lambda m: b"Reply-To: phish@evil.example\r\n" + m, "an added Reply-To"),
        (lambda m: m.replace(b"NOT FILED - Motion", b"FILED - Motion", 1), "a changed Subject"),
        (lambda m: m.replace(b"eservice.ice.gov", b"eservice.evil.gov"), "a changed portal URL"),
    ],
)
def test_tampering_with_recipients_subject_or_body_breaks_the_signature(
    key: dkim.DkimKey, notice: bytes, change: Callable[[bytes], bytes], description: str
) -> None:
    signed = dkim.sign(notice, key)
    signature_end = len(signed) - len(notice)
    tampered = signed[:signature_end] + change(signed[signature_end:])
    assert not verifies(tampered, key), description


def test_signature_survives_relaxed_whitespace_changes(key: dkim.DkimKey, notice: bytes) -> None:
    signed = dkim.sign(notice, key)
    rewrapped = signed.replace(b"Precedence: bulk", b"Precedence:   bulk")
    assert verifies(rewrapped, key)


def test_ensure_key_creates_a_private_key_once_under_the_state_dir(tmp_path: Path) -> None:
    settings = settings_with(tmp_path / "state")
    key, created = dkim.ensure_key(settings)
    assert created
    assert key.path == tmp_path / "state" / "dkim" / "notices2017.occ-chicago.example.pem"
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in key.path.parent.iterdir()] == [key.path.name]  # no temp file left
    again, created_again = dkim.ensure_key(settings)
    assert not created_again
    assert again.private_pem == key.private_pem
    assert (again.selector, again.domain) == ("notices2017", "occ-chicago.example")


def test_ensure_key_uses_the_configured_key_file(key: dkim.DkimKey, tmp_path: Path) -> None:
    path = tmp_path / "operator.pem"
    path.write_bytes(key.private_pem)
    settings = settings_with(tmp_path / "state", dkim_key_file=str(path), dkim_selector="s1")
    loaded, created = dkim.ensure_key(settings)
    assert not created
    assert loaded.private_pem == key.private_pem
    assert loaded.record_name == "s1._domainkey.occ-chicago.example"
    assert not (tmp_path / "state").exists()


def test_pkcs8_keys_from_openssl_3_are_accepted(key: dkim.DkimKey, tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "pkcs8.pem"
    path.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    loaded, _ = dkim.ensure_key(settings_with(tmp_path, dkim_key_file=str(path)))
    assert verifies(dkim.sign(b"From: a@occ-chicago.example\r\n\r\nbody\r\n", loaded), loaded)


def test_unusable_configured_keys_are_config_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    elliptic = tmp_path / "ec.pem"
    elliptic.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    for path, problem in ((garbage, "PEM private key"), (elliptic, "not an RSA key")):
        with pytest.raises(ConfigError, match=problem) as caught:
            dkim.ensure_key(settings_with(tmp_path, dkim_key_file=str(path)))
        assert caught.value.key == "notices.dkim_key_file"


def test_a_state_dir_that_cannot_hold_the_key_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be\n")
    with pytest.raises(ConfigError) as caught:
        dkim.ensure_key(settings_with(blocker))
    assert caught.value.key == "storage.state_dir"


def test_a_configured_key_that_disappears_before_start_is_a_config_error(
    key: dkim.DkimKey, tmp_path: Path
) -> None:
    path = tmp_path / "operator.pem"
    path.write_bytes(key.private_pem)
    settings = settings_with(tmp_path / "state", dkim_key_file=str(path))
    path.unlink()
    with pytest.raises(ConfigError, match="No such file") as caught:
        dkim.ensure_key(settings)
    assert caught.value.key == "notices.dkim_key_file"
    assert not (tmp_path / "state").exists()  # never replaced by a generated key


def test_write_new_key_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "dkim.pem"
    path.write_bytes(b"published already\n")
    with pytest.raises(FileExistsError):
        dkim.write_new_key(path, selector="s", domain="occ-chicago.example")
    assert path.read_bytes() == b"published already\n"
    assert list(tmp_path.iterdir()) == [path]


def test_key_repr_never_shows_the_private_key(key: dkim.DkimKey) -> None:
    assert "PRIVATE" not in repr(key)
    assert "notices2017" in repr(key)


def test_dkim_domain_defaults_to_the_from_domain(tmp_path: Path) -> None:
    assert dkim.dkim_domain(settings_with(tmp_path)) == "occ-chicago.example"
    parent = settings_with(
        tmp_path,
        from_address="no-reply@notices.occ-chicago.example",
        dkim_domain="occ-chicago.example",
    )
    assert dkim.dkim_domain(parent) == "occ-chicago.example"


def test_dkim_keygen_command_creates_the_key_and_prints_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_STORAGE__STATE_DIR", str(tmp_path))
    config = str(default_config_path())
    assert main(["dkim-keygen", "--config", config]) == 0
    first = capsys.readouterr().out
    assert "(created now)" in first
    assert "; Publish this TXT record at notices2017._domainkey.occ-chicago.example:" in first
    record = next(line for line in first.splitlines() if not line.startswith(";"))
    assert record.startswith("notices2017._domainkey.occ-chicago.example. IN TXT (")
    assert main(["dkim-keygen", "--config", config]) == 0
    second = capsys.readouterr().out
    assert "(existing)" in second
    assert record in second


def test_dkim_keygen_out_writes_a_new_key_file_but_never_over_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new.pem"
    config = str(default_config_path())
    assert main(["dkim-keygen", "--config", config, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f'dkim_key_file = "{out}"' in printed
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert main(["dkim-keygen", "--config", config, "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
