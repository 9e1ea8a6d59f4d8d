"""SMTP reply texts: what a sending server (and the attorney reading a bounce) is told."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import OfficeSettings
from gateway.errors import ConfigError
from gateway.policy.verdict import Reply, ReplyKind
from gateway.smtp.message import ReplyWords
from gateway.smtp.replies import (
    MAX_REPLY,
    REPLY_NO_MAILBOX,
    accepted_reply,
    check_replies,
    line_too_long_reply,
    oversize_reply,
    reply_code,
    reply_for,
    retired_reply,
    unknown_mailbox_reply,
)
from tests.conftest import office
from tests.test_verdict import CHICAGO, FILING, RULES, arrival, verdict

REF = "20170913-7K3QM9XD0AB4C"
PORTAL = "https://eservice.ice.gov/"
NO_MAILBOX = (
    "550 5.1.1 No such mailbox here; nothing was filed. Electronic filings to ICE OCC Chicago"
    f" go only via {PORTAL} (ref {REF})"
)


def chicago(**overrides: Any) -> OfficeSettings:
    return OfficeSettings.model_validate(office(**overrides))


def test_retired_reply_says_not_filed_and_that_paper_service_still_works() -> None:
    assert retired_reply(chicago(), REF) == (
        "550 5.1.6 NOT FILED: this address was retired on 2017-09-12; nothing was filed with or"
        " served on ICE OCC Chicago. File electronically only via https://eservice.ice.gov/;"
        " paper service still accepted (ref 20170913-7K3QM9XD0AB4C)"
    )


def test_retired_reply_of_an_office_without_paper_service_promises_none() -> None:
    reply = retired_reply(chicago(paper_service=[]), REF)
    assert reply.endswith(f"File electronically only via {PORTAL} (ref {REF})")
    assert "paper" not in reply


@pytest.mark.parametrize(
    ("notice_follows", "expected"),
    [
        (
            True,
            "250 2.0.0 Received but NOT FILED: ICE OCC Chicago takes electronic filings only via"
            f" {PORTAL}; a notice follows (ref {REF})",
        ),
        (
            False,
            "250 2.0.0 Received but NOT FILED: ICE OCC Chicago takes electronic filings only via"
            f" {PORTAL} (ref {REF})",
        ),
    ],
)
def test_accepted_reply_promises_a_notice_only_when_one_follows(
    *, notice_follows: bool, expected: str
) -> None:
    assert accepted_reply(REF, chicago(), notice_follows=notice_follows) == expected


def test_accepted_reply_promises_a_notice_by_default_and_queues_relayed_mail() -> None:
    assert "a notice follows" in accepted_reply(REF, chicago())
    assert accepted_reply(REF, None) == f"250 2.0.0 Queued as {REF}"


@pytest.mark.parametrize(
    ("contact", "expected"),
    [
        (
            None,
            NO_MAILBOX,
        ),
        (
            "+1 312 555 0100",
            f"{NO_MAILBOX}; questions: +1 312 555 0100",
        ),
        # SMTP replies are 7-bit: a contact that is not ASCII stays in the notices only.
        (
            "Línea principal",
            NO_MAILBOX,
        ),
    ],
)
def test_unknown_mailbox_reply_points_a_typo_to_the_portal_and_the_contact(
    contact: str | None, expected: str
) -> None:
    assert unknown_mailbox_reply(chicago(contact=contact), REF) == expected


def test_unknown_mailbox_reply_prefers_the_english_contact() -> None:
    office = chicago(
        languages=["es", "en"],
        display_name={"en": "OCC", "es": "OCC"},
        paper_service=[],
        portal_name={"en": "portal", "es": "portal"},
        contact={"es": "Consultas: +1 312 555 0100", "en": "Ask +1 312 555 0100"},
    )
    assert unknown_mailbox_reply(office, REF).endswith("; questions: Ask +1 312 555 0100")


def test_unknown_mailbox_reply_drops_a_contact_that_would_not_fit() -> None:
    long_portal = "https://portal.example/" + "p" * 280
    office = chicago(portal_url=long_portal, contact="x" * 200)
    reply = unknown_mailbox_reply(office, REF)
    assert reply.endswith(f"{long_portal} (ref {REF})")
    assert len(reply) <= MAX_REPLY


def test_unknown_mailbox_reply_without_an_office_is_the_plain_550() -> None:
    assert unknown_mailbox_reply(None, REF) == REPLY_NO_MAILBOX == "550 5.1.1 No such mailbox here"


@pytest.mark.parametrize(
    ("reply", "code", "enhanced"),
    [
        (oversize_reply(chicago(), REF), 552, "5.3.4"),
    ],
)
def test_content_refusals_say_not_filed_name_the_portal_and_carry_the_reference(
    reply: str, code: int, enhanced: str
) -> None:
    assert reply_code(reply) == code
    assert reply.split()[1] == enhanced
    assert "NOT FILED" in reply
    assert f"File electronically only via {PORTAL}" in reply
    assert reply.endswith(f"(ref {REF})")


def test_a_long_line_in_mail_to_be_relayed_is_a_content_refusal_with_a_reference() -> None:
    reply = line_too_long_reply(REF)
    assert (reply_code(reply), reply.split()[1]) == (554, "5.6.0")
    assert reply.endswith(f"(ref {REF})")


def test_check_replies_accepts_the_founding_office() -> None:
    check_replies([chicago(contact="+1 312 555 0100")])


def test_check_replies_refuses_an_office_whose_replies_would_not_fit() -> None:
    # 510 octets: retired_reply, the longest, no longer fits; the others still would.
    portal = "https://portal.example/" + "p" * 340
    with pytest.raises(ConfigError, match="SMTP reply would be") as caught:
        check_replies([chicago(portal_url=portal)])
    assert caught.value.key == "offices[0]"


def test_every_reply_of_an_office_that_check_replies_accepts_fits() -> None:
    # The longest portal URL that check_replies lets through: every reply must still fit.
    portal = PORTAL + "x" * (MAX_REPLY - len(retired_reply(chicago(), REF)))
    accepted = chicago(portal_url=portal, contact="x" * 200)
    check_replies([accepted])
    replies = [
        retired_reply(accepted, REF),
        accepted_reply(REF, accepted),
        accepted_reply(REF, accepted, notice_follows=False),
        unknown_mailbox_reply(accepted, REF),
        oversize_reply(accepted, REF),
    ]
    assert max(len(reply) for reply in replies) <= MAX_REPLY
    assert all(len(reply) <= MAX_REPLY and reply.isascii() for reply in replies)


def test_reply_words_hold_the_words_of_each_reply_the_store_may_settle_on() -> None:
    # A refusal that queues a notice may end on its own 550 or on a 451 per notice limit.
    gated = verdict(arrival(FILING))
    words = ReplyWords(gated, "20170913-7K3QM9XD0AB4C", RULES.offices)
    assert len(words) == 5
    assert dict(words) == {
        reply: reply_for(reply, "20170913-7K3QM9XD0AB4C", CHICAGO if reply.office else None)
        for reply in gated.possible_replies()
    }
    assert words[gated.reply].startswith("550 5.1.6 NOT FILED")
    with pytest.raises(KeyError):
        words[Reply(ReplyKind.LOOP)]  # not a reply this verdict can end on


RECEIPTS = "https://eservice-mx.agency.example/ref/"


def test_replies_naming_a_reference_carry_its_receipt_page_when_one_is_published() -> None:
    receipt = f"{RECEIPTS}{REF}"
    replies = [
        retired_reply(CHICAGO, REF, public_url=RECEIPTS),
        accepted_reply(REF, CHICAGO, public_url=RECEIPTS),
        accepted_reply(REF, None, public_url=RECEIPTS),
        unknown_mailbox_reply(CHICAGO, REF, public_url=RECEIPTS),
        oversize_reply(CHICAGO, REF, public_url=RECEIPTS),
        oversize_reply(None, REF, public_url=RECEIPTS),
    ]
    assert all(receipt in reply for reply in replies)
    assert retired_reply(CHICAGO, REF).endswith(f"(ref {REF})")
    assert retired_reply(CHICAGO, REF, public_url=RECEIPTS).endswith(f"(ref {REF}, {receipt})")


def test_a_public_url_too_long_for_the_replies_is_refused_naming_it() -> None:
    check_replies([CHICAGO], public_url=RECEIPTS)
    with pytest.raises(ConfigError, match=r"lookup\.public_url"):
        check_replies([CHICAGO], public_url=RECEIPTS + "x" * 250)
