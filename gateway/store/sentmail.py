"""The record of what we told the sender: each notice, advisory and bounce as it was sent.

The bytes kept are those handed to the remote server (after DKIM signing), with their
Message-ID, SHA-256 and size, in the table `sent_notices`, keyed by reference and job. The
row is written by outbox.finish() in the transaction that marks the job delivered; here are
the values, the SQL and the reads. Relays are not kept here (their original is in
raw_messages). Nothing here sends, decides a retention period or formats for a terminal.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32

from gateway.mail.evidence import header_block
from gateway.store.messages import iso
from gateway.vocabulary import JobKind

__all__ = [
    "SentNotice",
    "describe_sent",
    "insert_sent",
    "purge_sent",
    "read_sent",
    "sent_data",
    "should_keep",
]

# Relays carry someone else's message; everything else is ours to account for.
_KEPT_KINDS = frozenset({JobKind.NOTICE, JobKind.ADVISORY, JobKind.BOUNCE})


@dataclass(frozen=True, slots=True)
class SentNotice:
    """One kept mail, without its bytes (see sent_data())."""

    job_id: int
    reference: str
    kind: str
    message_id: str | None
    sha256: str
    size: int
    sent_at: datetime


def should_keep(kind: str) -> bool:
    """Whether mail of this job kind is kept as sent (notices, advisories, bounces)."""
    return kind in _KEPT_KINDS


def describe_sent(
    data: bytes, *, job_id: int, reference: str, kind: str, sent_at: datetime
) -> SentNotice:
    """The record of `data` as sent: its Message-ID, SHA-256 and size."""
    return SentNotice(
        job_id=job_id,
        reference=reference,
        kind=kind,
        message_id=_message_id(data),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        sent_at=sent_at,
    )


def _message_id(data: bytes) -> str | None:
    # compat32 keeps the header as written: what the recipient's client shows and threads on.
    # Only the header block is parsed: the parser would otherwise copy the whole body.
    value = BytesHeaderParser(policy=compat32).parsebytes(header_block(data))["Message-ID"]
    return None if value is None else " ".join(str(value).split())


def insert_sent(conn: sqlite3.Connection, notice: SentNotice, data: bytes) -> None:
    """Keep `data` as sent, inside the caller's transaction."""
    conn.execute(
        "INSERT INTO sent_notices (job_id, reference, kind, message_id, sha256, size, sent_at,"
        " data) VALUES (?,?,?,?,?,?,?,?)",
        (
            notice.job_id,
            notice.reference,
            notice.kind,
            notice.message_id,
            notice.sha256,
            notice.size,
            iso(notice.sent_at),
            data,
        ),
    )


def read_sent(conn: sqlite3.Connection, reference: str) -> list[SentNotice]:
    """The kept mails of a reference, in job order; none from a store that predates them."""
    try:
        rows = conn.execute(
            "SELECT job_id, reference, kind, message_id, sha256, size, sent_at"
            " FROM sent_notices WHERE reference = ? ORDER BY job_id",
            (reference,),
        ).fetchall()
    except sqlite3.OperationalError:
        # A store not yet opened by a gateway that keeps notices (read-only: not migrated).
        return []
    return [
        SentNotice(
            job_id=row[0],
            reference=row[1],
            kind=row[2],
            message_id=row[3],
            sha256=row[4],
            size=row[5],
            sent_at=datetime.fromisoformat(row[6]),
        )
        for row in rows
    ]


def sent_data(conn: sqlite3.Connection, reference: str, job_id: int) -> bytes | None:
    """The bytes kept of one job's mail, exactly as sent; None if none are kept."""
    row = conn.execute(
        "SELECT data FROM sent_notices WHERE reference = ? AND job_id = ?", (reference, job_id)
    ).fetchone()
    return None if row is None else bytes(row[0])


def purge_sent(conn: sqlite3.Connection, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` kept mails sent before `before`, oldest first; how many."""
    cursor = conn.execute(
        "DELETE FROM sent_notices WHERE rowid IN"
        " (SELECT rowid FROM sent_notices WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
        (iso(before), limit),
    )
    return cursor.rowcount
