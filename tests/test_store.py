"""The state store: group commit on a real SQLite file, failures isolated, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.mail.evidence import Attachment, MessageFacts
from gateway.store.db import (
    SCHEMA_VERSION,
    JobRecord,
    MessageRecord,
    RecipientRecord,
    Store,
    connect,
    new_reference,
)
from gateway.store.queueactions import JobFilter, QueueAction, change_jobs, take_operator_actions
from tests.test_faults import fill, needs_root, tmpfs
from tests.test_serve_process import (
    AFTER_CUTOFF,
    assert_one_line_error,
    database,
    run_cli,
    serving,
    write_config,
)

AT = datetime(2017, 9, 13, 15, 0, tzinfo=UTC)


def record(
    reference: str, *, jobs: tuple[JobRecord, ...] = (), raw: bytes | None = None
) -> MessageRecord:
    facts = MessageFacts(
        size=2048,
        sha256="ab" * 32,
        message_id="<m@x>",
        subject="Motion",
        date=None,
        from_header=None,
        attachments=(Attachment("brief.pdf", "application/pdf", 1000),),
    )
    rcpt = RecipientRecord(
        "filings@occ.example",
        "retired",
        "reject-after-data",
        "retired",
        AT,
        office="chicago",
        phase="retired",
        local_time="2017-09-13T10:00:00-05:00",
    )
    return MessageRecord(
        reference=reference,
        received_at=AT,
        session_id="s1",
        peer_ip="127.0.0.1",
        peer_port=1,
        helo="client.example",
        tls=None,
        mail_from="a@b.example",
        facts=facts,
        recipients=(rcpt,),
        outcome="rejected",
        reply=f"550 5.1.6 ... (ref {reference})",
        notice="queued",
        jobs=jobs,
        raw=raw,
    )


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        n: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return n
    finally:
        conn.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "state" / "gateway.sqlite3")
    await store.open()
    yield store
    await store.close()


async def test_concurrent_records_are_all_committed_and_visible_to_another_connection(
    store: Store,
) -> None:
    notice = JobRecord("notice", "", ("a@b.example",), "chicago")
    async with asyncio.timeout(10):
        await asyncio.gather(
            *(store.record_message(record(f"R{i:04d}", jobs=(notice,))) for i in range(300))
        )
    assert count(store.path, "messages") == 300
    assert count(store.path, "message_recipients") == 300
    assert count(store.path, "jobs") == 300


async def test_a_bad_record_fails_alone_and_its_batch_mates_commit(store: Store) -> None:
    async with asyncio.timeout(10):
        await store.record_message(record("DUP"))
        results = await asyncio.gather(
            store.record_message(record("OK1")),
            store.record_message(record("DUP")),
            store.record_message(record("OK2")),
            return_exceptions=True,
        )
    assert [getattr(r, "reference", None) for r in results] == ["OK1", None, "OK2"]
    assert isinstance(results[1], StoreError)
    assert count(store.path, "messages") == 3
    # The failed record left nothing half-written behind.
    assert count(store.path, "message_recipients") == 3


async def test_raw_message_kept_with_its_record(store: Store) -> None:
    async with asyncio.timeout(10):
        await store.record_message(record("RAW", raw=b"Subject: x\r\n\r\nbody\r\n"))
    conn = sqlite3.connect(store.path)
    try:
        (raw,) = conn.execute("SELECT raw FROM raw_messages WHERE reference = 'RAW'").fetchone()
    finally:
        conn.close()
    assert raw == b"Subject: x\r\n\r\nbody\r\n"


async def test_writing_to_a_closed_store_fails_clearly(tmp_path: Path) -> None:
    store = Store(tmp_path / "closed.sqlite3")
    with pytest.raises(StoreError, match="not open"):
        await store.record_message(record("X"))


async def test_store_that_cannot_be_created_fails_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(StoreError, match="cannot open"):
        await Store(blocker / "gateway.sqlite3").open()


async def test_reopening_keeps_records_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    for reference in ("FIRST", "SECOND"):
        store = Store(path)
        await store.open()
        async with asyncio.timeout(10):
            await store.record_message(record(reference))
        await store.close()
    assert count(path, "messages") == 2
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_references_are_dated_unambiguous_and_distinct() -> None:
    references = {new_reference(AT) for _ in range(10_000)}
    assert len(references) == 10_000
    sample = next(iter(references))
    assert sample.startswith("20170913-")
    assert len(sample) == 22  # 13 characters of base 32 after the date: 65 random bits
    assert not set(sample[9:]) & set("ILOU")


async def test_raw_messages_past_their_retention_are_purged_and_records_stay(store: Store) -> None:
    keep = [("OLD", AT - timedelta(days=1)), ("NEW", AT + timedelta(days=1)), ("FOREVER", None)]
    async with asyncio.timeout(10):
        for reference, until in keep:
            await store.record_message(replace(record(reference, raw=b"raw"), raw_keep_until=until))
        assert await store.purge_expired_raw(AT) == 1
    conn = sqlite3.connect(store.path)
    try:
        left = {r[0] for r in conn.execute("SELECT reference FROM raw_messages")}
    finally:
        conn.close()
    assert left == {"NEW", "FOREVER"}
    assert count(store.path, "messages") == 3


# ---------------------------------------------------------------------------------------------
# 4. A commit that fails gives each caller an exception of its own


@needs_root
async def test_each_caller_of_a_failed_commit_gets_its_own_exception(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "state", size="1m") as state:
        store = Store(state / "gateway.sqlite3")
        await store.open()
        try:
            blocker = _blocking_write(store)
            filler = fill(state)
            errors = await asyncio.gather(*(_caller(store, n) for n in range(3)))
            with contextlib.suppress(StoreError):  # the batch before may fail too
                await blocker
            filler.unlink()
        finally:
            await store.close()
    assert all(isinstance(e, StoreError) for e in errors)
    assert len({id(e) for e in errors}) == 3
    assert all(e.__cause__ is not None for e in errors)
    for error in errors:
        frames = [f.name for f in traceback.extract_tb(error.__traceback__)]
        assert frames.count("_caller") == 1, frames


def _blocking_write(store: Store) -> asyncio.Future[None]:
    # Holds the writer thread for a moment, so the three writes below share one batch.
    return store.write(lambda conn: time.sleep(0.3))


async def _caller(store: Store, n: int) -> BaseException:
    blob = os.urandom(256 * 1024)  # pages the full disk has no room for
    try:
        await store.write(
            lambda conn: conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{n}", blob.hex())
            )
        )
    except StoreError as exc:
        return exc
    raise AssertionError("the commit went through on a full disk")


# -- the schema's version: older files migrated, newer ones refused ------------------------------


def schema_of(path: Path) -> tuple[int, set[str], list[tuple[int, str]]]:
    """The file's version, its tables, and its jobs (id, state)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        version = int(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        jobs = [(r[0], r[1]) for r in conn.execute("SELECT id, state FROM jobs ORDER BY id")]
    return version, tables, jobs


async def an_older_store(path: Path, version: int, *, has_journal: bool) -> None:
    """A store as a gateway at `version` left it: made now, then taken back to that schema.

    A version-2 gateway already had held jobs and, made on first use, the journal table
    (`has_journal`): they came without a bump, which is what version 3 puts right.
    """
    store = Store(path)
    await store.open()
    notice = JobRecord("notice", "", ("a@b.example",), "chicago")
    async with asyncio.timeout(10):
        await store.record_message(record("OLD", jobs=(notice, notice)))
    await store.close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("UPDATE jobs SET state = 'held' WHERE id = 1")
        if not has_journal:
            conn.execute("DROP TABLE operator_actions")  # its index goes with it
        if version < 4:
            conn.execute("ALTER TABLE audit_chains DROP COLUMN node")
        if version < 2:
            conn.execute("DROP TABLE sent_notices")
            conn.execute("ALTER TABLE messages DROP COLUMN refused_for")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))


@pytest.mark.parametrize(
    ("version", "has_journal"),
    [(1, False), (2, False), (2, True)],
    ids=["from-1", "from-2", "from-2-with-a-journal-made-on-first-use"],
)
async def test_an_older_store_is_migrated_and_keeps_its_jobs(
    tmp_path: Path, version: int, *, has_journal: bool
) -> None:
    path = tmp_path / "gateway.sqlite3"
    await an_older_store(path, version, has_journal=has_journal)
    store = Store(path)
    await store.open()
    try:
        async with asyncio.timeout(10):
            # The migrated journal works: a hold is journalled and taken once by the worker.
            with contextlib.closing(connect(path)) as conn:
                held = change_jobs(
                    conn, QueueAction.HOLD, JobFilter(ids=(2,)), now=AT, operator="test"
                )
            taken = await take_operator_actions(store, AT)
            again = await take_operator_actions(store, AT)
    finally:
        await store.close()
    found, tables, jobs = schema_of(path)
    assert found == SCHEMA_VERSION == 4
    assert {"operator_actions", "sent_notices"} <= tables
    assert jobs == [(1, "held"), (2, "held")]
    assert held == [2]
    assert [(a.action, a.job_ids) for a in taken] == [(QueueAction.HOLD, (2,))]
    assert again == []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    assert "refused_for" in columns


async def test_stores_opened_at_once_on_an_older_file_migrate_it_once(tmp_path: Path) -> None:
    # Several processes starting together (workers, an operator's command) each open the
    # store: one migrates, the others find it done. Each Store here has its own writer
    # thread and lock file descriptor, as a process would.
    for attempt in range(5):
        path = tmp_path / f"gateway-{attempt}.sqlite3"
        await an_older_store(path, 1, has_journal=False)
        stores = [Store(path) for _ in range(4)]
        async with asyncio.timeout(30):
            opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        for store in stores:
            await store.close()
        assert [o for o in opened if isinstance(o, BaseException)] == []
        assert schema_of(path)[0] == SCHEMA_VERSION


async def newer_store(path: Path) -> None:
    """A store a newer gateway has used: one schema version past this code's."""
    await an_older_store(path, SCHEMA_VERSION, has_journal=False)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )


async def test_a_store_newer_than_the_code_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    await newer_store(path)
    before = schema_of(path)
    with pytest.raises(StoreError) as refused:
        await Store(path).open()
    assert f"version {SCHEMA_VERSION + 1}" in str(refused.value)
    assert f"version {SCHEMA_VERSION}:" in str(refused.value)
    assert schema_of(path) == before  # nothing created in it, the version not lowered
    assert "operator_actions" not in before[1]


async def test_serve_on_a_newer_store_exits_1_with_one_line_naming_both_versions(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    await newer_store(database(tmp_path))
    result = await asyncio.to_thread(
        run_cli, "serve", "--config", str(config), "--as-of", AFTER_CUTOFF, cwd=tmp_path
    )
    assert_one_line_error(result, exit_code=1, naming=str(database(tmp_path)))
    line = result.stderr.strip()
    assert f"schema is version {SCHEMA_VERSION + 1}" in line
    assert f"this gateway's version {SCHEMA_VERSION}" in line
    assert "newer eservice-gateway" in line  # what to do: run that one, or restore a copy
    assert "gateway.listening" not in result.stdout
    assert schema_of(database(tmp_path))[0] == SCHEMA_VERSION + 1


# -- operator actions: looked for at every poll, without a write ---------------------------------


async def test_looking_for_operator_actions_needs_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    store = Store(path)
    await store.open()
    try:
        # Another process in a long write (a backup, a bulk `gateway queue delete`): the
        # worker's look finds nothing to log without waiting for it.
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            async with asyncio.timeout(3):  # the writer would wait out its 10 s busy timeout
                assert await take_operator_actions(store, AT) == []
            other.execute("ROLLBACK")
        await store.record_message(record("R1", jobs=(JobRecord("notice", "", ("a@b.example",)),)))
        with contextlib.closing(connect(path)) as conn:
            change_jobs(conn, QueueAction.HOLD, JobFilter(), now=AT, operator="clerk")
        async with asyncio.timeout(10):
            taken = await take_operator_actions(store, AT)
    finally:
        await store.close()
    assert [(a.action, a.operator, a.job_ids) for a in taken] == [(QueueAction.HOLD, "clerk", (1,))]


def store_state(watcher: sqlite3.Connection, path: Path) -> tuple[int, int, int]:
    """What a write would move: the commits others made (data_version), the WAL, the file."""
    version: int = watcher.execute("PRAGMA data_version").fetchone()[0]
    wal = path.with_name(path.name + "-wal")
    return version, wal.stat().st_size, path.stat().st_size


async def test_an_idle_serving_gateway_writes_nothing_to_its_store(tmp_path: Path) -> None:
    config = write_config(tmp_path, edit=('mode = "file"', 'mode = "file"\npoll_interval = 0.05'))
    path = database(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as serve:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as watcher:
            # One probe first, so the worker is surely polling (it starts after the listener).
            await asyncio.sleep(0.5)
            before = store_state(watcher, path)
            await asyncio.sleep(1.0)  # twenty polls at 0.05 s
            after = store_state(watcher, path)
        assert await serve.gateway.stop() == 0
    assert after == before


@pytest.mark.parametrize(
    ("version", "naming"),
    [(2, f"older than this gateway's version {SCHEMA_VERSION}"), (SCHEMA_VERSION + 1, "newer")],
    ids=["older", "newer"],
)
async def test_queue_changes_on_a_store_at_another_version_are_refused_in_one_line(
    tmp_path: Path, version: int, naming: str
) -> None:
    # An upgraded `gateway queue hold` beside a gateway not yet restarted (or a newer one): a
    # hold the running gateway would not honour is refused, not journalled.
    config = write_config(tmp_path)
    await an_older_store(database(tmp_path), 2, has_journal=False)
    with contextlib.closing(sqlite3.connect(database(tmp_path), isolation_level=None)) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    result = await asyncio.to_thread(
        run_cli, "queue", "hold", "2", "--config", str(config), cwd=tmp_path
    )
    assert_one_line_error(result, exit_code=1, naming=f"schema is version {version}")
    assert naming in result.stderr
    assert schema_of(database(tmp_path))[2] == [(1, "held"), (2, "queued")]
