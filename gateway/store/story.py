"""The whole story of one attempt, as the state store holds it.

What `gateway audit show` tells (audit/story.py formats it, and adds the log's lines, which
this module knows nothing of): the attempt, its recipients' decisions, its jobs with every
delivery attempt, and the notices kept as sent. It is gathered through an AuditReader
(interface.py), so either backend tells it; on a shared store the attempt names the node
that took it. Nothing here writes, speaks SQL or formats for a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.interface import AuditReader
from gateway.store.outbox import Attempt, Job
from gateway.store.queries import StoredDecision
from gateway.store.records import AttemptRecord, Filters, Kind
from gateway.store.sentmail import SentNotice

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


def tell_story(reader: AuditReader, reference: str) -> Story | None:
    """The story of the attempt with this reference, or None if the store has none.

    Raises:
        StoreError: the store cannot be read.
    """
    found = reader.find_attempts(Filters(reference=reference))
    if not found:
        return None
    attempt = found[0]
    message = reader.read_message(attempt.reference) if attempt.kind is Kind.MESSAGE else None
    if message is None:  # a refusal at RCPT (or a message purged between the two reads)
        return Story(attempt)
    ref = attempt.reference
    return Story(
        attempt,
        peer_port=message.peer_port,
        tls=message.tls,
        date_header=message.date_header,
        from_header=message.from_header,
        attachments=tuple(
            Attachment(a.filename, a.content_type, a.size) for a in message.attachments
        ),
        duplicate_of=message.duplicate_of,
        auth=message.auth,
        raw_kept=reader.is_raw_kept(ref),
        recipients=tuple(reader.list_decisions(ref)),
        jobs=tuple((job, tuple(reader.job_attempts(job.id))) for job in reader.find_jobs(ref)),
        sent=tuple(reader.read_sent(ref)),
    )
