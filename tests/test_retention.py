"""Retention: records and raw messages past their period are purged, pending work never is.

The store is filled through real SMTP sessions at old clock times (and a real delivery worker
for a delivered job), then purged as of a later time; the rows left are read back from the
file with sqlite3, and the audit events are captured as event dicts. The scheduled run is
checked end to end on `gateway serve`, restarted with a later --as-of.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.app import build_delivery
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.notices.render import NoticeRenderer
from gateway.store.db import connect, iso
from gateway.store.outbox import Attempt, JobState, Outbox, list_jobs
from gateway.store.queries import read_message
from gateway.store.retention import Purged, purge_once, purge_records, records_cutoff
from tests.conftest import (
    AFTER_CUTOFF,
    BEFORE_PORTAL,
    OTHER_RETIRED,
    RETIRED,
    SENDER,
    Gateway,
    GatewayFactory,
    office,
    other_office,
)
from tests.polling import eventually
from tests.smtpclient import message, transaction
from tests.test_metrics import metrics_url, scrape, value
from tests.test_serve_process import Attempt as Filing
from tests.test_serve_process import read_store, serving, smtp_session, write_config
from tests.test_serve_process import send as send_filing

RECENT = AFTER_CUTOFF + timedelta(days=300)
PURGE_AT = AFTER_CUTOFF + timedelta(days=380)  # a year and a bit after the old mail
RETENTION_DAYS = 365


def rows(gw: Gateway, sql: str, *params: Any) -> list[sqlite3.Row]:
    """The store's tables as SQL sees them: this tests the schema, so it may ask it directly
    (elsewhere tests ask the store's interface)."""
    with contextlib.closing(sqlite3.connect(gw.settings.storage.database)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


async def start(start_gateway: GatewayFactory, tmp_path: Path, **storage: Any) -> Gateway:
    """The founding office, and one that refuses at RCPT; raw messages kept for 90 days."""
    gw: Gateway = await start_gateway(
        offices=[office(), other_office(response="reject-at-rcpt")],
        storage={"keep_raw": True, "raw_retention_days": 90, **storage},
        delivery={"outbox_dir": str(tmp_path / "notices"), "poll_interval": 0.05},
    )
    return gw


async def filing(gw: Gateway, at: datetime, number: int, *, sender: str = SENDER) -> str:
    """One message to the retired address at `at`; returns its reference."""
    gw.clock.now = at
    content = message(message_id=f"<filing-{number}@lawfirm.example>")
    _, final = await transaction(gw.port, [RETIRED], content, sender)
    assert final is not None
    (row,) = rows(gw, "SELECT reference FROM messages WHERE received_at = ?", iso(at))
    return str(row["reference"])


async def refusal(gw: Gateway, at: datetime) -> str:
    """One recipient refused at RCPT at `at`; returns the refusal's reference."""
    gw.clock.now = at
    replies, final = await transaction(gw.port, [OTHER_RETIRED])
    assert [r.code for r in replies] == [550]
    assert final is None
    (row,) = rows(gw, "SELECT reference FROM refusals WHERE at = ?", iso(at))
    return str(row["reference"])


async def deliver_everything_due(gw: Gateway) -> None:
    """Run the real worker (file mode) until no job is waiting, then stop it."""
    worker = build_delivery(gw.settings, gw.store, gw.clock, NoticeRenderer(gw.notices), None)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: not rows(gw, "SELECT 1 FROM jobs WHERE state != 'delivered'"))
    finally:
        await worker.stop(1.0)
        await asyncio.wait_for(task, 5)


def references(gw: Gateway, table: str) -> set[str]:
    return {str(r["reference"]) for r in rows(gw, f"SELECT reference FROM {table}")}


async def test_records_past_retention_go_and_recent_or_pending_ones_stay(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await start(start_gateway, tmp_path, retention_days=RETENTION_DAYS)
    relayed = await filing(gw, BEFORE_PORTAL, 1)  # relayed: its raw bytes then get an end date
    await deliver_everything_due(gw)
    pending = await filing(gw, AFTER_CUTOFF, 2)  # its notice is still queued
    unanswered = await filing(gw, AFTER_CUTOFF + timedelta(minutes=1), 3, sender="")
    old_refusal = await refusal(gw, AFTER_CUTOFF + timedelta(minutes=2))
    recent = await filing(gw, RECENT, 4, sender="")
    recent_refusal = await refusal(gw, RECENT + timedelta(minutes=1))

    with capture_logs() as events:
        purged = await purge_once(gw.store, gw.settings.storage, PURGE_AT)

    assert references(gw, "messages") == {pending, recent}
    assert references(gw, "message_recipients") == {pending, recent}
    assert references(gw, "refusals") == {recent_refusal}
    assert references(gw, "jobs") == {pending}
    assert rows(gw, "SELECT * FROM attempts") == []
    # Raw bytes past raw_retention_days go even where the record stays; the recent one stays.
    assert references(gw, "raw_messages") == {recent}
    assert old_refusal not in references(gw, "refusals")
    assert {relayed, unanswered}.isdisjoint(references(gw, "messages"))

    assert purged == Purged(
        messages=2, message_recipients=2, raw_messages=0, jobs=1, attempts=1, refusals=1
    )
    (raw_event,) = [e for e in events if e["event"] == "store.raw_purged"]
    assert raw_event["count"] == 3  # the relayed, the pending and the unanswered message's
    (event,) = [e for e in events if e["event"] == "store.records_purged"]
    assert event == {
        "event": "store.records_purged",
        "log_level": "info",
        "before": iso(PURGE_AT - timedelta(days=RETENTION_DAYS)),
        "retention_days": RETENTION_DAYS,
        "messages": 2,
        "message_recipients": 2,
        "raw_messages": 0,
        "jobs": 1,
        "attempts": 1,
        "refusals": 1,
    }
    with contextlib.closing(connect(gw.settings.storage.database, readonly=True)) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_jobs_queued_in_flight_or_deferred_are_never_purged_failed_ones_are(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await start(start_gateway, tmp_path, retention_days=RETENTION_DAYS)
    refs = [await filing(gw, AFTER_CUTOFF + timedelta(minutes=n), n) for n in range(4)]
    outbox = Outbox(gw.store, owner="test")
    # Take three jobs as the worker would; one stays in flight, two get an outcome.
    in_flight, deferred, failed = await outbox.claim(
        AFTER_CUTOFF + timedelta(hours=1), limit=3, lease_s=600, busy={}, per_route=3
    )
    at = AFTER_CUTOFF + timedelta(hours=1)
    await outbox.finish(
        deferred,
        Attempt(at, at, "mx.lawfirm.example", 451, "try later", JobState.DEFERRED),
        next_attempt_at=at + timedelta(hours=4),
    )
    await outbox.finish(
        failed, Attempt(at, at, "mx.lawfirm.example", 550, "no such user", JobState.FAILED)
    )

    purged = await purge_records(gw.store, before=PURGE_AT)

    with contextlib.closing(connect(gw.settings.storage.database, readonly=True)) as conn:
        states = {job.reference: job.state for job in list_jobs(conn)}
    assert states == {
        in_flight.reference: JobState.IN_FLIGHT,
        deferred.reference: JobState.DEFERRED,
        refs[3]: JobState.QUEUED,
    }
    assert references(gw, "messages") == set(states)
    assert (purged.messages, purged.jobs, purged.attempts) == (1, 1, 1)
    assert failed.reference not in references(gw, "messages")


async def test_purging_in_small_batches_purges_everything_past_the_cutoff(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await start(start_gateway, tmp_path)
    for n in range(5):
        await filing(gw, AFTER_CUTOFF + timedelta(minutes=n), n, sender="")
    for n in range(3):
        await refusal(gw, AFTER_CUTOFF + timedelta(minutes=10 + n))
    kept = await filing(gw, RECENT, 9, sender="")

    purged = await purge_records(gw.store, before=RECENT, batch=2)

    assert (purged.messages, purged.message_recipients, purged.refusals) == (5, 5, 3)
    assert references(gw, "messages") == {kept}
    assert rows(gw, "SELECT * FROM refusals") == []


async def test_retention_days_0_keeps_every_record(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await start(start_gateway, tmp_path)  # retention_days defaults to 0
    assert gw.settings.storage.retention_days == 0
    reference = await filing(gw, AFTER_CUTOFF, 1, sender="")
    with capture_logs() as events:
        purged = await purge_once(gw.store, gw.settings.storage, PURGE_AT + timedelta(days=9999))
    assert purged == Purged()
    assert references(gw, "messages") == {reference}
    assert "store.records_purged" not in [e["event"] for e in events]


CUTOFFS = {
    "forever": (0, None),
    "one-day": (1, datetime(2017, 9, 12, 15, 0, tzinfo=UTC)),
    "ten-years": (3650, datetime(2007, 9, 16, 15, 0, tzinfo=UTC)),
}


@pytest.mark.parametrize(("days", "cutoff"), CUTOFFS.values(), ids=CUTOFFS.keys())
def test_records_cutoff(days: int, cutoff: datetime | None) -> None:
    assert records_cutoff(AFTER_CUTOFF, days) == cutoff


BAD_RETENTION = {
    "negative": {"GATEWAY_STORAGE__RETENTION_DAYS": "-1"},
    "shorter-than-raw": {"GATEWAY_STORAGE__RETENTION_DAYS": "30"},
}


@pytest.mark.parametrize("environ", BAD_RETENTION.values(), ids=BAD_RETENTION.keys())
def test_a_bad_retention_names_its_key(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as problem:
        load_settings(environ=environ)
    assert problem.value.key == "storage.retention_days"


# ---------------------------------------------------------------------------------------------
# The scheduled run, end to end


async def test_gateway_serve_purges_at_start_logs_it_and_counts_it(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, edit=("state_dir = ", f"retention_days = {RETENTION_DAYS}\nstate_dir = ")
    )
    async with serving(config, as_of="2017-09-13T10:00:00-05:00") as served:
        async with smtp_session(served.port) as client, asyncio.timeout(30):
            reply = await send_filing(client, Filing(1, "", RETIRED))
            await client.quit()
        assert await served.gateway.stop() == 0
    assert served.gateway.find("store.records_purged") is None  # nothing was old enough

    async with serving(config, as_of="2019-01-01T10:00:00-06:00") as later:
        async with asyncio.timeout(30):
            event = await later.gateway.event("store.records_purged")
        scraped = await scrape(metrics_url(later.gateway))
        assert await later.gateway.stop() == 0

    assert event["messages"] == 1
    # A year before the --as-of clock, which had run on for a moment when the purge ran.
    before = datetime.fromisoformat(event["before"]) - datetime(2018, 1, 1, 16, tzinfo=UTC)
    assert timedelta(0) <= before < timedelta(seconds=60)
    assert value(scraped, "gateway_store_purged_rows_total", table="messages") == 1
    db = tmp_path / "state" / "gateway.sqlite3"
    assert read_store(db, lambda conn: read_message(conn, reply.reference)) is None
