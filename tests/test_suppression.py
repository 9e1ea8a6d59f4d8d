"""RFC 3834 suppression: who never gets a notice, decided by pure code from plain values."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest

from gateway.config import default_config_path, load_settings
from gateway.notices.context import NoticeContext
from gateway.notices.render import suppression_reason
from gateway.policy.decision import is_replyable_address, notice_suppression

SAMPLES = Path(__file__).parent / "samples"
OWN_DOMAINS = frozenset({"occ-chicago.example", "mx.occ-chicago.example"})
OWN_ADDRESSES = frozenset({"no-reply@notices.example"})
ATTORNEY = "ana.ruiz@ruizlaw.example"


def reason(sender: str, headers: dict[str, str] | None = None) -> str | None:
    return notice_suppression(
        sender, headers or {}, own_domains=OWN_DOMAINS, own_addresses=OWN_ADDRESSES
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"auto-submitted": "no"}, None),
        ({"auto-submitted": " No (sent by a person) "}, None),
        ({"auto-submitted": "no; comment=x"}, None),
        ({"auto-submitted": "auto-replied"}, "auto-submitted"),
        ({"auto-submitted": "auto-generated"}, "auto-submitted"),
        ({"auto-submitted": "auto-notified; owner-email=x@y.example"}, "auto-submitted"),
        ({"auto-submitted": "AUTO-REPLIED"}, "auto-submitted"),
        ({"auto-submitted": "x-private-extension"}, "auto-submitted"),
        ({"auto-submitted": ""}, "auto-submitted"),
        ({"auto-submitted": "(no) yes"}, "auto-submitted"),
        ({"x-autoreply": "yes"}, "auto-submitted"),
        ({"x-autorespond": "vacation"}, "auto-submitted"),
        ({"list-id": "<immigration.lists.bar.example>"}, "mailing-list"),
        ({"list-unsubscribe": "<mailto:leave@lists.example>"}, "mailing-list"),
        ({"list-post": "<mailto:list@lists.example>"}, "mailing-list"),
        ({"list-help": "<mailto:help@lists.example>"}, "mailing-list"),
        ({"list-subscribe": "<mailto:join@lists.example>"}, "mailing-list"),
        ({"list-owner": "<mailto:owner@lists.example>"}, "mailing-list"),
        ({"list-archive": "<https://lists.example/archive>"}, "mailing-list"),
        ({"precedence": "bulk"}, "bulk-precedence"),
        ({"precedence": "list"}, "bulk-precedence"),
        ({"precedence": "junk"}, "bulk-precedence"),
        ({"precedence": " Bulk (newsletter)"}, "bulk-precedence"),
        ({"precedence": "first-class"}, None),
        ({"precedence": "urgent"}, None),
        ({"subject": "Auto: out of office"}, None),  # subjects decide nothing; headers do
    ],
)
def test_headers_that_mark_machines_and_lists_suppress_the_notice(
    headers: dict[str, str], expected: str | None
) -> None:
    assert reason(ATTORNEY, headers) == expected


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("", "null-sender"),
        ("MAILER-DAEMON@mail.firm.example", "system-sender"),
        ("mailer-daemon@mail.firm.example", "system-sender"),
        ("Mailer_Daemon@mail.firm.example", "system-sender"),
        ("MAILER-DAEMON", "system-sender"),
        ("LISTSERV@lists.example", "system-sender"),
        ("majordomo@lists.example", "system-sender"),
        ("owner-immigration@lists.example", "system-sender"),
        ("immigration-request@lists.example", "system-sender"),
        ("noreply@uscis.example", "system-sender"),
        ("no-reply@firm.example", "system-sender"),
        ("no_reply@firm.example", "system-sender"),
        ("do-not-reply@firm.example", "system-sender"),
        ("DoNotReply@firm.example", "system-sender"),
        ("noreply-alerts@firm.example", "system-sender"),
        ("alerts-noreply@firm.example", "system-sender"),
        ("bounce@firm.example", "system-sender"),
        ("bounces+verp=ana=ruizlaw.example@lists.example", "system-sender"),
        ("immigration-bounces@lists.example", "system-sender"),
        ("bounce-123-456@mailer.example", "system-sender"),
        ("postmaster@firm.example", None),  # people read postmaster
        ("Postmaster@firm.example", None),
        ("reply@firm.example", None),
        ("ana.ruiz@ruizlaw.example", None),
        ("owner@firm.example", None),
        ("requests@firm.example", None),
        ("daemon.tools@firm.example", None),
        ("filings@occ-chicago.example", "own-address"),
        ("postmaster@occ-chicago.example", "own-address"),
        ("anything@OCC-Chicago.example", "own-address"),
        ("root@mx.occ-chicago.example", "own-address"),
        ("no-reply@notices.example", "own-address"),
        ("NO-REPLY@notices.example", "own-address"),
        ("someone@notices.example", None),
        ("a@b.example, c@d.example", "invalid-sender"),
        ('"quoted local"@firm.example', "invalid-sender"),
        ("ana@localhost", "invalid-sender"),
    ],
)
def test_senders_that_are_null_systems_or_ourselves_get_no_notice(
    sender: str, expected: str | None
) -> None:
    assert reason(sender) == expected


def test_null_sender_wins_over_every_other_reason() -> None:
    assert reason("", {"auto-submitted": "auto-replied", "list-id": "x"}) == "null-sender"


def test_header_reasons_are_checked_before_the_sender() -> None:
    assert reason("mailer-daemon@x.example", {"auto-submitted": "auto-replied"}) == (
        "auto-submitted"
    )


def test_reasons_are_short_kebab_case_words_for_the_audit_log() -> None:
    reasons = {
        reason(""),
        reason(ATTORNEY, {"auto-submitted": "auto-replied"}),
        reason(ATTORNEY, {"list-id": "x"}),
        reason(ATTORNEY, {"precedence": "bulk"}),
        reason("mailer-daemon@x.example"),
        reason("a@occ-chicago.example"),
        reason("a@b"),
    }
    assert reasons == {
        "null-sender",
        "auto-submitted",
        "mailing-list",
        "bulk-precedence",
        "system-sender",
        "own-address",
        "invalid-sender",
    }


def test_own_addresses_default_to_none_for_callers_that_pass_only_domains() -> None:
    assert notice_suppression("no-reply@notices.example", {}, own_domains=OWN_DOMAINS) == (
        "system-sender"
    )
    assert notice_suppression("ana@notices.example", {}, own_domains=OWN_DOMAINS) is None


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("out-of-office", "auto-submitted"),
        ("mailing-list", "mailing-list"),
        ("plain", None),
        ("multipart-attachments", None),
        ("injection", None),  # hostile, but a person may still need to know
    ],
)
def test_samples_are_suppressed_by_their_headers(sample: str, expected: str | None) -> None:
    parsed = email.message_from_bytes(
        (SAMPLES / f"{sample}.eml").read_bytes(), policy=policy.compat32
    )
    headers: dict[str, str] = {}
    for name, value in parsed.items():
        headers.setdefault(name.lower(), str(value))
    return_path = headers["return-path"].strip("<> ")
    assert reason(return_path, headers) == expected


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("ana@ruizlaw.example", None),
        ("no-reply@occ-chicago.example", "own-address"),
        ("occ-chicago-filings@occ-chicago.example", "own-address"),
        ("root@mx.occ-chicago.example", "own-address"),
        ("mailer-daemon@ruizlaw.example", "system-sender"),
    ],
)
def test_suppression_reason_knows_the_gateways_own_addresses(
    sender: str, expected: str | None
) -> None:
    context = NoticeContext.from_settings(load_settings(default_config_path(), environ={}))
    assert suppression_reason(context, sender=sender, headers={}) == expected


def test_the_notices_own_from_address_is_never_answered_even_off_our_domains() -> None:
    settings = load_settings(
        default_config_path(),
        environ={
            "GATEWAY_NOTICES__FROM_ADDRESS": "eservice-notices@agency.example",
            "GATEWAY_NOTICES__DKIM_DOMAIN": "agency.example",
        },
    )
    context = NoticeContext.from_settings(settings)
    assert (
        suppression_reason(context, sender="eservice-notices@agency.example", headers={})
        == "own-address"
    )
    assert suppression_reason(context, sender="staff@agency.example", headers={}) is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ana@ruizlaw.example", True),
        ("ana.ruiz+filings@ruizlaw.example", True),
        ("o'brien@firm.example", True),
        ("josé@abogados.example", True),
        ("用户@example.example", True),
        ("a@xn--bcher-kva.example", True),
        ("", False),
        ("ana", False),
        ("ana@", False),
        ("@ruizlaw.example", False),
        ("ana..ruiz@firm.example", False),
        (".ana@firm.example", False),
        ("ana@firm", False),
        ("ana@-firm.example", False),
        ("ana@firm_x.example", False),
        ("ana@[192.0.2.1]", False),
        ('"ana"@firm.example', False),
        ("ana@firm.example ", False),
        ("ana @firm.example", False),
        ("<ana@firm.example>", False),
        ("ana@firm.example,bob@firm.example", False),
        ("ana@firm.example\r\nBcc: x@y.example", False),
        ("ana\x85@firm.example", False),
        ("ana\u2028@firm.example", False),
        ("ana\u202e@firm.example", False),
        ("ana\ud800@firm.example", False),
        ("ana\u00a0@firm.example", False),
        ("a" * 250 + "@firm.example", False),
    ],
)
def test_is_replyable_address(address: str, expected: bool) -> None:
    assert is_replyable_address(address) is expected
