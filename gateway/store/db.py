"""The state store: one SQLite file (WAL) holding the evidence and the job queue.

Every write goes through a single writer thread that group-commits: whatever concurrent
sessions hand in while the previous commit is being made durable goes into the next one, and
each caller's await returns only once its own rows are committed with synchronous=FULL. So a
250 or 550 after DATA is sent only after its record is on disk, and the event loop never
blocks on SQLite. Several processes may share the file (WAL, busy timeout); nothing about
the queue is kept in process memory.

Writers of several processes (a supervisor's workers, `[server] workers`) take turns through
an advisory lock on a file beside the store (`gateway.sqlite3.lock`), held from BEGIN to
COMMIT: the kernel wakes the next writer the moment the lock is free. Without it they would
meet at SQLite's own lock, whose busy handler waits by sleeping (1, 2, 5, 10 ... 100 ms) and
polling: measured with two workers under load, a tenth of the transactions waited over a
millisecond, some 130 ms, a third of the run in all (README, "Serving on every core").
Other writers (the operator's commands, the checkpoint thread) do not take it; they are rare
and wait at SQLite's lock as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import StoreError

# The record types are defined in messages.py; importing them from here keeps working.
from gateway.store.messages import (
    JobRecord,
    MessageRecord,
    NoticeCheck,
    RecipientRecord,
    RefusalRecord,
    insert_gated,
    insert_refusal,
    iso,
    job_record,
    new_reference,
)
from gateway.store.purging import Purged, purge_messages, purge_refusals
from gateway.store.schema import SCHEMA_VERSION, SchemaVersionError, migrate
from gateway.store.sentmail import purge_sent
from gateway.vocabulary import NOTICE_KINDS

__all__ = [
    "NOTICE_KINDS",
    "SCHEMA_VERSION",
    "JobRecord",
    "MessageRecord",
    "NoticeCheck",
    "RecipientRecord",
    "RefusalRecord",
    "Store",
    "connect",
    "iso",
    "job_record",
    "new_reference",
]

T = TypeVar("T")
# What a caller hands the writer: runs inside the next group-committed transaction.
Write = Callable[[sqlite3.Connection], Any]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


@dataclass(frozen=True, slots=True)
class _Pending:
    write: Write
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def connect(
    path: Path, *, readonly: bool = False, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open the store file with the settings every connection needs.

    `check_same_thread=False` only lets another thread close a read-only connection that
    one thread uses (MailBuilder's); it never makes a connection safe to share."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=10.0, check_same_thread=check_same_thread
        )
    else:
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, which is what a 250 promises.
        conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Store:
    """The durable record; `await store.record_message(...)` returns once it is committed."""

    # Upper bound on one group commit, so a burst cannot starve replies waiting on it.
    MAX_BATCH = 512

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None

    async def open(self) -> None:
        """Create the file and schema if needed and start the writer thread.

        Raises:
            StoreError: the file cannot be created or opened.
        """
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            raise StoreError(f"cannot open {self.path}: {self._open_error}") from self._open_error

    def is_alive(self) -> bool:
        """Whether the writer thread is running (open, and not stopped or dead)."""
        return self._thread is not None and self._thread.is_alive()

    async def ping(self, at: datetime) -> None:
        """Commit a trivial write through the writer, as a health check: it returns only if
        the thread takes work, SQLite grants the write lock and the disk takes the commit.

        Raises:
            StoreError: the store is closed or the commit failed.
        """

        def touch(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('health_checked_at', ?)",
                (iso(at),),
            )

        await self.write(touch)

    async def close(self) -> None:
        """Commit what is pending, then stop the writer thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        # Writes handed in while the thread was stopping were never run: fail them, or their
        # callers would wait for ever.
        stranded: list[_Pending] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    stranded.append(item)
        _resolve(stranded, [(None, StoreError("the store is closed")) for _ in stranded])

    async def record_message(
        self, record: MessageRecord, check: NoticeCheck | None = None
    ) -> MessageRecord:
        """Make a received message, its decisions and its jobs durable, in one transaction;
        returns the record as stored.

        With a `check`, the verdict's notice is first met with the earlier ones read in the
        same transaction (so concurrent sessions and processes count alike), and the record
        stored is the one of the verdict as settled (policy/verdict.py `settle`).

        Raises:
            StoreError: the commit failed; nothing of this record was stored.
        """
        return await self.write(lambda conn: insert_gated(conn, record, check))

    async def record_refusal(self, record: RefusalRecord) -> None:
        """Make a refusal at RCPT durable.

        Raises:
            StoreError: the commit failed.
        """
        await self.write(lambda conn: insert_refusal(conn, record))

    async def purge_expired_raw(self, now: datetime, *, limit: int = -1) -> int:
        """Delete retained raw messages whose retention ended, at most `limit` (-1: all);
        returns how many.

        Raises:
            StoreError: the delete could not be committed.
        """

        def purge(conn: sqlite3.Connection) -> int:
            # A copy still to be relayed or forwarded outlives its retention until it is sent.
            cursor = conn.execute(
                "DELETE FROM raw_messages WHERE reference IN (SELECT r.reference"
                " FROM raw_messages AS r WHERE r.keep_until IS NOT NULL AND r.keep_until < ?"
                " AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.reference = r.reference"
                "  AND j.kind IN ('relay', 'forward')"
                "  AND j.state IN ('queued', 'in-flight', 'deferred')) LIMIT ?)",
                (iso(now), limit),
            )
            return cursor.rowcount

        return await self.write(purge)

    async def purge_messages(self, before: datetime, *, limit: int) -> Purged:
        """Delete up to `limit` messages received before `before` (with their rows), none
        with a job still to be delivered; returns what went.

        Raises:
            StoreError: the batch could not be committed.
        """
        return await self.write(lambda conn: purge_messages(conn, before=before, limit=limit))

    async def purge_refusals(self, before: datetime, *, limit: int) -> int:
        """Delete up to `limit` refusals made before `before`; returns how many.

        Raises:
            StoreError: the batch could not be committed.
        """
        return await self.write(lambda conn: purge_refusals(conn, before=before, limit=limit))

    async def purge_sent(self, before: datetime, *, limit: int) -> int:
        """Delete up to `limit` notices kept as sent before `before`; returns how many.

        Raises:
            StoreError: the batch could not be committed.
        """
        return await self.write(lambda conn: purge_sent(conn, before=before, limit=limit))

    def write(self, write: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `write` in the writer's next transaction; the future holds its result once
        that transaction is durable. A write that raises fails alone, the batch commits.

        Raises (through the future):
            StoreError: the store is closed, the write raised, or the commit failed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            future.set_exception(StoreError("the store is not open"))
        else:
            self._queue.put(_Pending(write, future, loop))
        return future

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        lock = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(_lock_path(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            conn = connect(self.path)
            # Under the writers' lock: another process opening the same older file at the
            # same moment would otherwise add the same columns again and fail.
            with _writer_turn(lock):
                migrate(conn)
        except (OSError, sqlite3.Error, SchemaVersionError) as exc:
            if lock >= 0:
                os.close(lock)
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while (batch := self._next_batch()) is not None:
                with _writer_turn(lock):
                    _commit_batch(conn, batch)
        finally:
            conn.close()
            os.close(lock)

    def _next_batch(self) -> list[_Pending] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch


def _lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextlib.contextmanager
def _writer_turn(lock: int) -> Iterator[None]:
    """This process's turn to write, among the store's writer threads of every process."""
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _commit_batch(conn: sqlite3.Connection, batch: Sequence[_Pending]) -> None:
    results: list[tuple[Any, BaseException | None]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = [_apply_one(conn, item.write) for item in batch]
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        # One exception per caller: an instance raised in several tasks would gather every
        # task's frames in its one traceback, and each log would show the others' stacks.
        results = [(None, _commit_failure(exc)) for _ in batch]
    _resolve(batch, results)


def _commit_failure(cause: sqlite3.Error) -> StoreError:
    failure = StoreError(f"commit failed: {cause}")
    failure.__cause__ = cause
    return failure


def _apply_one(conn: sqlite3.Connection, write: Write) -> tuple[Any, BaseException | None]:
    # A savepoint per caller: one bad record fails alone, the rest of the batch commits.
    conn.execute("SAVEPOINT one")
    try:
        result = write(conn)
    except Exception as exc:  # the writer thread must outlive any one bad write
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")
        failure = StoreError(f"record rejected: {exc}")
        failure.__cause__ = exc
        return None, failure
    conn.execute("RELEASE one")
    return result, None


def _resolve(
    batch: Sequence[_Pending], results: Sequence[tuple[Any, BaseException | None]]
) -> None:
    # One wake-up per event loop and batch, not one per record.
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for item, (result, error) in zip(batch, results, strict=True):
        by_loop.setdefault(item.loop, []).append((item.future, result, error))
    for loop, outcomes in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: Iterable[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue  # the caller went away while we committed
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


# Columns added since schema 1, for stores made by an older gateway.
