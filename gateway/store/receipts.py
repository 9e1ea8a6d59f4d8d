"""Receipts: what the public receipt page may tell a sender about one attempt.

Read from the state store by reference, and only what the page shows: the arrival, the
office and retired addresses, the answer and the notice's fate, the sender's domain and the
message's SHA-256. Never the subject, the attachments' names, A-numbers or the sender's local
part: the attempt is read as `gateway audit` reads it (records.find_attempts; on PostgreSQL,
postgres/receipts.py), but a Receipt has no field for any of those, so no page built from one
can show them. Nothing here writes or formats.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.errors import StoreError
from gateway.store.db import connect
from gateway.store.records import AttemptRecord, Filters, Kind, find_attempts
from gateway.store.sentmail import SentNotice, read_sent
from gateway.vocabulary import NOTICE_KINDS, NoticeStatus

__all__ = [
    "REFERENCE_SHAPE",
    "Receipt",
    "SqliteReceipts",
    "first_receipt",
    "read_receipt",
    "receipt_from",
]

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
    return first_receipt(
        find_attempts(conn, Filters(reference=reference)),
        auth=lambda found: _auth(conn, found),
        sent=lambda found: read_sent(conn, found),
    )


def first_receipt(
    found: Sequence[AttemptRecord],
    *,
    auth: Callable[[str], str | None],
    sent: Callable[[str], Sequence[SentNotice]],
) -> Receipt | None:
    """The receipt of the first attempt `found` (None: none was), either backend's: a
    received message's with what `auth` and `sent` read for its reference, a refusal at RCPT
    with neither (nothing was received to authenticate or answer)."""
    if not found:
        return None
    attempt = found[0]
    if attempt.kind is Kind.REFUSAL:
        return receipt_from(attempt, auth=None, sent=())
    return receipt_from(attempt, auth=auth(attempt.reference), sent=sent(attempt.reference))


def receipt_from(
    attempt: AttemptRecord, *, auth: str | None, sent: Sequence[SentNotice]
) -> Receipt:
    """The receipt of one attempt, from its record, its Authentication-Results and the mail
    kept as sent for it (of which only notices and advisories count); either backend's."""
    notices = [s.sent_at for s in sent if s.kind in NOTICE_KINDS]
    return Receipt(
        reference=attempt.reference,
        is_refused_at_rcpt=attempt.kind is Kind.REFUSAL,
        at=attempt.at,
        sender_domain=attempt.sender_domain,
        office=attempt.office,
        addresses=attempt.recipients,
        action=attempt.action,
        decision=attempt.decision,
        notice=attempt.notice,
        reply=attempt.reply,
        auth=auth,
        sha256=attempt.sha256,
        size=attempt.size,
        notice_sent_at=min(notices, default=None),
    )


def _auth(conn: sqlite3.Connection, reference: str) -> str | None:
    row = conn.execute("SELECT auth FROM messages WHERE reference = ?", (reference,)).fetchone()
    return None if row is None else row[0]


class SqliteReceipts:
    """interface.ReceiptReader on the SQLite file: one read-only connection, opened on the
    first read, in the thread that reads (sqlite3 connections stay in their thread)."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._conn: sqlite3.Connection | None = None

    def read_receipt(self, reference: str) -> Receipt | None:
        """The receipt of `reference`, or None.

        Raises:
            StoreError: the file cannot be read.
        """
        try:
            if self._conn is None:
                self._conn = connect(self._database, readonly=True)
            return read_receipt(self._conn, reference)
        except sqlite3.Error as exc:
            self.close()  # the next read opens the file afresh
            raise StoreError(f"cannot read {self._database}: {exc}") from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
