"""The store interface: what the serving path asks of a store, whichever backend holds it.

Two backends satisfy these Protocols: the SQLite file of one host (db.py, outbox.py) and
PostgreSQL shared by several (postgres/). backend.py picks one, once, at start, from
`[storage] url`; the SMTP side, the delivery worker and its composer, the audit anchors and
retention see only these; `gateway audit` reads through AuditReader. The values passed
(MessageRecord, Job, Attempt...) are the backends' common ones. This module defines no
behaviour and imports no driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from gateway.store.anchors import Anchor, Checkpoint
from gateway.store.browse import Key, Page
from gateway.store.messages import MessageRecord, NoticeCheck, RefusalRecord
from gateway.store.outbox import Attempt, Bounce, Job
from gateway.store.purging import Purged
from gateway.store.queries import StoredDecision, StoredMessage
from gateway.store.queueactions import OperatorAction
from gateway.store.queuedepth import QueueDepth
from gateway.store.receipts import Receipt
from gateway.store.records import AttemptRecord, Filters
from gateway.store.sentmail import SentNotice
from gateway.vocabulary import JobState

__all__ = [
    "AuditReader",
    "HeadStore",
    "JobQueue",
    "MailRecords",
    "QueueGauges",
    "ReceiptReader",
    "RecordStore",
]


class RecordStore(Protocol):
    """The durable record the SMTP side writes before it answers, and retention trims."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def is_alive(self) -> bool: ...

    async def ping(self, at: datetime) -> None: ...

    async def record_message(
        self, record: MessageRecord, check: NoticeCheck | None = None
    ) -> MessageRecord: ...

    async def record_refusal(self, record: RefusalRecord) -> None: ...

    async def purge_expired_raw(self, now: datetime, *, limit: int) -> int: ...

    async def purge_messages(self, before: datetime, *, limit: int) -> Purged: ...

    async def purge_refusals(self, before: datetime, *, limit: int) -> int: ...

    async def purge_sent(self, before: datetime, *, limit: int) -> int: ...


class JobQueue(Protocol):
    """The outbox as the delivery worker uses it; every call returns once it is durable."""

    @property
    def owner(self) -> str: ...

    async def recover(self) -> int: ...

    async def claim(
        self, now: datetime, *, limit: int, lease_s: float, busy: Mapping[str, int], per_route: int
    ) -> list[Job]: ...

    async def finish(
        self,
        job: Job,
        attempt: Attempt,
        *,
        next_attempt_at: datetime | None = None,
        note: str | None = None,
        raw_keep_until: datetime | None = None,
        bounce: bool = False,
        sent: tuple[SentNotice, bytes] | None = None,
    ) -> Bounce | None: ...

    async def renew(self, job: Job, now: datetime, *, lease_s: float) -> bool: ...

    async def release(self, job: Job, now: datetime) -> None: ...

    async def take_operator_actions(self, now: datetime) -> list[OperatorAction]: ...


class MailRecords(Protocol):
    """Synchronous reads the composer makes (in threads or processes of its own)."""

    def read_message(self, reference: str) -> StoredMessage | None: ...

    def list_decisions(self, reference: str, *, office: str) -> list[StoredDecision]: ...

    def read_raw(self, reference: str) -> bytes | None: ...

    def read_job(self, job_id: int) -> Job | None: ...

    def job_attempts(self, job_id: int) -> list[Attempt]: ...

    def close(self) -> None: ...


class HeadStore(Protocol):
    """Where an audit chain's anchor and checkpoints go, from a thread of its own."""

    def save_head(self, anchor: Anchor | None, checkpoint: Checkpoint | None) -> None:
        """Save either or both, in one transaction; one already saved is kept.

        Raises:
            StoreError: the store cannot be written.
        """
        ...

    def close(self) -> None: ...


class AuditReader(Protocol):
    """Synchronous reads for `gateway audit` and the operator console: attempts (all, or a
    page by keyset: browse.py), one attempt's story (story.py), the notices kept as sent,
    the queue's jobs and the audit chains' anchors. Every read may raise StoreError."""

    def find_attempts(self, filters: Filters) -> list[AttemptRecord]: ...

    def browse_attempts(self, filters: Filters, *, before: Key | None, size: int) -> Page: ...

    def list_jobs(self, states: tuple[str, ...]) -> list[Job]:
        """The jobs in any of `states` (every job when empty), oldest first."""
        ...

    def read_message(self, reference: str) -> StoredMessage | None: ...

    def list_decisions(self, reference: str) -> list[StoredDecision]: ...

    def is_raw_kept(self, reference: str) -> bool: ...

    def find_jobs(self, reference: str, *, state: JobState | None = None) -> list[Job]: ...

    def job_attempts(self, job_id: int) -> list[Attempt]: ...

    def read_sent(self, reference: str) -> list[SentNotice]: ...

    def sent_data(self, reference: str, job_id: int) -> bytes | None: ...

    def load_anchors(self) -> dict[str, Anchor]: ...

    def load_checkpoints(self) -> dict[str, list[Checkpoint]]: ...

    def close(self) -> None: ...


class ReceiptReader(Protocol):
    """The public receipt page's one read, synchronous, from a thread of its own."""

    def read_receipt(self, reference: str) -> Receipt | None:
        """The receipt of `reference`, from whichever node took the attempt; None when there
        is none (unknown, malformed or purged: the page cannot tell them apart).

        Raises:
            StoreError: the store cannot be read.
        """
        ...

    def close(self) -> None: ...


class QueueGauges(Protocol):
    """/metrics' read of the queue, synchronous, in the scrape's thread."""

    def read_depth(self) -> QueueDepth:
        """Jobs per node and state, and the oldest waiting, in one read.

        Raises:
            StoreError: the store cannot be read.
        """
        ...

    def close(self) -> None: ...
