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
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import structlog

from gateway.clock import Clock
from gateway.config import StorageSettings
from gateway.errors import StoreError
from gateway.store.interface import RecordStore
from gateway.store.messages import iso
from gateway.store.purging import Purged, purge_message

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


def records_cutoff(now: datetime, retention_days: int) -> datetime | None:
    """Records received before this instant are past retention; None: they are kept forever."""
    if retention_days == 0:
        return None
    return (now - timedelta(days=retention_days)).astimezone(UTC)


async def purge_records(store: RecordStore, *, before: datetime, batch: int = BATCH) -> Purged:
    """Delete the records received before `before`, `batch` messages (or refusals) per
    transaction, keeping every message that has a job still to be delivered.

    Raises:
        StoreError: a batch could not be committed (the batches before it stay purged).
    """
    cutoff = before.astimezone(UTC)
    total = Purged()
    while True:
        done = await store.purge_messages(cutoff, limit=batch)
        total += done
        if done.messages < batch:
            break
    while True:
        refusals = await store.purge_refusals(cutoff, limit=batch)
        total += Purged(refusals=refusals)
        if refusals < batch:
            return total


async def purge_raw(store: RecordStore, now: datetime, *, batch: int = BATCH) -> int:
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


async def purge_notices(store: RecordStore, *, before: datetime, batch: int = BATCH) -> int:
    """Delete the notices kept as sent before `before`, `batch` per transaction; how many.

    Raises:
        StoreError: a batch could not be committed (the batches before it stay purged).
    """
    total = 0
    while True:
        count = await store.purge_sent(before.astimezone(UTC), limit=batch)
        total += count
        if count < batch:
            return total


async def purge_once(store: RecordStore, storage: StorageSettings, now: datetime) -> Purged:
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


async def _purge_notices_due(store: RecordStore, storage: StorageSettings, now: datetime) -> int:
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


async def _purge_records_due(store: RecordStore, storage: StorageSettings, now: datetime) -> Purged:
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
    store: RecordStore, clock: Clock, storage: StorageSettings, *, every_s: float = EVERY_S
) -> None:
    """Purge at once, then every `every_s` seconds, until cancelled."""
    while True:
        await purge_once(store, storage, clock())
        await asyncio.sleep(every_s)
