"""SqliteRecords: the composer's synchronous reads (interface.MailRecords) on the SQLite file.

A read-only connection of its own, kept from job to job; any SQLite error comes out as
StoreError, the one error the composer answers by opening afresh. Writes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gateway.errors import StoreError
from gateway.store import outbox, queries
from gateway.store.db import connect
from gateway.store.outbox import Attempt, Job
from gateway.store.queries import StoredDecision, StoredMessage

__all__ = ["SqliteRecords"]

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
