"""PostgreSQL rows as the store's values: one mapper per value, for every module that reads.

Rows come from psycopg's dict_row: timestamps as aware datetimes, JSONB as lists and dicts,
so each mapper only names the columns (the SQLite store's mappers parse its text columns
themselves: outbox.Job.from_row, queries.py). Rows of a join (postgres/records.py's attempts,
operator.py's postmaster mail) are mapped beside their one query. Nothing here reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.mail.evidence import Attachment
from gateway.store.messages import RefusalRecord
from gateway.store.outbox import Attempt, Job
from gateway.store.queries import StoredMessage
from gateway.store.queueactions import OperatorAction, QueueAction, QueuedJob
from gateway.vocabulary import JobKind, JobState

__all__ = [
    "action_from_row",
    "attempt_from_row",
    "job_from_row",
    "message_from_row",
    "node_attempt_from_row",
    "queued_from_row",
    "refusal_from_row",
]

Row = Mapping[str, Any]


def job_from_row(row: Row) -> Job:
    """A row of jobs as the SQLite store's Job value."""
    return Job(
        id=row["id"],
        reference=row["reference"],
        kind=JobKind(row["kind"]),
        office=row["office"],
        mail_from=row["mail_from"],
        recipients=tuple(row["recipients"]),
        destination=row["destination"],
        route=row["route"],
        state=JobState(row["state"]),
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        attempts=row["attempts"],
        last_reply=row["last_reply"],
        about_job=row["about_job"],
    )


def queued_from_row(row: Row) -> QueuedJob:
    """A row of jobs as `gateway queue` shows it: the job, the node that queued it, its lease."""
    return QueuedJob(
        job_from_row(row),
        node=row["node"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
    )


def action_from_row(row: Row) -> OperatorAction:
    """A row of operator_actions, the journal of `gateway queue`'s changes."""
    return OperatorAction(
        id=row["id"],
        action=QueueAction(row["action"]),
        requested_at=row["requested_at"],
        operator=row["operator"],
        job_ids=tuple(row["job_ids"]),
        filter=row["filter"],
    )


def attempt_from_row(row: Row) -> Attempt:
    """A row of attempts, without its node (a reader that names nodes adds it)."""
    return Attempt(
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        host=row["host"],
        code=row["code"],
        reply=row["reply"],
        outcome=JobState(row["outcome"]),
    )


def node_attempt_from_row(row: Row) -> Attempt:
    """A row of attempts with the node that made it, for the readers that name nodes."""
    return replace(attempt_from_row(row), node=row["node"])


def message_from_row(row: Row) -> StoredMessage:
    """A row of messages as the received message's record."""
    return StoredMessage(
        reference=row["reference"],
        received_at=row["received_at"],
        session_id=row["session_id"],
        peer_ip=row["peer_ip"],
        peer_port=row["peer_port"],
        helo=row["helo"],
        tls=row["tls"],
        mail_from=row["mail_from"],
        recipients=tuple(row["recipients"]),
        message_id=row["message_id"],
        subject=row["subject"],
        date_header=row["date_header"],
        from_header=row["from_header"],
        size=row["size"],
        sha256=row["sha256"],
        attachments=tuple(
            Attachment(a["filename"], a["content_type"], a["size"]) for a in row["attachments"]
        ),
        a_numbers=tuple(row["a_numbers"]),
        mime_truncated=row["mime_truncated"],
        outcome=row["outcome"],
        reply=row["reply"],
        notice=row["notice"],
        duplicate_of=row["duplicate_of"],
        auth=row["auth"],
        sender_authenticated=row["sender_authenticated"],
        refused_for=row["refused_for"],
    )


def refusal_from_row(row: Row) -> RefusalRecord:
    """A row of refusals (a recipient refused at RCPT) as its record."""
    return RefusalRecord(
        reference=row["reference"],
        at=row["at"],
        session_id=row["session_id"],
        peer_ip=row["peer_ip"],
        helo=row["helo"],
        mail_from=row["mail_from"],
        recipient=row["recipient"],
        reason=row["reason"],
        reply=row["reply"],
        office=row["office"],
        phase=row["phase"],
    )
