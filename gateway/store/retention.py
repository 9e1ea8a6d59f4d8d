"""Retention: the scheduled purge of records and raw messages past their period.

Three periods, all in [storage]: `raw_retention_days` ends the keeping of a refused message's
raw bytes (set per message when it was received; a copy still to be relayed or forwarded
stays until it is sent), and `retention_days` (0: forever) ends the
record itself: the message with its recipients, raw bytes, jobs and their attempts, and
refusals at RCPT. A message with a job still to be delivered (queued, in flight, deferred) is
never purged, however old. `notice_retention_days` (0: forever) ends the keeping of the
notices, advisories and bounces as sent (sentmail.py), counted from when each was sent, on
its own: a kept notice may outlive its message's record or go before it.

Purges go through the store's writer a batch at a time, so no purge holds the write lock for
long: sessions' records are committed between the batches. Each purge that deleted anything
leaves an audit event saying what and up to when. This module decides nothing about mail.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta

import structlog

from gateway.clock import Clock
from gateway.config import StorageSettings
from gateway.errors import StoreError
from gateway.store.db import Store, iso
from gateway.store.outbox import PENDING_STATES
from gateway.store.sentmail import purge_sent

__all__ = [
    "BATCH",
    "Purged",
    "purge_message",
    "purge_notices",
    "purge_once",
    "purge_periodically",
    "purge_raw",
    "purge_records",
    "records_cutoff",
]

log = structlog.get_logger()

# Rows of one table (messages: with their dependent rows) per transaction.
BATCH = 500
# How often the purge runs; retention is counted in days, so hourly is prompt enough.
EVERY_S = 3600.0
# Jobs still to be delivered keep their message, and themselves, whatever their age.
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


def records_cutoff(now: datetime, retention_days: int) -> datetime | None:
    """Records received before this instant are past retention; None: they are kept forever."""
    if retention_days == 0:
        return None
    return (now - timedelta(days=retention_days)).astimezone(UTC)


async def purge_records(store: Store, *, before: datetime, batch: int = BATCH) -> Purged:
    """Delete the records received before `before`, `batch` messages (or refusals) per
    transaction, keeping every message that has a job still to be delivered.

    Raises:
        StoreError: a batch could not be committed (the batches before it stay purged).
    """
    cutoff = iso(before.astimezone(UTC))
    total = Purged()
    while True:
        done = await store.write(functools.partial(_purge_messages, before=cutoff, limit=batch))
        total += done
        if done.messages < batch:
            break
    while True:
        refusals = await store.write(functools.partial(_purge_refusals, before=cutoff, limit=batch))
        total += Purged(refusals=refusals)
        if refusals < batch:
            return total


def _purge_messages(conn: sqlite3.Connection, *, before: str, limit: int) -> Purged:
    marks = ",".join("?" * len(_PENDING))
    rows = conn.execute(
        "SELECT reference FROM messages AS m WHERE received_at < ? AND NOT EXISTS ("
        f" SELECT 1 FROM jobs AS j WHERE j.reference = m.reference AND j.state IN ({marks}))"
        " ORDER BY received_at LIMIT ?",
        (before, *_PENDING, limit),
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


def _purge_refusals(conn: sqlite3.Connection, *, before: str, limit: int) -> int:
    cursor = conn.execute(
        "DELETE FROM refusals WHERE reference IN"
        " (SELECT reference FROM refusals WHERE at < ? ORDER BY at LIMIT ?)",
        (before, limit),
    )
    return cursor.rowcount


async def purge_raw(store: Store, now: datetime, *, batch: int = BATCH) -> int:
    """Delete raw messages whose own retention ended before `now`, `batch` per transaction.

    Raises:
        StoreError: a batch could not be committed.
    """
    total = 0
    while True:
        count = await store.purge_expired_raw(now, limit=batch)
        total += count
        if count < batch:
            return total


async def purge_notices(store: Store, *, before: datetime, batch: int = BATCH) -> int:
    """Delete the notices kept as sent before `before`, `batch` per transaction; how many.

    Raises:
        StoreError: a batch could not be committed (the batches before it stay purged).
    """
    total = 0
    while True:
        count = await store.write(
            functools.partial(purge_sent, before=before.astimezone(UTC), limit=batch)
        )
        total += count
        if count < batch:
            return total


async def purge_once(store: Store, storage: StorageSettings, now: datetime) -> Purged:
    """Run the purges as of `now` and log what they deleted; returns the records purged.

    A failure is logged (store.purge_failed), not raised: the next run tries again.
    """
    try:
        raw = await purge_raw(store, now)
        if raw:
            log.info("store.raw_purged", count=raw)
        purged = await _purge_records_due(store, storage, now)
        notices = await _purge_notices_due(store, storage, now)
    except StoreError as exc:
        log.error("store.purge_failed", error=str(exc))
        return Purged()
    return replace(purged, sent_notices=notices)


async def _purge_notices_due(store: Store, storage: StorageSettings, now: datetime) -> int:
    before = records_cutoff(now, storage.notice_retention_days)
    if before is None:
        return 0
    count = await purge_notices(store, before=before)
    if count:
        log.info(
            "store.notices_purged",
            before=iso(before),
            notice_retention_days=storage.notice_retention_days,
            count=count,
        )
    return count


async def _purge_records_due(store: Store, storage: StorageSettings, now: datetime) -> Purged:
    before = records_cutoff(now, storage.retention_days)
    if before is None:
        return Purged()
    purged = await purge_records(store, before=before)
    if purged.total:
        log.info(
            "store.records_purged",
            before=iso(before),
            retention_days=storage.retention_days,
            messages=purged.messages,
            message_recipients=purged.message_recipients,
            raw_messages=purged.raw_messages,
            jobs=purged.jobs,
            attempts=purged.attempts,
            refusals=purged.refusals,
        )
    return purged


async def purge_periodically(
    store: Store, clock: Clock, storage: StorageSettings, *, every_s: float = EVERY_S
) -> None:
    """Purge at once, then every `every_s` seconds, until cancelled."""
    while True:
        await purge_once(store, storage, clock())
        await asyncio.sleep(every_s)
