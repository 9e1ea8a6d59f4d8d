"""The receipt page's content: one attempt's receipt, in plain words, in one language.

Pure: a store Receipt, its office's settings and the language in; a ReceiptPage (what the
HTML shows) or the JSON fields out. No I/O, no clock. What it can say is bounded by what a
Receipt holds, which is none of the message's content (store/receipts.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any

from gateway.config import OfficeSettings, OfficeTexts
from gateway.http.receiptwords import LANGUAGE_NAMES, NOTICE_WHY, WORDS
from gateway.notices.text import datetime_text, size_text
from gateway.store.receipts import Receipt
from gateway.vocabulary import NoticeStatusKind

__all__ = [
    "Fact",
    "LanguageLink",
    "ReceiptPage",
    "Step",
    "choose_language",
    "page_languages",
    "receipt_fields",
    "receipt_page",
]

_SENDING = frozenset(
    {
        NoticeStatusKind.QUEUED,
        NoticeStatusKind.IN_FLIGHT,
        NoticeStatusKind.DEFERRED,
        NoticeStatusKind.HELD,
    }
)
_AUTOMATIC = frozenset({"auto-submitted", "mailing-list", "system-sender"})
_UNDELIVERABLE = frozenset({"own-address", "invalid-sender"})
_SIMPLE_WHY = frozenset({"duplicate", "null-sender", "reply-to-notice"})
_SPF = re.compile(r"\bspf=([a-z]+)")
_RELAYED = frozenset({"relay", "relay-and-advise"})


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: str
    is_code: bool = False  # shown in a fixed-width face (references, digests, replies)


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    url: str | None = None
    items: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LanguageLink:
    code: str
    name: str
    href: str
    is_current: bool


@dataclass(frozen=True, slots=True)
class ReceiptPage:
    """What the HTML page shows, every text in `lang`."""

    lang: str
    title: str
    status: str  # not-filed, passed-on, deferred
    headline: str
    lead: str
    content_note: str
    facts: tuple[Fact, ...]
    notice: str  # none, sending, delivered, failed, withheld
    notice_reason: str | None
    notice_text: str
    steps: tuple[Step, ...]
    quote: str
    languages: tuple[LanguageLink, ...]
    json_href: str
    words: Mapping[str, str]

    @property
    def has_sha256(self) -> bool:
        """Whether the facts show the SHA-256 (then the page says what it is for)."""
        return any(fact.label == self.words["sha256"] for fact in self.facts)


def choose_language(
    offered: Sequence[str], *, asked: str | None, accept_language: str | None
) -> str:
    """The page's language: the one the switch asked for, else the reader's preference
    (Accept-Language, RFC 9110 §12.5.4) among `offered`, else the first offered."""
    if asked in offered:
        return str(asked)
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().partition("-")[0]
        if primary in offered and quality > 0:
            ranked.append((-quality, index, primary))
    return min(ranked)[2] if ranked else offered[0]


def page_languages(office: OfficeSettings) -> tuple[str, ...]:
    """The page's languages: every one it has words for, the office's own first."""
    return tuple(dict.fromkeys([*office.languages, *WORDS]))


def _texts(office: OfficeSettings, lang: str) -> OfficeTexts:
    """The office's texts in `lang`, or in its first language when it gives none in `lang`
    (an office whose notices are in English only still has a page in Spanish)."""
    chosen = lang if lang in office.languages else office.languages[0]
    return office.texts(chosen)


def receipt_page(
    receipt: Receipt, office: OfficeSettings, *, lang: str, href: str, show_sha256: bool
) -> ReceiptPage:
    """The page for `receipt` in `lang`; `href` is the page's own path (for the switch)."""
    words = WORDS[lang]
    texts = _texts(office, lang)
    status = _status(receipt)
    notice, reason, notice_text = _notice(receipt, lang, office.zone)
    return ReceiptPage(
        lang=lang,
        title=words["title"].format(reference=receipt.reference),
        status=status,
        headline=words[status.replace("-", "_")],
        lead=words[f"{status.replace('-', '_')}_lead"].format(office=texts.display_name),
        content_note=words["refused_rcpt" if receipt.is_refused_at_rcpt else "received"],
        facts=_facts(receipt, office, lang, texts, show_sha256=show_sha256),
        notice=notice,
        notice_reason=reason,
        notice_text=notice_text,
        steps=_steps(office, lang, texts),
        quote=words["quote"].format(reference=receipt.reference),
        languages=tuple(
            LanguageLink(code, LANGUAGE_NAMES[code], f"{href}?lang={code}", code == lang)
            for code in page_languages(office)
        ),
        json_href=f"{href}.json?lang={lang}",
        words=words,
    )


def _status(receipt: Receipt) -> str:
    if receipt.decision == "deferred":
        return "deferred"
    if receipt.decision == "accepted" and receipt.action in _RELAYED:
        return "passed-on"
    return "not-filed"


def _facts(
    receipt: Receipt, office: OfficeSettings, lang: str, texts: OfficeTexts, *, show_sha256: bool
) -> tuple[Fact, ...]:
    words = WORDS[lang]
    facts = [
        Fact(words["arrived"], datetime_text(receipt.at.astimezone(office.zone), lang)),
        Fact(words["office"], texts.display_name),
        Fact(words["sent_to"], ", ".join(receipt.addresses)),
        Fact(words["sender_domain"], receipt.sender_domain or words["null_sender"]),
        Fact(words["reference"], receipt.reference, is_code=True),
        Fact(words["our_answer"], receipt.reply, is_code=True),
    ]
    if show_sha256 and receipt.sha256 is not None:
        facts.append(Fact(words["sha256"], receipt.sha256, is_code=True))
        if receipt.size is not None:
            facts.append(Fact(words["size"], size_text(receipt.size, lang)))
    return tuple(facts)


def _notice(receipt: Receipt, lang: str, zone: tzinfo) -> tuple[str, str | None, str]:
    """What became of the notice: its state, why it was withheld, and that in words."""
    why = NOTICE_WHY[lang]
    kind, reason = receipt.notice.kind, receipt.notice.reason
    if kind is NoticeStatusKind.NONE:
        return "none", None, why["none-refusal" if receipt.is_refused_at_rcpt else "none"]
    if kind in _SENDING:
        return "sending", None, why["sending"]
    if kind is NoticeStatusKind.DELIVERED:
        if receipt.notice_sent_at is None:
            return "delivered", None, why["delivered"]
        at = datetime_text(receipt.notice_sent_at.astimezone(zone), lang)
        return "delivered", None, why["delivered-at"].format(at=at)
    if kind is NoticeStatusKind.FAILED:
        return "failed", None, why["failed"]
    if kind is NoticeStatusKind.DELETED:
        return "withheld", "deleted", why["deleted"]
    key = _why_key(reason or "", receipt.auth)
    text = why[key] if key in why else why["withheld"].format(why=reason)
    return "withheld", reason, text


def _why_key(reason: str, auth: str | None) -> str:
    if reason == "sender-not-authenticated":
        spf = _SPF.search((auth or "").lower())
        result = spf.group(1) if spf else None
        if result in ("fail", "softfail"):
            return "spf-fail"
        return "spf-none" if result == "none" else reason
    if reason in _SIMPLE_WHY:
        return reason
    if reason.startswith("rate-limit"):
        return "rate-limit"
    if reason in _AUTOMATIC:
        return "automatic"
    if reason in _UNDELIVERABLE:
        return "undeliverable"
    if reason.startswith("loop"):
        return "loop"
    return "temperror" if reason == "sender-check-temperror" else reason


def _steps(office: OfficeSettings, lang: str, texts: OfficeTexts) -> tuple[Step, ...]:
    words = WORDS[lang]
    names = {"portal_name": texts.portal_name, "office": office.short_name}
    steps = [Step(words["portal"].format(**names), office.portal_url)]
    steps.append(Step(words["register"].format(**names), office.registration_url))
    if office.instructions_url:
        steps.append(Step(words["instructions"].format(**names), office.instructions_url))
    if texts.paper_service:
        steps.append(Step(words["paper"].format(**names), items=texts.paper_service))
    if texts.contact:
        steps.append(Step(words["contact"], items=(texts.contact,)))
    return tuple(steps)


def receipt_fields(
    receipt: Receipt, office: OfficeSettings, page: ReceiptPage, *, show_sha256: bool
) -> dict[str, Any]:
    """The receipt for firms' case-management tools: the page's facts, as values."""
    texts = _texts(office, page.lang)
    local = receipt.at.astimezone(office.zone)
    is_filing = page.status != "passed-on"
    fields: dict[str, Any] = {
        "reference": receipt.reference,
        "language": page.lang,
        "status": page.status,
        # None: passed on before the cutoff; whether it was filed is the office's to say.
        "filed": False if is_filing else None,
        "served": False if is_filing else None,
        "summary": page.lead,
        "received": {
            "office_time": local.isoformat(timespec="seconds"),
            "utc": receipt.at.astimezone(UTC).isoformat(timespec="seconds"),
            "time_zone": office.timezone,
        },
        "office": {
            "name": office.name,
            "display_name": texts.display_name,
            "short_name": office.short_name,
        },
        "addresses": list(receipt.addresses),
        "sender_domain": receipt.sender_domain or None,
        "content_received": not receipt.is_refused_at_rcpt,
        "answer": receipt.reply,
        "notice": {
            "status": page.notice,
            "reason": page.notice_reason,
            "sent_at": None
            if receipt.notice_sent_at is None
            else receipt.notice_sent_at.astimezone(UTC).isoformat(timespec="seconds"),
            "explanation": page.notice_text,
        },
        "what_to_do": {
            "portal_name": texts.portal_name,
            "portal_url": office.portal_url,
            "registration_url": office.registration_url,
            "instructions_url": office.instructions_url,
            "paper_service": list(texts.paper_service),
            "contact": texts.contact,
        },
    }
    if show_sha256:
        fields["message"] = {"sha256": receipt.sha256, "size": receipt.size}
    return fields
