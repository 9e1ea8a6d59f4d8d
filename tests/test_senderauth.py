"""Sender authentication: the verdict and DMARC rules as tables; the checks against real DNS.

The integration tests run tests/dnsserver.py on 127.0.0.1 with SPF, DKIM key and DMARC records
for a few test domains. They sign messages with dkimpy, using a key generated here, and give
127.0.0.1 (which every SPF record authorises) or 127.0.0.2 (which none does) as the client.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import dkim
import pytest
from pydantic import ValidationError

from gateway.config import DnsSettings, SenderAuthSettings
from gateway.mail.dmarc import (
    DmarcPolicy,
    evaluate_dmarc,
    header_from_domain,
    is_aligned,
    organizational_domain,
    parse_dmarc_record,
)
from gateway.notices.dkim import generate_private_key, txt_record
from gateway.smtp.senderauth import AuthResults, SenderAuthenticator, Verdict, decide_verdict
from tests.dnsserver import DnsServer, Query, Zone

AUTHORISED = "127.0.0.1"
FORWARDER = "127.0.0.2"  # in no SPF record: a forwarder, or a forger
HELO = "mta.lawfirm.example"
SELECTOR = "sel"

PASS, FAIL, TEMPERROR, NONE = Verdict.PASS, Verdict.FAIL, Verdict.TEMPERROR, Verdict.NONE
LAW, MAILER, BULK = "lawfirm.example", "mailer.example", "bulk.example"
NOTHING = "no spf or aligned dkim pass"
RELAXED = DmarcPolicy("reject", is_strict_dkim=False, is_strict_spf=False)
STRICT = DmarcPolicy("reject", is_strict_dkim=True, is_strict_spf=True)


# ---------------------------------------------------------------------------------------------
# decide_verdict: the policy table


@pytest.mark.parametrize(
    ("spf", "dkim_results", "dmarc", "mail_from_domain", "expected"),
    [
        # 1: the null sender never gets a notice, whatever passed
        ("pass", [("pass", LAW)], "pass", None, (NONE, "null sender")),
        ("temperror", [], "temperror", None, (NONE, "null sender")),
        # 2: a DMARC failure refuses even an SPF-authenticated envelope sender
        ("pass", [], "fail", BULK, (FAIL, "dmarc fail (p=reject)")),
        ("pass", [("pass", BULK)], "fail", BULK, (FAIL, "dmarc fail (p=reject)")),
        # 3: a pass that DMARC could still overturn, but DMARC could not be looked up
        ("pass", [], "temperror", LAW, (TEMPERROR, "dmarc temperror")),
        ("fail", [("pass", LAW)], "temperror", LAW, (TEMPERROR, "dmarc temperror")),
        # 4 and 5: authenticated
        ("pass", [], "none", LAW, (PASS, "spf pass")),
        ("pass", [], "pass", LAW, (PASS, "spf pass")),
        ("pass", [("fail", LAW)], "permerror", LAW, (PASS, "spf pass")),
        ("fail", [("pass", LAW)], "pass", LAW, (PASS, "dkim pass aligned")),
        ("softfail", [("pass", f"mail.{LAW}")], "none", LAW, (PASS, "dkim pass aligned")),
        (
            "none",
            [("fail", MAILER), ("pass", LAW)],
            "none",
            f"news.{LAW}",
            (PASS, "dkim pass aligned"),
        ),
        # 6 and 7: a temporary error where a pass was still possible
        ("temperror", [], "none", LAW, (TEMPERROR, "spf temperror")),
        ("temperror", [("pass", MAILER)], "none", LAW, (TEMPERROR, "spf temperror")),
        ("fail", [("temperror", LAW)], "none", LAW, (TEMPERROR, "dkim temperror")),
        # 8 and 9: nothing authenticates the envelope sender
        ("fail", [], "none", LAW, (FAIL, "spf fail")),
        ("softfail", [], "none", LAW, (FAIL, "spf softfail")),
        ("fail", [("pass", MAILER)], "none", LAW, (FAIL, "spf fail")),
        ("fail", [("temperror", MAILER)], "none", LAW, (FAIL, "spf fail")),
        ("fail", [("fail", LAW)], "none", LAW, (FAIL, "spf fail")),
        ("none", [], "none", LAW, (FAIL, NOTHING)),
        ("neutral", [], "none", LAW, (FAIL, NOTHING)),
        ("permerror", [("pass", "")], "none", LAW, (FAIL, NOTHING)),
        ("none", [], "none", "", (FAIL, NOTHING)),
        # a d= that is a public suffix aligns with nobody
        ("none", [("pass", "example")], "none", LAW, (FAIL, NOTHING)),
    ],
)
def test_the_verdict_follows_the_policy_table(
    spf: str,
    dkim_results: list[tuple[str, str]],
    dmarc: str,
    mail_from_domain: str | None,
    expected: tuple[Verdict, str],
) -> None:
    policy = "reject" if dmarc == "fail" else None
    verdict = decide_verdict(
        spf, dkim_results, dmarc, mail_from_domain=mail_from_domain, dmarc_policy=policy
    )
    assert verdict == expected


def test_a_dmarc_failure_without_a_known_policy_says_so_plainly() -> None:
    verdict = decide_verdict("pass", [], "fail", mail_from_domain="x.example")
    assert verdict == (FAIL, "dmarc fail")


# ---------------------------------------------------------------------------------------------
# DMARC: organizational domains, alignment, records, evaluation


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("lawfirm.example", "lawfirm.example"),
        ("mail.News.LAWFIRM.example.", "lawfirm.example"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("co.uk", None),
        ("example", None),
        ("user.github.io", "user.github.io"),  # the list's private section counts
    ],
)
def test_the_organizational_domain_is_one_label_below_the_public_suffix(
    domain: str, expected: str | None
) -> None:
    assert organizational_domain(domain) == expected


@pytest.mark.parametrize(
    ("first", "second", "is_strict", "expected"),
    [
        ("lawfirm.example", "lawfirm.example", True, True),
        ("LawFirm.example.", "lawfirm.example", True, True),
        ("mail.lawfirm.example", "lawfirm.example", False, True),
        ("a.lawfirm.example", "b.lawfirm.example", False, True),
        ("mail.lawfirm.example", "lawfirm.example", True, False),
        ("lawfirm.example", "mailer.example", False, False),
        ("example.co.uk", "other.co.uk", False, False),
        ("co.uk", "example.co.uk", False, False),
        ("alice.github.io", "bob.github.io", False, False),
        ("", "lawfirm.example", False, False),
        ("", "", False, False),
    ],
)
def test_alignment_is_by_organizational_domain_unless_strict(
    first: str, second: str, is_strict: bool, expected: bool
) -> None:
    assert is_aligned(first, second, is_strict=is_strict) is expected


@pytest.mark.parametrize(
    ("record", "is_subdomain", "expected"),
    [
        ("v=DMARC1; p=reject", False, DmarcPolicy("reject", False, False)),
        ("v=DMARC1;p=Quarantine;adkim=s;aspf=s", False, DmarcPolicy("quarantine", True, True)),
        ("v=DMARC1; p=none; sp=reject", True, DmarcPolicy("reject", False, False)),
        ("v=DMARC1; p=none; sp=reject", False, DmarcPolicy("none", False, False)),
        ("v=DMARC1; p=reject; sp=bogus", True, DmarcPolicy("reject", False, False)),
        ("v = DMARC1 ; p = reject ; adkim = r", False, DmarcPolicy("reject", False, False)),
        # RFC 7489 §6.6.3 step 6: no usable p= but a reporting address acts as p=none
        ("v=DMARC1; rua=mailto:d@x.example", False, DmarcPolicy("none", False, False)),
        ("v=DMARC1; p=bogus; rua=mailto:d@x.example", False, DmarcPolicy("none", False, False)),
        ("v=DMARC1; p=bogus", False, None),
        ("v=DMARC1", False, None),
        ("v=dmarc1; p=reject", False, None),  # the version is case-sensitive
        ("p=reject; v=DMARC1", False, None),
        ("v=spf1 -all", False, None),
    ],
)  # fmt: skip
def test_dmarc_records_are_parsed_as_rfc_7489_says(
    record: str, is_subdomain: bool, expected: DmarcPolicy | None
) -> None:
    assert parse_dmarc_record(record, is_subdomain=is_subdomain) == expected


@pytest.mark.parametrize(
    ("policy", "spf", "spf_domain", "dkim_results", "expected"),
    [
        (RELAXED, "pass", "lawfirm.example", [], "pass"),
        (RELAXED, "pass", "bounces.lawfirm.example", [], "pass"),
        (STRICT, "pass", "bounces.lawfirm.example", [], "fail"),
        (RELAXED, "fail", "lawfirm.example", [("pass", "lawfirm.example")], "pass"),
        (STRICT, "fail", "lawfirm.example", [("pass", "lawfirm.example")], "pass"),
        (STRICT, "fail", "lawfirm.example", [("pass", "mail.lawfirm.example")], "fail"),
        (RELAXED, "pass", "bulk.example", [("pass", "bulk.example")], "fail"),
        (RELAXED, "softfail", "lawfirm.example", [("fail", "lawfirm.example")], "fail"),
        (RELAXED, "temperror", "lawfirm.example", [], "temperror"),
        (RELAXED, "fail", "lawfirm.example", [("temperror", "lawfirm.example")], "temperror"),
        (RELAXED, "temperror", "bulk.example", [("temperror", "bulk.example")], "fail"),
        (RELAXED, "none", "", [], "fail"),
    ],
)
def test_dmarc_passes_only_with_an_aligned_pass(
    policy: DmarcPolicy,
    spf: str,
    spf_domain: str,
    dkim_results: list[tuple[str, str]],
    expected: str,
) -> None:
    result = evaluate_dmarc(
        policy, from_domain="lawfirm.example", spf=spf, spf_domain=spf_domain, dkim=dkim_results
    )
    assert result == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Paralegal <Paralegal@LawFirm.example>", "lawfirm.example"),
        ("a@lawfirm.example, b@LAWFIRM.example", "lawfirm.example"),
        ("a@lawfirm.example, b@mailer.example", None),
        ("a@bücher.example", "xn--bcher-kva.example"),
        ("undisclosed-recipients:;", None),
        ("no address here", None),
        ("a@bad_domain.example", None),
        ("", None),
        (None, None),
    ],
)
def test_the_from_domain_is_the_one_domain_the_header_names(
    value: str | None, expected: str | None
) -> None:
    assert header_from_domain(value) == expected


# ---------------------------------------------------------------------------------------------
# Authentication-Results


def results(**changes: object) -> AuthResults:
    values: dict[str, object] = {
        "spf": "pass",
        "spf_domain": "lawfirm.example",
        "spf_identity": "mailfrom",
        "dkim": (("pass", "lawfirm.example"),),
        "dmarc": "pass",
        "dmarc_domain": "lawfirm.example",
        "dmarc_policy": "reject",
        "verdict": PASS,
        "reason": "spf pass",
    }
    values.update(changes)
    return AuthResults(**values)  # type: ignore[arg-type]


def test_the_header_value_follows_rfc_8601() -> None:
    assert results().header_value("mx.test.example") == (
        "mx.test.example; spf=pass smtp.mailfrom=lawfirm.example; "
        "dkim=pass header.d=lawfirm.example; dmarc=pass (p=reject) header.from=lawfirm.example"
    )


def test_the_header_value_names_helo_and_every_signature() -> None:
    value = results(
        spf_identity="helo",
        spf_domain="mta.lawfirm.example",
        dkim=(("fail", "lawfirm.example"), ("pass", "mailer.example")),
        dmarc="none",
        dmarc_domain="",
        dmarc_policy=None,
    ).header_value("MX.Test.Example")
    assert value == (
        "mx.test.example; spf=pass smtp.helo=mta.lawfirm.example; "
        "dkim=fail header.d=lawfirm.example; dkim=pass header.d=mailer.example; dmarc=none"
    )


def test_the_header_value_says_dkim_none_without_signatures() -> None:
    value = results(dkim=(), dmarc="fail").header_value("mx.test.example")
    assert "; dkim=none; dmarc=fail (p=reject) header.from=" in value


def test_hostile_text_never_reaches_the_header_value() -> None:
    hostile = "evil.example\r\nX-Injected: yes; dkim=pass"
    value = results(
        spf="pass\r\nBcc: x",
        spf_domain=hostile,
        dkim=(("pass (forged)", hostile), ("pass", "ok.example (comment)")),
        dmarc_domain="a b.example",
        dmarc_policy="reject)\r\n",
    ).header_value("mx.test.example")
    assert value == ("mx.test.example; spf=permerror; dkim=permerror; dkim=pass; dmarc=pass")


@pytest.mark.parametrize("authserv_id", ["", "mx test", "mx.example;", "mx.example\r\nX: y"])
def test_an_authserv_id_that_is_not_a_domain_is_refused(authserv_id: str) -> None:
    with pytest.raises(ValueError, match="not a domain name"):
        results().header_value(authserv_id)


def test_settings_have_defaults_and_reject_nonsense() -> None:
    settings = SenderAuthSettings()
    assert (settings.timeout, settings.on_temperror, settings.authserv_id) == (
        20.0,
        "tempfail",
        None,
    )
    for bad in ({"timeout": 0}, {"on_temperror": "drop"}, {"authserv_id": "mx example"}):
        with pytest.raises(ValidationError):
            SenderAuthSettings.model_validate(bad)


# ---------------------------------------------------------------------------------------------
# Checks against a real DNS server on loopback


@pytest.fixture(scope="module")
def private_key() -> bytes:
    return generate_private_key()


def make_zone(private_key: bytes) -> Zone:
    key = txt_record(private_key)
    only_authorised = "v=spf1 ip4:127.0.0.1 -all"
    return {
        ("lawfirm.example", "TXT"): ["google-site-verification=abc", only_authorised],
        (f"{SELECTOR}._domainkey.lawfirm.example", "TXT"): [key],
        ("_dmarc.lawfirm.example", "TXT"): ["v=DMARC1; p=reject"],
        (HELO, "TXT"): [only_authorised],
        ("nodmarc.example", "TXT"): [only_authorised],
        ("softfail.example", "TXT"): ["v=spf1 ip4:127.0.0.1 ~all"],
        ("mailer.example", "TXT"): [only_authorised],
        (f"{SELECTOR}._domainkey.mailer.example", "TXT"): [key],
        ("bulk.example", "TXT"): ["v=spf1 include:_spf.bulk.example -all"],
        ("_spf.bulk.example", "TXT"): ["v=spf1 mx:bulk.example -all"],
        ("bulk.example", "MX"): [(10, "out.bulk.example")],
        ("out.bulk.example", "A"): ["127.0.0.1"],
        ("void.example", "TXT"): ["v=spf1 a:a.void.example a:b.void.example a:a.void.example ~all"],
        ("slow.example", "TXT"): "timeout",
        ("slowkey._domainkey.lawfirm.example", "TXT"): "timeout",
        ("flaky.example", "TXT"): [only_authorised],
        ("_dmarc.flaky.example", "TXT"): "servfail",
        ("twice.example", "TXT"): [only_authorised],
        ("broken.example", "TXT"): [only_authorised],
        ("_dmarc.broken.example", "TXT"): ["v=DMARC1; p=bogus"],
        ("badkey._domainkey.lawfirm.example", "TXT"): ["v=DKIM1; k=rsa; p=not-a-key!"],
        ("_dmarc.twice.example", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    }  # fmt: skip


@pytest.fixture
async def dns_server(private_key: bytes) -> AsyncIterator[DnsServer]:
    async with asyncio.timeout(5), DnsServer(make_zone(private_key)) as server:
        yield server


def dns_settings(server: DnsServer, *, timeout: float = 2.0) -> DnsSettings:
    return DnsSettings.model_validate(
        {"nameservers": [f"127.0.0.1:{server.port}"], "timeout": timeout}
    )


@pytest.fixture
def authenticator(dns_server: DnsServer) -> SenderAuthenticator:
    return SenderAuthenticator(dns_settings(dns_server), timeout=5.0)


def message(from_address: str, body: str = "Please file the attached motion.\r\n") -> bytes:
    head = (
        f"From: Paralegal <{from_address}>\r\n"
        "To: occ-chicago-filings@occ-chicago.example\r\n"
        "Subject: Motion to continue\r\n"
        "Date: Wed, 13 Sep 2017 10:00:00 -0500\r\n"
        "Message-ID: <1@lawfirm.example>\r\n"
    )
    return f"{head}\r\n{body}".encode()


def signed(raw: bytes, private_key: bytes, domain: str, selector: str = SELECTOR) -> bytes:
    signature: bytes = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature + raw


def from_header(raw: bytes) -> str | None:
    found = re.search(rb"(?m)^From: (.*)\r$", raw)
    return None if found is None else found[1].decode()


async def check(
    authenticator: SenderAuthenticator,
    *,
    mail_from: str,
    raw: bytes,
    client_ip: str = AUTHORISED,
    helo: str | None = HELO,
) -> AuthResults:
    async with asyncio.timeout(10):
        return await authenticator.check(
            client_ip=client_ip,
            helo=helo,
            mail_from=mail_from,
            raw=raw,
            from_header_domain=header_from_domain(from_header(raw)),
        )


async def test_spf_pass_from_an_authorised_address_authenticates(
    authenticator: SenderAuthenticator, dns_server: DnsServer
) -> None:
    found = await check(
        authenticator,
        mail_from="paralegal@lawfirm.example",
        raw=message("paralegal@lawfirm.example"),
    )
    assert found == AuthResults(
        spf="pass",
        spf_domain="lawfirm.example",
        spf_identity="mailfrom",
        dkim=(),
        dmarc="pass",
        dmarc_domain="lawfirm.example",
        dmarc_policy="reject",
        verdict=PASS,
        reason="spf pass",
    )
    # Every question went to the configured server, not to the system's resolver.
    assert Query("lawfirm.example", "TXT", "udp") in dns_server.queries
    assert Query("_dmarc.lawfirm.example", "TXT", "udp") in dns_server.queries


@pytest.mark.parametrize(
    ("domain", "dmarc", "reason"),
    [
        ("lawfirm.example", "fail", "dmarc fail (p=reject)"),
        ("nodmarc.example", "none", "spf fail"),
    ],
)
async def test_a_forged_sender_from_an_spf_fail_domain_is_not_authenticated(
    authenticator: SenderAuthenticator, domain: str, dmarc: str, reason: str
) -> None:
    address = f"paralegal@{domain}"
    found = await check(authenticator, mail_from=address, raw=message(address), client_ip=FORWARDER)
    assert (found.spf, found.dmarc, found.verdict, found.reason) == ("fail", dmarc, FAIL, reason)


async def test_softfail_does_not_authenticate(authenticator: SenderAuthenticator) -> None:
    address = "paralegal@softfail.example"
    found = await check(authenticator, mail_from=address, raw=message(address), client_ip=FORWARDER)
    assert (found.spf, found.verdict, found.reason) == ("softfail", FAIL, "spf softfail")


async def test_a_dkim_signature_over_an_altered_body_fails(
    authenticator: SenderAuthenticator, private_key: bytes
) -> None:
    address = "paralegal@lawfirm.example"
    raw = signed(message(address), private_key, "lawfirm.example")
    altered = raw.replace(b"attached motion", b"attached invoice")
    found = await check(authenticator, mail_from=address, raw=altered, client_ip=FORWARDER)
    assert found.dkim == (("fail", "lawfirm.example"),)
    assert (found.spf, found.dmarc, found.verdict) == ("fail", "fail", FAIL)


async def test_forwarded_mail_with_an_aligned_dkim_pass_authenticates_despite_spf_fail(
    authenticator: SenderAuthenticator, private_key: bytes
) -> None:
    address = "paralegal@lawfirm.example"
    raw = signed(message(address), private_key, "lawfirm.example")
    found = await check(authenticator, mail_from=address, raw=raw, client_ip=FORWARDER)
    assert found.spf == "fail"
    assert found.dkim == (("pass", "lawfirm.example"),)
    assert (found.dmarc, found.verdict, found.reason) == ("pass", PASS, "dkim pass aligned")
    assert found.header_value("mx.test.example") == (
        "mx.test.example; spf=fail smtp.mailfrom=lawfirm.example; "
        "dkim=pass header.d=lawfirm.example; dmarc=pass (p=reject) header.from=lawfirm.example"
    )


async def test_a_dkim_pass_for_an_unaligned_domain_does_not_authenticate(
    authenticator: SenderAuthenticator, private_key: bytes
) -> None:
    address = "paralegal@nodmarc.example"
    raw = signed(message(address), private_key, "mailer.example")
    found = await check(authenticator, mail_from=address, raw=raw, client_ip=FORWARDER)
    assert found.dkim == (("pass", "mailer.example"),)
    assert (found.spf, found.dmarc, found.verdict, found.reason) == (
        "fail",
        "none",
        FAIL,
        "spf fail",
    )


async def test_dmarc_reject_with_nothing_aligned_to_the_from_domain_fails(
    authenticator: SenderAuthenticator, private_key: bytes
) -> None:
    # The envelope sender passes SPF, but the From domain is one with p=reject that neither
    # SPF nor the (mailer.example) signature is aligned with.
    raw = signed(message("ceo@lawfirm.example"), private_key, "mailer.example")
    found = await check(authenticator, mail_from="bounce@bulk.example", raw=raw)
    assert (found.spf, found.spf_domain) == ("pass", "bulk.example")
    assert (found.dmarc, found.dmarc_policy) == ("fail", "reject")
    assert (found.verdict, found.reason) == (FAIL, "dmarc fail (p=reject)")


async def test_a_subdomain_from_is_judged_by_its_organizational_domain_policy(
    authenticator: SenderAuthenticator, dns_server: DnsServer
) -> None:
    found = await check(
        authenticator,
        mail_from="paralegal@lawfirm.example",
        raw=message("notices@news.lawfirm.example"),
    )
    assert (found.dmarc, found.dmarc_domain, found.dmarc_policy) == (
        "pass",
        "news.lawfirm.example",
        "reject",
    )
    asked = [q.name for q in dns_server.queries if q.name.startswith("_dmarc.")]
    assert asked == ["_dmarc.news.lawfirm.example", "_dmarc.lawfirm.example"]


async def test_an_unusable_dmarc_record_is_a_permanent_error_that_applies_no_policy(
    authenticator: SenderAuthenticator,
) -> None:
    address = "paralegal@broken.example"
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert (found.dmarc, found.dmarc_policy, found.verdict) == ("permerror", None, PASS)


async def test_two_dmarc_records_mean_no_policy(authenticator: SenderAuthenticator) -> None:
    address = "paralegal@twice.example"
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert (found.dmarc, found.dmarc_policy, found.verdict) == ("none", None, PASS)


async def test_spf_follows_include_and_mx_through_the_configured_server(
    authenticator: SenderAuthenticator, dns_server: DnsServer
) -> None:
    address = "bounce@bulk.example"
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert (found.spf, found.verdict) == ("pass", PASS)
    asked = {(q.name, q.rtype) for q in dns_server.queries}
    assert {
        ("_spf.bulk.example", "TXT"),
        ("bulk.example", "MX"),
        ("out.bulk.example", "A"),
    } <= asked


async def test_more_than_two_void_lookups_are_a_permanent_error(
    authenticator: SenderAuthenticator, dns_server: DnsServer
) -> None:
    # The record names a.void.example twice: the repeat is answered from the query's cache
    # (one question on the wire) and still counts as a void lookup (RFC 7208 §4.6.4).
    address = "paralegal@void.example"
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert (found.spf, found.verdict) == ("permerror", FAIL)
    asked = [q.name for q in dns_server.queries if q.rtype == "A"]
    assert sorted(asked) == ["a.void.example", "b.void.example"]


async def test_a_domain_without_spf_is_none(authenticator: SenderAuthenticator) -> None:
    address = "paralegal@nowhere.example"
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert (found.spf, found.dmarc, found.verdict) == ("none", "none", FAIL)


async def test_a_dns_timeout_is_a_temporary_error(dns_server: DnsServer) -> None:
    authenticator = SenderAuthenticator(dns_settings(dns_server, timeout=0.3), timeout=5.0)
    address = "paralegal@slow.example"
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert (found.spf, found.verdict, found.reason) == ("temperror", TEMPERROR, "spf temperror")


async def test_the_check_budget_bounds_every_lookup(dns_server: DnsServer) -> None:
    authenticator = SenderAuthenticator(dns_settings(dns_server, timeout=30.0), timeout=0.5)
    address = "paralegal@slow.example"
    started = time.monotonic()
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert time.monotonic() - started < 2.0
    assert (found.spf, found.verdict) == ("temperror", TEMPERROR)


async def test_a_dkim_key_timeout_is_a_temporary_error(
    dns_server: DnsServer, private_key: bytes
) -> None:
    authenticator = SenderAuthenticator(dns_settings(dns_server, timeout=0.3), timeout=5.0)
    address = "paralegal@lawfirm.example"
    raw = signed(message(address), private_key, "lawfirm.example", selector="slowkey")
    found = await check(authenticator, mail_from=address, raw=raw, client_ip=FORWARDER)
    assert found.dkim == (("temperror", "lawfirm.example"),)
    # DMARC cannot fail a message whose aligned signature might still have passed.
    assert (found.dmarc, found.verdict, found.reason) == ("temperror", TEMPERROR, "dkim temperror")


async def test_a_dmarc_lookup_failure_is_a_temporary_error(
    authenticator: SenderAuthenticator,
) -> None:
    address = "paralegal@flaky.example"
    found = await check(authenticator, mail_from=address, raw=message(address))
    assert (found.spf, found.dmarc) == ("pass", "temperror")
    assert (found.verdict, found.reason) == (TEMPERROR, "dmarc temperror")


async def test_a_missing_dkim_key_is_a_permanent_error(
    authenticator: SenderAuthenticator, private_key: bytes
) -> None:
    address = "paralegal@lawfirm.example"
    raw = signed(message(address), private_key, "lawfirm.example", selector="gone")
    found = await check(authenticator, mail_from=address, raw=raw)
    assert found.dkim == (("permerror", "lawfirm.example"),)
    assert (found.spf, found.verdict) == ("pass", PASS)


async def test_an_unusable_dkim_key_is_a_permanent_error(
    authenticator: SenderAuthenticator, private_key: bytes
) -> None:
    address = "paralegal@lawfirm.example"
    raw = signed(message(address), private_key, "lawfirm.example", selector="badkey")
    found = await check(authenticator, mail_from=address, raw=raw, client_ip=FORWARDER)
    assert found.dkim == (("permerror", "lawfirm.example"),)
    assert found.verdict == FAIL


async def test_every_signature_is_verified_topmost_first(
    authenticator: SenderAuthenticator, private_key: bytes
) -> None:
    address = "paralegal@lawfirm.example"
    raw = signed(
        signed(message(address), private_key, "lawfirm.example"), private_key, "mailer.example"
    )
    found = await check(authenticator, mail_from=address, raw=raw, client_ip=FORWARDER)
    assert found.dkim == (("pass", "mailer.example"), ("pass", "lawfirm.example"))
    assert found.verdict == PASS


async def test_a_malformed_signature_does_not_pass(
    authenticator: SenderAuthenticator,
) -> None:
    address = "paralegal@lawfirm.example"
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=lawfirm.example; s=sel; b=!!; bh=??\r\n" + message(
        address
    )
    found = await check(authenticator, mail_from=address, raw=raw, client_ip=FORWARDER)
    # dkimpy raises the same ValidationError for bad tags as for a body hash mismatch.
    assert found.dkim == (("fail", "lawfirm.example"),)
    assert found.verdict == FAIL


async def test_the_null_sender_is_checked_by_helo_and_never_authenticated(
    authenticator: SenderAuthenticator,
) -> None:
    found = await check(authenticator, mail_from="", raw=message("mailer-daemon@lawfirm.example"))
    assert (found.spf, found.spf_domain, found.spf_identity) == ("pass", HELO, "helo")
    assert (found.verdict, found.reason) == (NONE, "null sender")
    assert found.header_value("mx.test.example").startswith(
        f"mx.test.example; spf=pass smtp.helo={HELO}; dkim=none; "
    )


@pytest.mark.parametrize("helo", [None, "[127.0.0.1]", "localhost"])
async def test_a_null_sender_without_a_usable_helo_gets_spf_none(
    authenticator: SenderAuthenticator, helo: str | None
) -> None:
    found = await check(authenticator, mail_from="", raw=message("x@lawfirm.example"), helo=helo)
    assert (found.spf, found.spf_domain, found.verdict) == ("none", "", NONE)


@pytest.mark.parametrize("mail_from", ["nobody", "x@[127.0.0.1]", "x@bad_domain.example"])
async def test_an_unusable_sender_domain_is_never_authenticated(
    authenticator: SenderAuthenticator, dns_server: DnsServer, mail_from: str
) -> None:
    found = await check(authenticator, mail_from=mail_from, raw=message("x@nodmarc.example"))
    assert (found.spf, found.spf_domain, found.verdict) == ("none", "", FAIL)
    assert not any(q.rtype == "TXT" and "_dmarc" not in q.name for q in dns_server.queries)


async def test_an_idn_sender_is_checked_by_its_a_label(
    authenticator: SenderAuthenticator, dns_server: DnsServer
) -> None:
    found = await check(
        authenticator, mail_from="anwalt@bücher.example", raw=message("a@b.example")
    )
    assert (found.spf_domain, found.spf) == ("xn--bcher-kva.example", "none")
    assert any(q.name == "xn--bcher-kva.example" for q in dns_server.queries)


async def test_a_message_whose_header_does_not_parse_is_no_reason_to_raise(
    authenticator: SenderAuthenticator,
) -> None:
    address = "paralegal@lawfirm.example"
    raw = b"DKIM-Signature: v=1\r\n\x01bad header line\r\n\r\nbody\r\n"
    found = await check(authenticator, mail_from=address, raw=raw)
    assert found.dkim == (("permerror", ""),)
    assert (found.spf, found.verdict) == ("pass", PASS)
