"""Receipts: what the public receipt page may tell a sender about one attempt.

Read from the state store by reference, and only what the page shows: the arrival, the
office and retired addresses, the answer and the notice's fate, the sender's domain and the
message's SHA-256. Never the subject, the attachments' names, A-numbers or the sender's local
part: the attempt is read as `gateway audit` reads it (records.find_attempts), but a Receipt
has no field for any of those, so no page built from one can show them. Nothing here writes
or formats.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from gateway.store.records import Filters, Kind, find_attempts
from gateway.store.sentmail import read_sent
from gateway.vocabulary import NOTICE_KINDS, NoticeStatus

__all__ = ["REFERENCE_SHAPE", "Receipt", "read_receipt"]

# A reference as the gateway makes it: the UTC date, then 13 characters of Crockford's base 32
# (65 random bits), or 10 for those made before references were lengthened (50 bits).
REFERENCE_SHAPE = re.compile(r"[0-9]{8}-[0-9A-HJKMNP-TV-Z]{10}(?:[0-9A-HJKMNP-TV-Z]{3})?")


@dataclass(frozen=True, slots=True)
class Receipt:
    """One attempt as its receipt tells it; no field holds any of the message's content."""

    reference: str
    is_refused_at_rcpt: bool  # no content was received at all
    at: datetime  # UTC
    sender_domain: str  # "" for the null sender
    office: str | None  # None: no filing office was addressed (postmaster mail)
    addresses: tuple[str, ...]  # the addresses it was sent to
    action: str  # policy.Action
    decision: str  # accepted, rejected, deferred (after DATA), or refused (RCPT)
    notice: NoticeStatus
    reply: str  # what our server answered, word for word (it names no content)
    auth: str | None = None  # Authentication-Results: why a sender was or was not trusted
    sha256: str | None = None
    size: int | None = None
    notice_sent_at: datetime | None = None  # when the notice was handed over, if kept


def read_receipt(conn: sqlite3.Connection, reference: str) -> Receipt | None:
    """The receipt of `reference`, or None when there is none (unknown, malformed, purged)."""
    if REFERENCE_SHAPE.fullmatch(reference) is None:
        return None
    found = find_attempts(conn, Filters(reference=reference))
    if not found:
        return None
    a = found[0]
    is_refusal = a.kind is Kind.REFUSAL
    auth = None if is_refusal else _auth(conn, a.reference)
    sent = [] if is_refusal else [s for s in read_sent(conn, a.reference) if s.kind in NOTICE_KINDS]
    return Receipt(
        reference=a.reference,
        is_refused_at_rcpt=is_refusal,
        at=a.at,
        sender_domain=a.sender_domain,
        office=a.office,
        addresses=a.recipients,
        action=a.action,
        decision=a.decision,
        notice=a.notice,
        reply=a.reply,
        auth=auth,
        sha256=a.sha256,
        size=a.size,
        notice_sent_at=min((s.sent_at for s in sent), default=None),
    )


def _auth(conn: sqlite3.Connection, reference: str) -> str | None:
    row = conn.execute("SELECT auth FROM messages WHERE reference = ?", (reference,)).fetchone()
    return None if row is None else row[0]
