"""The whole story of one attempt, as the state store holds it.

What `gateway audit show` tells (audit/story.py formats it, and adds the log's lines, which
this module knows nothing of): the attempt, its recipients' decisions, its jobs with every
delivery attempt, and the notices kept as sent. Queries take an open connection and return
values; nothing here writes or formats for a terminal.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from gateway.store.outbox import Attempt, Job, job_attempts
from gateway.store.queries import StoredDecision, list_decisions
from gateway.store.records import AttemptRecord, Filters, Kind, find_attempts
from gateway.store.sentmail import SentNotice, read_sent

__all__ = ["Attachment", "Story", "tell_story"]


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Story:
    """Everything the store holds about one attempt (the log's lines are audit/events.py's)."""

    attempt: AttemptRecord
    peer_port: int | None = None
    tls: str | None = None
    date_header: str | None = None
    from_header: str | None = None
    attachments: tuple[Attachment, ...] = ()
    duplicate_of: str | None = None
    auth: str | None = None  # how the sender was authenticated (Authentication-Results)
    raw_kept: bool = False
    recipients: tuple[StoredDecision, ...] = ()
    jobs: tuple[tuple[Job, tuple[Attempt, ...]], ...] = ()
    sent: tuple[SentNotice, ...] = ()  # the notices kept as sent (sentmail.py)


def tell_story(conn: sqlite3.Connection, reference: str) -> Story | None:
    """The story of the attempt with this reference, or None if the store has none."""
    found = find_attempts(conn, Filters(reference=reference))
    if not found:
        return None
    attempt = found[0]
    if attempt.kind is Kind.REFUSAL:
        return Story(attempt)
    ref = attempt.reference
    row = conn.execute("SELECT * FROM messages WHERE reference = ?", (ref,)).fetchone()
    jobs = conn.execute("SELECT * FROM jobs WHERE reference = ? ORDER BY id", (ref,)).fetchall()
    raw = conn.execute("SELECT 1 FROM raw_messages WHERE reference = ?", (ref,)).fetchone()
    return Story(
        attempt,
        peer_port=row["peer_port"],
        tls=row["tls"],
        date_header=row["date_header"],
        from_header=row["from_header"],
        attachments=tuple(
            Attachment(a["filename"], a["content_type"], a["size"])
            for a in json.loads(row["attachments"])
        ),
        duplicate_of=row["duplicate_of"],
        auth=row["auth"],
        raw_kept=raw is not None,
        recipients=tuple(list_decisions(conn, ref)),
        jobs=tuple(
            (job, tuple(job_attempts(conn, job.id))) for job in (Job.from_row(j) for j in jobs)
        ),
        sent=tuple(read_sent(conn, ref)),
    )
