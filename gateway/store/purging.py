"""Retention's deletes in the SQLite store: a batch of old records, refusals, sent notices.

The SQL of each batch, run by the Store's writer (db.py `purge_*`); retention.py decides when
and loops over the batches, for either backend. Nothing here chooses what is past retention.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from gateway.store.messages import iso
from gateway.vocabulary import JobState

__all__ = ["PENDING_STATES", "Purged", "purge_message", "purge_messages", "purge_refusals"]

# Jobs still to be delivered keep their message, and themselves, whatever their age.
PENDING_STATES = (JobState.QUEUED, JobState.IN_FLIGHT, JobState.DEFERRED, JobState.HELD)
_PENDING = PENDING_STATES


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows deleted, by table."""

    messages: int = 0
    message_recipients: int = 0
    raw_messages: int = 0
    jobs: int = 0
    attempts: int = 0
    refusals: int = 0
    sent_notices: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


def purge_messages(conn: sqlite3.Connection, *, before: datetime, limit: int) -> Purged:
    marks = ",".join("?" * len(_PENDING))
    rows = conn.execute(
        "SELECT reference FROM messages AS m WHERE received_at < ? AND NOT EXISTS ("
        f" SELECT 1 FROM jobs AS j WHERE j.reference = m.reference AND j.state IN ({marks}))"
        " ORDER BY received_at LIMIT ?",
        (iso(before), *_PENDING, limit),
    ).fetchall()
    return _purge_references(conn, [row[0] for row in rows])


def purge_message(
    conn: sqlite3.Connection, reference: str, *, should_keep_jobs: bool = False
) -> Purged:
    """Delete one message's record now, whatever its jobs' state; `should_keep_jobs` leaves
    its jobs and their attempts behind, as a hand-made repair of the file might.

    Retention itself waits for the jobs to finish (`purge_records`); this is for tools and
    tests that stand in for what happens to a store outside the gateway.
    """
    return _purge_references(conn, [reference], should_keep_jobs=should_keep_jobs)


def _purge_references(
    conn: sqlite3.Connection, references: Sequence[str], *, should_keep_jobs: bool = False
) -> Purged:
    keys = [(reference,) for reference in references]

    def delete(sql: str) -> int:
        return conn.executemany(sql, keys).rowcount

    # Children first: attempts belong to jobs, recipients and raw bytes to messages.
    jobs = Purged()
    if not should_keep_jobs:
        jobs = Purged(
            attempts=delete(
                "DELETE FROM attempts WHERE job_id IN (SELECT id FROM jobs WHERE reference = ?)"
            ),
            jobs=delete("DELETE FROM jobs WHERE reference = ?"),
        )
    return jobs + Purged(
        raw_messages=delete("DELETE FROM raw_messages WHERE reference = ?"),
        message_recipients=delete("DELETE FROM message_recipients WHERE reference = ?"),
        messages=delete("DELETE FROM messages WHERE reference = ?"),
    )


def purge_refusals(conn: sqlite3.Connection, *, before: datetime, limit: int) -> int:
    cursor = conn.execute(
        "DELETE FROM refusals WHERE reference IN"
        " (SELECT reference FROM refusals WHERE at < ? ORDER BY at LIMIT ?)",
        (iso(before), limit),
    )
    return cursor.rowcount
