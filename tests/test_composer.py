"""The composer keeps one read-only store connection per thread from job to job: a record
committed after that connection opened must still be read, and close() lets go of them all."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from gateway.delivery.composer import ComposerSettings, MailBuilder
from gateway.notices.dkim import ensure_key
from gateway.notices.render import NoticeRenderer
from gateway.store.outbox import Job
from gateway.store.reading import SqliteRecords
from tests.conftest import SENDER, Gateway, GatewayFactory
from tests.smtpclient import message
from tests.test_delivery import file_a_filing


def builder_for(gw: Gateway) -> MailBuilder:
    key, _ = ensure_key(gw.notices)
    settings = ComposerSettings.from_settings(gw.settings)
    return MailBuilder(settings, NoticeRenderer(gw.notices), key)


async def notice_job(gw: Gateway, number: int) -> Job:
    reference = await file_a_filing(
        gw, content=message(subject=f"Filing {number}", message_id=f"<f{number}@law.example>")
    )
    (job,) = gw.jobs(reference=reference)
    return job


async def test_a_kept_connection_reads_records_committed_after_it_opened(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway()
    builder = builder_for(gw)
    first = await notice_job(gw, 1)
    mail = builder.build(first, gw.clock())
    assert first.reference.encode() in mail.data
    second = await notice_job(gw, 2)  # committed after the builder's connection opened
    again = builder.build(second, gw.clock())
    assert second.reference.encode() in again.data
    assert b"Filing 2" in again.data
    assert again.recipients == (SENDER,)
    builder.close()


async def test_close_closes_the_connection_of_every_thread(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway()
    builder = builder_for(gw)
    job = await notice_job(gw, 1)
    async with asyncio.timeout(10):
        await asyncio.to_thread(builder.build, job, gw.clock())
    builder.build(job, gw.clock())  # this thread: a second connection
    kept = [r._conn for r in builder._connections if isinstance(r, SqliteRecords)]
    assert len(kept) == 2
    builder.close()
    for conn in kept:
        assert conn is not None
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            _ = conn.total_changes


async def test_a_record_missing_from_an_old_snapshot_is_read_again_before_failing(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(storage={"keep_raw": True})
    builder = builder_for(gw)
    first = await notice_job(gw, 1)
    builder.build(first, gw.clock())
    # An open statement holds its snapshot, and later commits are invisible to it: here a
    # blob handle on the first filing's raw bytes (this test must not speak SQL itself).
    # (The builder closes that connection, and the handle with it.)
    records = builder._connection()
    assert isinstance(records, SqliteRecords)
    assert records._conn is not None
    held = records._conn.blobopen("raw_messages", "raw", 1, readonly=True)
    assert len(held) > 0
    second = await notice_job(gw, 2)
    mail = builder.build(second, gw.clock())
    assert second.reference.encode() in mail.data
    builder.close()
