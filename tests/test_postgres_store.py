"""The PostgreSQL store's own promises, against the tests' real server (tests/postgres.py):
a restart under load costs StoreErrors and nothing else, and service resumes by itself;
migrations run once however many nodes start; a newer store, or a server that would lose a
commit after the reply, is refused; each row names the node that wrote it.

What both backends promise alike is in test_store_contract.py. This module speaks SQL to the
server to look at what the store wrote (tests/test_sql_boundary.py lets it).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from gateway.errors import StoreError
from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import NoticeHistory
from gateway.store.outbox import Attempt
from gateway.store.postgres.messages import history
from gateway.store.postgres.outbox import PgOutbox
from gateway.store.postgres.queries import read_message
from gateway.store.postgres.reading import PgAuditReader
from gateway.store.postgres.schema import SCHEMA_VERSION, migrate
from gateway.store.postgres.store import PgStore, where
from gateway.store.records import Filters
from gateway.store.schema import SchemaTooNewError
from gateway.vocabulary import JobState
from tests.postgres import PostgresServer, postgres
from tests.test_store_contract import deliver_kept_notice, filing, refusal, relay_record

__all__ = ["postgres"]

BOUND_S = 60.0
_databases = itertools.count(1)


@pytest.fixture
async def dsn(postgres: PostgresServer) -> str:
    return await asyncio.to_thread(postgres.create_database, f"pgstore_{next(_databases)}")


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PgStore]:
    store = PgStore(dsn, node="mx1", wait_s=1.0)
    async with asyncio.timeout(BOUND_S):
        await store.open()
    yield store
    await store.close()


async def fetch(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with asyncio.timeout(BOUND_S), await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall()


async def execute(dsn: str, statement: str) -> None:
    async with (
        asyncio.timeout(BOUND_S),
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
    ):
        await conn.execute(statement)


# -- the server away and back ----------------------------------------------------------------------


async def test_a_crash_fails_calls_with_store_error_and_service_resumes_by_itself(
    postgres: PostgresServer, store: PgStore
) -> None:
    answered: list[str] = []  # what a session would have answered 250 (or 550) for
    failures: list[StoreError] = []
    done = asyncio.Event()

    async def session() -> None:
        for _ in range(5_000):  # bounded; `done` ends it long before
            if done.is_set():
                return
            record = relay_record()
            try:
                await store.record_message(record)
            except StoreError as exc:  # anything else fails the test
                failures.append(exc)
                await asyncio.sleep(0.05)
            else:
                answered.append(record.reference)

    async with asyncio.timeout(BOUND_S):
        sessions = asyncio.gather(*(session() for _ in range(4)))
        await asyncio.sleep(0.3)
        before = len(answered)
        # A crash: no checkpoint, recovery replays the WAL at the next start.
        await asyncio.to_thread(postgres.stop, "immediate")
        with pytest.raises(StoreError):
            await store.record_message(relay_record())
        with pytest.raises(StoreError):
            await store.ping(datetime.now(UTC))
        await asyncio.to_thread(postgres.start)
        await _until_it_works(store)
        after = len(answered)
        await asyncio.sleep(0.3)
        done.set()
        await sessions
    assert before > 0
    assert failures
    assert len(answered) > after  # the sessions themselves got through again
    for reference in answered:
        assert await read_message(store, reference) is not None, reference


async def _until_it_works(store: PgStore) -> None:
    for _ in range(300):  # the pool reconnects with backoff; 30 s at most
        try:
            await store.ping(datetime.now(UTC))
        except StoreError:
            await asyncio.sleep(0.1)
        else:
            return
    raise AssertionError("the store did not come back after the server did")


async def test_an_unreachable_server_is_refused_at_open_without_its_password(
    postgres: PostgresServer,
) -> None:
    nobody = postgres.dsn.replace(f":{postgres.port}/", ":1/")
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(StoreError) as refused:
            await PgStore(nobody, node="mx1", wait_s=0.5).open()
    assert "cannot open postgresql 127.0.0.1:1/gateway_test: connection failed" in str(
        refused.value
    )
    assert postgres.password not in str(refused.value)


async def test_a_wrong_password_is_refused_at_open_in_libpqs_words(
    postgres: PostgresServer,
) -> None:
    wrong = postgres.dsn.replace(postgres.password, "not-the-password")
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(StoreError) as refused:
            await PgStore(wrong, node="mx1", wait_s=0.5).open()
    assert 'password authentication failed for user "gateway"' in str(refused.value)
    assert "not-the-password" not in str(refused.value)


async def test_a_closed_store_fails_calls_with_store_error(store: PgStore) -> None:
    await store.close()
    assert not store.is_alive()
    with pytest.raises(StoreError, match="not open"):
        await store.record_refusal(refusal())
    await store.close()  # twice is harmless


def test_messages_name_the_server_never_the_password() -> None:
    assert where("postgresql://gw:secret@db.example:6432/gateway") == (
        "postgresql db.example:6432/gateway"
    )
    assert where("service=gateway") == "postgresql service gateway"
    assert "secret" not in where("postgresql://gw:secret@[broken")


# -- durability ------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["off", "local"])
async def test_a_database_whose_commits_may_be_lost_is_refused(dsn: str, setting: str) -> None:
    database = dsn.rpartition("/")[2]
    await execute(dsn, f"ALTER DATABASE {database} SET synchronous_commit = {setting}")
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(StoreError) as refused:
            await PgStore(dsn, node="mx1", wait_s=1.0).open()
    assert f"synchronous_commit is '{setting}'" in str(refused.value)


async def test_a_database_made_non_durable_after_open_gets_no_more_records(
    store: PgStore, dsn: str
) -> None:
    database = dsn.rpartition("/")[2]
    await execute(dsn, f"ALTER DATABASE {database} SET synchronous_commit = off")
    # The store's connections go (as at a failover); the pool's new ones are each checked.
    await execute(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND application_name = 'eservice-gateway mx1'",
    )
    record = relay_record()
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(StoreError):
            await store.record_message(record)
    assert await fetch(dsn, "SELECT count(*) FROM messages") == [(0,)]


# -- the schema ------------------------------------------------------------------------------------


async def test_nodes_starting_at_once_migrate_once(dsn: str) -> None:
    async def migrate_alone() -> bool:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await migrate(conn)

    async with asyncio.timeout(BOUND_S):
        ran = await asyncio.gather(*(migrate_alone() for _ in range(4)))
        again = await migrate_alone()
        stores = [PgStore(dsn, node=f"mx{n}") for n in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        for s in stores:
            await s.close()
    assert sorted(ran) == [False, False, False, True]
    assert again is False
    assert await fetch(dsn, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]


async def test_a_store_newer_than_the_code_is_refused_in_the_sqlite_stores_words(
    store: PgStore, dsn: str
) -> None:
    await store.close()
    newer = SCHEMA_VERSION + 1
    await execute(dsn, f"UPDATE meta SET value = '{newer}' WHERE key = 'schema_version'")
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(StoreError) as refused:
            await PgStore(dsn, node="mx1").open()
    assert str(SchemaTooNewError(newer)) in str(refused.value)
    assert f"version {SCHEMA_VERSION}:" in str(refused.value)
    assert await fetch(dsn, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(newer),)
    ]


# -- what each node writes -------------------------------------------------------------------------


async def test_every_row_names_the_node_that_wrote_it(store: PgStore, dsn: str) -> None:
    other = PgStore(dsn, node="mx2")
    async with asyncio.timeout(BOUND_S):
        await other.open()
        try:
            first, check = filing()
            await store.record_message(first, check)
            await other.record_refusal(refusal())
            (job,) = await PgOutbox(other, owner="mx2:1:1").claim(
                datetime.now(UTC), limit=1, lease_s=60, busy={}, per_route=9
            )
            now = datetime.now(UTC)
            attempt = Attempt(now, now, "mx.lawfirm.example", 250, "ok", JobState.DELIVERED)
            await PgOutbox(other, owner="mx2:1:1").finish(job, attempt)
        finally:
            await other.close()
    assert await fetch(dsn, "SELECT node FROM messages") == [("mx1",)]
    assert await fetch(dsn, "SELECT node FROM jobs") == [("mx1",)]
    assert await fetch(dsn, "SELECT node FROM refusals") == [("mx2",)]
    assert await fetch(dsn, "SELECT node FROM attempts") == [("mx2",)]
    assert await fetch(dsn, "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname ="
                       " current_database() AND application_name LIKE 'eservice-gateway %%'") == [
        ("eservice-gateway mx1",)
    ]  # fmt: skip


async def test_a_raw_copy_is_kept_and_handed_to_retention_when_its_relay_is_done(
    store: PgStore, dsn: str
) -> None:
    record = relay_record()
    outbox = PgOutbox(store, owner="mx1:1:1")
    keep = datetime.now(UTC) + timedelta(days=30)
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        kept = await fetch(dsn, "SELECT raw, keep_until FROM raw_messages")
        (job,) = await outbox.claim(datetime.now(UTC), limit=1, lease_s=60, busy={}, per_route=9)
        now = datetime.now(UTC)
        attempt = Attempt(now, now, "legacy.example", 250, "ok", JobState.DELIVERED)
        await outbox.finish(job, attempt, raw_keep_until=keep)
    assert kept == [(record.raw, None)]
    assert await fetch(dsn, "SELECT keep_until FROM raw_messages") == [(keep,)]


async def test_a_delivered_notice_is_kept_as_sent_in_the_attempts_transaction(
    store: PgStore, dsn: str
) -> None:
    data = b"Message-ID: <n1@gateway.example>\r\nSubject: Not filed\r\n\r\nbody\r\n"
    _, job_id = await deliver_kept_notice(store, PgOutbox(store, owner="mx1:1:1"), data)
    assert await fetch(dsn, "SELECT job_id, message_id, size, data FROM sent_notices") == [
        (job_id, "<n1@gateway.example>", len(data), data)
    ]


async def test_recovery_returns_only_expired_leases_and_a_hold_outlives_its_lease(
    store: PgStore, dsn: str
) -> None:
    async with asyncio.timeout(BOUND_S):
        for _ in range(3):
            await store.record_message(relay_record())
        owner = PgOutbox(store, owner="mx1:1:1")
        live = await owner.claim(datetime.now(UTC), limit=1, lease_s=300, busy={}, per_route=9)
        brief = await owner.claim(datetime.now(UTC), limit=2, lease_s=0.1, busy={}, per_route=9)
        # An operator holds one of the brief ones during its attempt.
        await execute(dsn, f"UPDATE jobs SET state = 'held' WHERE id = {brief[1].id}")
        await asyncio.sleep(0.3)
        recovered = await PgOutbox(store, owner="mx2:1:1").recover()
    assert recovered == 1
    states = dict(await fetch(dsn, "SELECT id, state FROM jobs"))
    assert states == {live[0].id: "in-flight", brief[0].id: "queued", brief[1].id: "held"}
    leases = dict(await fetch(dsn, "SELECT id, lease_owner FROM jobs"))
    assert leases == {live[0].id: "mx1:1:1", brief[0].id: None, brief[1].id: None}


def test_a_gate_that_found_neither_a_repeat_nor_counts_reads_as_no_history() -> None:
    # Retention removed the repeat's entry between the gate's two statements: settle() then
    # passes the notice, which the store refuses to record uncounted (store.py).
    scopes = (NoticeScope.SENDER, NoticeScope.TOTAL)
    assert history(scopes, None, None) == NoticeHistory()
    assert history(scopes, "20170913-ABC", None) == NoticeHistory(duplicate_of="20170913-ABC")
    assert history(scopes, None, [2, 7]) == NoticeHistory(
        counts={NoticeScope.SENDER: 2, NoticeScope.TOTAL: 7}
    )


async def test_an_envelopes_recipients_keep_their_order_after_the_table_is_rewritten(
    store: PgStore, dsn: str
) -> None:
    record, check = filing()
    given = ("zeta@occ.example", "alpha@occ.example", "mid@occ.example")
    first = record.recipients[0]
    record = replace(record, recipients=tuple(replace(first, recipient=r) for r in given))
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record, check)
    # What a DBA's CLUSTER (or pg_repack, VACUUM FULL) does: the rows in another physical
    # order, here the primary key's (alphabetical), which ctid would then have listed.
    await execute(dsn, "CLUSTER message_recipients USING message_recipients_pkey")
    reader = PgAuditReader(dsn)
    try:
        decisions = await asyncio.to_thread(reader.list_decisions, record.reference)
        attempts = await asyncio.to_thread(reader.find_attempts, Filters())
    finally:
        reader.close()
    assert [d.recipient for d in decisions] == list(given)
    (attempt,) = attempts
    assert attempt.recipients == given


async def test_times_read_back_in_utc_whatever_the_servers_time_zone(dsn: str) -> None:
    # A server (or role, or database) set to the office's zone: the store still hands back
    # UTC, as the SQLite store does, so every printed time reads the same on both.
    database = dsn.rpartition("/")[2]
    await execute(dsn, f"ALTER DATABASE {database} SET TimeZone = 'America/Chicago'")
    store = PgStore(dsn, node="mx1", wait_s=1.0)
    async with asyncio.timeout(BOUND_S):
        await store.open()
        try:
            record, check = filing()
            await store.record_message(record, check)
            (job,) = await PgOutbox(store, owner="mx1:1").claim(
                record.received_at, limit=1, lease_s=60, busy={}, per_route=9
            )
        finally:
            await store.close()
    reader = PgAuditReader(dsn)
    try:
        message = await asyncio.to_thread(reader.read_message, record.reference)
        (queued,) = await asyncio.to_thread(reader.find_jobs, record.reference)
    finally:
        reader.close()
    assert message is not None
    for when in (job.created_at, message.received_at, queued.created_at):
        assert when.utcoffset() == timedelta(0)
    assert message.received_at == record.received_at
