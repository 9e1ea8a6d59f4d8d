"""Synchronous reads of the SQLite file: the composer's (SqliteRecords, interface.MailRecords)
and `gateway audit`'s (SqliteAuditReader, interface.AuditReader).

Each reads on one read-only connection; any SQLite error comes out as StoreError (the one
error the composer answers by opening afresh, and the one the audit command reports).
Writes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gateway.errors import StoreError
from gateway.store import anchors, browse, outbox, queries, records, sentmail
from gateway.store.anchors import Anchor, Checkpoint
from gateway.store.browse import Key, Page
from gateway.store.db import connect
from gateway.store.outbox import Attempt, Job
from gateway.store.queries import StoredDecision, StoredMessage
from gateway.store.queueactions import JobFilter, select_jobs
from gateway.store.records import AttemptRecord, Filters
from gateway.store.sentmail import SentNotice
from gateway.vocabulary import JobState

__all__ = ["SqliteAuditReader", "SqliteRecords"]

T = TypeVar("T")


class SqliteRecords:
    """Reads of one SQLite store file, on one read-only connection opened when first used."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._conn: sqlite3.Connection | None = None

    def read_message(self, reference: str) -> StoredMessage | None:
        return self._read(lambda conn: queries.read_message(conn, reference))

    def list_decisions(self, reference: str, *, office: str) -> list[StoredDecision]:
        return self._read(lambda conn: queries.list_decisions(conn, reference, office=office))

    def read_raw(self, reference: str) -> bytes | None:
        return self._read(lambda conn: queries.read_raw(conn, reference))

    def read_job(self, job_id: int) -> Job | None:
        return self._read(lambda conn: outbox.read_job(conn, job_id))

    def job_attempts(self, job_id: int) -> list[Attempt]:
        return self._read(lambda conn: outbox.job_attempts(conn, job_id))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                # Another thread may close it (MailBuilder.close); only one thread reads.
                self._conn = connect(self._database, readonly=True, check_same_thread=False)
            return read(self._conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self._database}: {exc}") from exc


class SqliteAuditReader:
    """`gateway audit`'s and the console's reads of one SQLite store file, on a read-only
    connection: open() makes one; a caller may hand its own. close() closes it."""

    def __init__(self, conn: sqlite3.Connection, *, database: Path) -> None:
        self._conn = conn
        self._database = database

    @classmethod
    def open(cls, database: Path) -> SqliteAuditReader:
        """A reader on a read-only connection of its own.

        Raises:
            StoreError: the file cannot be opened.
        """
        try:
            return cls(connect(database, readonly=True), database=database)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {database}: {exc}") from exc

    def find_attempts(self, filters: Filters) -> list[AttemptRecord]:
        return self._read(lambda conn: records.find_attempts(conn, filters))

    def browse_attempts(
        self, filters: Filters, *, before: Key | None = None, after: Key | None = None, size: int
    ) -> Page:
        return self._read(
            lambda conn: browse.browse_attempts(
                conn, filters, before=before, after=after, size=size
            )
        )

    def list_jobs(self, states: tuple[str, ...]) -> list[Job]:
        return self._read(lambda conn: select_jobs(conn, JobFilter(states=states)))

    def read_message(self, reference: str) -> StoredMessage | None:
        return self._read(lambda conn: queries.read_message(conn, reference))

    def list_decisions(self, reference: str) -> list[StoredDecision]:
        return self._read(lambda conn: queries.list_decisions(conn, reference))

    def is_raw_kept(self, reference: str) -> bool:
        return self._read(lambda conn: queries.is_raw_kept(conn, reference))

    def find_jobs(self, reference: str, *, state: JobState | None = None) -> list[Job]:
        return self._read(lambda conn: outbox.find_jobs(conn, reference=reference, state=state))

    def job_attempts(self, job_id: int) -> list[Attempt]:
        return self._read(lambda conn: outbox.job_attempts(conn, job_id))

    def read_sent(self, reference: str) -> list[SentNotice]:
        return self._read(lambda conn: sentmail.read_sent(conn, reference))

    def sent_data(self, reference: str, job_id: int) -> bytes | None:
        return self._read(lambda conn: sentmail.sent_data(conn, reference, job_id))

    def load_anchors(self) -> dict[str, Anchor]:
        return self._read(_anchors)

    def load_checkpoints(self) -> dict[str, list[Checkpoint]]:
        return self._read(_checkpoints)

    def close(self) -> None:
        self._conn.close()

    def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return read(self._conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self._database}: {exc}") from exc


def _anchors(conn: sqlite3.Connection) -> dict[str, Anchor]:
    try:
        return anchors.load_anchors(conn)
    except sqlite3.OperationalError:
        return {}  # a store from before the chain (read-only: not migrated): nothing anchored


def _checkpoints(conn: sqlite3.Connection) -> dict[str, list[Checkpoint]]:
    try:
        return anchors.load_checkpoints(conn)
    except sqlite3.OperationalError:
        return {}
