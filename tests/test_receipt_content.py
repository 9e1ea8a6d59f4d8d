"""The receipt page's pure parts with plain values: the rate limit, the language, and what
the page says for each status and each reason a notice was withheld."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.config import OfficeSettings
from gateway.http.ratelimit import RateLimit
from gateway.http.receiptpage import ReceiptPage, choose_language, page_languages, receipt_page
from gateway.store.receipts import Receipt
from gateway.vocabulary import NoticeStatus, NoticeStatusKind
from tests.conftest import RETIRED, office

CHICAGO = OfficeSettings.model_validate(office())
BILINGUAL = OfficeSettings.model_validate(
    office(
        languages=["es", "en"],
        display_name={"es": "Oficina de Chicago", "en": "Chicago Office"},
        paper_service={"es": ["Por correo"], "en": ["By mail"]},
        portal_name={"es": "portal eService", "en": "eService portal"},
        contact={"es": "oficina@example.gov", "en": "office@example.gov"},
        instructions_url="https://eservice.ice.gov/instructions",
    )
)
AT = datetime(2017, 9, 13, 15, 0, tzinfo=UTC)


def receipt(**changes: object) -> Receipt:
    values: dict[str, object] = {
        "reference": "20170913-7K3QM9XD0AB4C",
        "is_refused_at_rcpt": False,
        "at": AT,
        "sender_domain": "lawfirm.example",
        "office": CHICAGO.name,
        "addresses": (RETIRED,),
        "action": "reject-after-data",
        "decision": "rejected",
        "notice": NoticeStatus(NoticeStatusKind.DELIVERED),
        "reply": "550 5.1.6 NOT FILED",
    }
    values.update(changes)
    return Receipt(**values)  # type: ignore[arg-type]


def page_of(item: Receipt, lang: str = "en", office: OfficeSettings = CHICAGO) -> ReceiptPage:
    return receipt_page(item, office, lang=lang, href="/ref/x", show_sha256=True)


@pytest.mark.parametrize(
    ("asked", "accept", "expected"),
    [
        (None, None, "en"),
        (None, "es", "es"),
        (None, "es-MX,es;q=0.9,en;q=0.8", "es"),
        (None, "fr, en;q=0.1, es;q=0.5", "es"),
        (None, "es;q=0, en", "en"),
        (None, "es;q=bogus, en;q=0.2", "en"),
        (None, "de", "en"),
        ("es", "en", "es"),
        ("fr", "es", "es"),
    ],
)
def test_the_language_is_the_switchs_else_the_readers_else_the_offices(
    asked: str | None, accept: str | None, expected: str
) -> None:
    assert choose_language(("en", "es"), asked=asked, accept_language=accept) == expected


def test_every_office_has_a_page_in_both_languages_its_own_first() -> None:
    assert page_languages(CHICAGO) == ("en", "es")
    assert page_languages(BILINGUAL) == ("es", "en")


@pytest.mark.parametrize(
    ("notice", "auth", "expected"),
    [
        (
            ("suppressed", "sender-not-authenticated"),
            "mx; spf=fail smtp.mailfrom=x",
            "SPF record did not authorise",
        ),
        (
            ("suppressed", "sender-not-authenticated"),
            "mx; spf=softfail",
            "SPF record did not authorise",
        ),
        (
            ("suppressed", "sender-not-authenticated"),
            "mx; spf=none; dkim=none",
            "publishes no SPF record",
        ),
        (
            ("suppressed", "sender-not-authenticated"),
            None,
            "could not confirm that the e-mail came",
        ),
        (("suppressed", "duplicate"), None, "had already been answered"),
        (("suppressed", "rate-limit-domain"), None, "too many notices"),
        (("suppressed", "auto-submitted"), None, "sent automatically"),
        (("suppressed", "mailing-list"), None, "sent automatically"),
        (("suppressed", "reply-to-notice"), None, "answered one of our notices"),
        (("suppressed", "invalid-sender"), None, "cannot receive mail"),
        (("suppressed", "loop-marker"), None, "mail loop"),
        (("suppressed", "sender-check-temperror"), None, "domain name system"),
        (("suppressed", "something-new"), None, "was not sent (something-new)"),
        (("deleted", None), None, "it was withdrawn"),
        (("held", None), None, "on its way"),
        (("failed", None), None, "could not be delivered"),
        (("delivered", None), None, "was delivered to your mail server."),
    ],
)
def test_the_notices_fate_is_told_in_plain_words(
    notice: tuple[str, str | None], auth: str | None, expected: str
) -> None:
    status = NoticeStatus(NoticeStatusKind(notice[0]), notice[1])
    page = page_of(receipt(notice=status, auth=auth))
    assert expected in page.notice_text


def test_a_delivered_notice_says_when_in_the_offices_time() -> None:
    sent = datetime(2017, 9, 13, 15, 2, tzinfo=UTC)
    page = page_of(receipt(notice_sent_at=sent), "es")
    assert page.notice_text == (
        "Nuestro aviso se entregó a su servidor de correo el miércoles, 13 de septiembre de"
        " 2017, 10:02 (CDT)."
    )


@pytest.mark.parametrize(
    ("decision", "action", "status", "headline"),
    [
        ("rejected", "reject-after-data", "not-filed", "NOT filed or served"),
        ("accepted", "accept-and-notify", "not-filed", "NOT filed or served"),
        ("deferred", "reject-after-data", "deferred", "NOT filed: not accepted yet"),
        ("accepted", "relay", "passed-on", "Passed on to the office"),
    ],
)
def test_the_headline_says_what_became_of_the_filing(
    decision: str, action: str, status: str, headline: str
) -> None:
    page = page_of(receipt(decision=decision, action=action))
    assert (page.status, page.headline) == (status, headline)


def test_the_steps_name_the_portal_registration_instructions_paper_and_contact() -> None:
    page = page_of(receipt(office=BILINGUAL.name), "es", BILINGUAL)
    steps = page.steps
    assert [s.url for s in steps] == [
        "https://eservice.ice.gov/",
        "https://eserviceregistration.ice.gov/",
        "https://eservice.ice.gov/instructions",
        None,
        None,
    ]
    assert steps[0].text == "Notifique o presente sus documentos a través del portal eService:"
    assert steps[3].items == ("Por correo",)
    assert steps[4].items == ("oficina@example.gov",)
    english = page_of(receipt(office=BILINGUAL.name), "en", BILINGUAL)
    assert english.steps[4].items == ("office@example.gov",)


def test_a_null_sender_and_a_refusal_at_rcpt_are_said_as_such() -> None:
    page = page_of(
        receipt(
            sender_domain="", is_refused_at_rcpt=True, notice=NoticeStatus(NoticeStatusKind.NONE)
        )
    )
    facts = {f.label: f.value for f in page.facts}
    assert facts["Sender's domain"] == "(none: the message had no return address)"
    assert "we never received its content" in page.content_note
    relayed = page_of(
        receipt(decision="accepted", action="relay", notice=NoticeStatus(NoticeStatusKind.NONE))
    )
    assert relayed.notice_text == "No notice is due for this e-mail."


def test_a_client_gets_its_burst_then_its_rate_and_a_retry_after() -> None:
    limit = RateLimit(per_minute=6, burst=2)
    assert [limit.ask("a", 0.0).is_allowed for _ in range(2)] == [True, True]
    refused = limit.ask("a", 0.0)
    assert (refused.is_allowed, refused.retry_after_s, refused.is_first_refusal) == (
        False,
        10,
        True,
    )
    assert limit.ask("a", 1.0).is_first_refusal is False
    assert limit.ask("b", 1.0).is_allowed  # another client's own bucket
    assert limit.ask("a", 11.0).is_allowed  # one token back after 10 s
    assert not limit.ask("a", 11.0).is_allowed


def test_the_limit_forgets_clients_beyond_its_bound_refilled_ones_first() -> None:
    limit = RateLimit(per_minute=60, burst=1, max_clients=2)
    limit.ask("a", 0.0)
    limit.ask("b", 5.0)
    limit.ask("c", 5.5)  # a has refilled (1 s): forgotten first
    assert len(limit) == 2
    limit.ask("d", 5.6)  # none refilled: the least recently seen goes
    assert len(limit) == 2
    assert not limit.ask("d", 5.6).is_allowed
