"""The store interface's other parts on both backends: the composer's reads (MailRecords),
the audit anchors (HeadStore) and retention's batches, through store/backend.py as the
gateway builds them (the `backend` fixture of test_store_contract.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from gateway.store.anchors import Anchor, Checkpoint, load_checkpoints
from gateway.store.backend import StoreLocation, head_store, open_records, queue_gauges
from gateway.store.outbox import Attempt
from gateway.store.postgres.records import find_shared_attempts
from gateway.store.records import AttemptRecord, Filters, find_attempts
from gateway.store.retention import purge_records
from gateway.vocabulary import JobState
from tests.postgres import postgres
from tests.test_store_contract import (
    BOUND_S,
    OFFICE,
    SENDER,
    Backend,
    backend,
    refusal,
    relay_record,
)

__all__ = ["backend", "postgres"]


def location(backend: Backend) -> StoreLocation:
    return StoreLocation(backend.path or Path("unused"), "mx1", backend.dsn)


async def test_the_composer_reads_what_the_store_recorded(backend: Backend) -> None:
    store = await backend.open_store()
    outbox = backend.outbox(store, "mx1:1:100")
    record = relay_record()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        (job,) = await outbox.claim(datetime.now(UTC), limit=1, lease_s=300, busy={}, per_route=9)
        now = datetime.now(UTC).replace(microsecond=0)
        attempt = Attempt(now, now, "legacy.example", 451, "4.3.0 later", JobState.DEFERRED)
        await outbox.finish(job, attempt, next_attempt_at=now + timedelta(minutes=5))
    records = await asyncio.to_thread(open_records, location(backend))
    try:
        message = await asyncio.to_thread(records.read_message, record.reference)
        decisions = await asyncio.to_thread(records.list_decisions, record.reference, office=OFFICE)
        raw = await asyncio.to_thread(records.read_raw, record.reference)
        read = await asyncio.to_thread(records.read_job, job.id)
        tried = await asyncio.to_thread(records.job_attempts, job.id)
        missing = await asyncio.to_thread(records.read_message, "20170913-NOSUCHREFERENC")
    finally:
        records.close()
    assert message is not None
    assert message.reference == record.reference
    assert [d.recipient for d in decisions] == [r.recipient for r in record.recipients]
    assert raw == record.raw
    assert read is not None
    assert (read.id, read.state, read.attempts) == (job.id, JobState.DEFERRED, 1)
    assert tried == [attempt]
    assert missing is None


async def test_a_chains_head_is_saved_once_however_often_it_is_saved(backend: Backend) -> None:
    await backend.open_store()  # the schema
    heads = head_store(location(backend))
    at = datetime.now(UTC).replace(microsecond=0)
    anchor = Anchor("chain-1", at, "-", "f" * 64)
    try:
        for _ in range(2):
            await asyncio.to_thread(heads.save_head, anchor, Checkpoint("chain-1", 5, "a" * 64, at))
        await asyncio.to_thread(heads.save_head, None, Checkpoint("chain-1", 9, "b" * 64, at))
    finally:
        heads.close()
    if backend.dsn is None:
        saved = await backend._read(load_checkpoints)
        assert [(c.seq, c.hash[0]) for c in saved["chain-1"]] == [(5, "a"), (9, "b")]
    else:
        with psycopg.connect(backend.dsn) as conn:
            rows = conn.execute("SELECT seq, left(hash, 1) FROM audit_checkpoints").fetchall()
            chains = conn.execute("SELECT count(*) FROM audit_chains").fetchone()
        assert sorted(rows) == [(5, "a"), (9, "b")]
        assert chains == (1,)


async def test_retention_purges_finished_records_and_keeps_pending_ones(backend: Backend) -> None:
    store = await backend.open_store()
    outbox = backend.outbox(store, "mx1:1:100")
    done, pending = relay_record(), relay_record()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(done)
        (job,) = await outbox.claim(datetime.now(UTC), limit=1, lease_s=300, busy={}, per_route=9)
        now = datetime.now(UTC)
        sent = Attempt(now, now, "legacy.example", 250, "2.0.0 ok", JobState.DELIVERED)
        await outbox.finish(job, sent)
        await store.record_message(pending)
        await store.record_refusal(refusal())
        purged = await purge_records(store, before=datetime.now(UTC) + timedelta(days=1))
        kept = await backend.message(store, pending.reference)
        gone = await backend.message(store, done.reference)
    assert (purged.messages, purged.jobs, purged.attempts, purged.refusals) == (1, 1, 1, 1)
    assert purged.raw_messages == 1
    assert gone is None
    assert kept is not None


async def _attempts(backend: Backend, filters: Filters) -> list[AttemptRecord]:
    if backend.dsn is not None:
        return await asyncio.to_thread(find_shared_attempts, backend.dsn, filters)
    return await backend._read(lambda conn: find_attempts(conn, filters))


async def test_the_audit_finds_the_same_attempts_on_both_backends(backend: Backend) -> None:
    # One filing through mx1, one refusal through mx2, as two nodes on one shared store.
    mx1, mx2 = await backend.open_store("mx1"), await backend.open_store("mx2")
    filed, refused = relay_record(), refusal()
    async with asyncio.timeout(BOUND_S):
        await mx1.record_message(filed)
        await mx2.record_refusal(refused)
        everything = await _attempts(backend, Filters())
        wanted = {
            "sender": await _attempts(backend, Filters(sender=SENDER.upper())),
            "domain": await _attempts(backend, Filters(sender_domain="LAWFIRM.example")),
            "subdomain": await _attempts(backend, Filters(sender_domain="firm.example")),
            "office": await _attempts(backend, Filters(office=OFFICE)),
            "reference": await _attempts(backend, Filters(reference=refused.reference.lower())),
            "refused": await _attempts(backend, Filters(decision="refused")),
            "later": await _attempts(backend, Filters(since=refused.at + timedelta(days=1))),
        }
    assert sorted(a.kind for a in everything) == ["message", "refusal"]
    found = {name: {a.reference for a in attempts} for name, attempts in wanted.items()}
    both = {filed.reference, refused.reference}
    assert found == {
        "sender": both,
        "domain": both,
        "subdomain": set(),
        "office": both,
        "reference": {refused.reference},
        "refused": {refused.reference},
        "later": set(),
    }
    nodes = {a.reference: a.node for a in everything}
    # The shared store names the node of each attempt; the SQLite file is one host's own.
    expected = ("mx1", "mx2") if backend.dsn else (None, None)
    assert (nodes[filed.reference], nodes[refused.reference]) == expected


async def test_the_queue_gauges_count_every_nodes_jobs_in_one_read(backend: Backend) -> None:
    mx1, mx2 = await backend.open_store("mx1"), await backend.open_store("mx2")
    first, second, third = relay_record(), relay_record(), relay_record()
    async with asyncio.timeout(BOUND_S):
        await mx1.record_message(first)
        await mx1.record_message(second)
        await mx2.record_message(third)
        outbox = backend.outbox(mx2, "mx2:1:100")
        taken = await outbox.claim(datetime.now(UTC), limit=2, lease_s=300, busy={}, per_route=9)
        now = datetime.now(UTC)
        refused = Attempt(now, now, "legacy.example", 550, "5.1.1 no such user", JobState.FAILED)
        await outbox.finish(taken[1], refused)
        gauges = queue_gauges(location(backend))
        try:
            depth = await asyncio.to_thread(gauges.read_depth)
        finally:
            gauges.close()
    by_state = depth.by_state()
    assert by_state == {
        JobState.QUEUED: 1,
        JobState.IN_FLIGHT: 1,
        JobState.DEFERRED: 0,
        JobState.HELD: 0,
        JobState.FAILED: 1,
    }
    # The waiting jobs were queued with their filings, at NOW.
    assert depth.oldest_waiting is not None
    assert abs((depth.oldest_waiting - first.received_at).total_seconds()) < 1
    if backend.dsn is None:
        assert {node for node, _ in depth.jobs} == {None}  # one host's file has no node
    else:
        # Each job counts for the node that queued it, whichever node holds or failed it.
        assert sum(n for (node, _), n in depth.jobs.items() if node == "mx1") == 2
        assert sum(n for (node, _), n in depth.jobs.items() if node == "mx2") == 1
