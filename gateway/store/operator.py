"""The operator commands' store on the SQLite file: interface.OperatorQueue (`gateway queue`)
and interface.PostmasterBox (`gateway postmaster`), over the functions of queueactions.py,
outbox.py, sentmail.py, mailbox.py and queries.py.

One connection each, read-only unless the command changes the queue; SQLite's locking
orders a change with the serving gateway's writer. Any SQLite error comes out as StoreError.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from gateway.errors import StoreError
from gateway.store import mailbox, outbox, queries, queueactions, sentmail
from gateway.store.db import JobRecord, connect
from gateway.store.mailbox import PostmasterMail
from gateway.store.outbox import Attempt, Job
from gateway.store.queueactions import JobFilter, QueueAction, QueuedJob

__all__ = ["SqlitePostmaster", "SqliteQueue"]

T = TypeVar("T")


class _OnFile:
    def __init__(self, database: Path, *, writable: bool) -> None:
        self._database = database
        self._conn = self._run(lambda: connect(database, readonly=not writable))

    def close(self) -> None:
        self._conn.close()

    def _do(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._run(lambda: work(self._conn))

    def _run(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._database}: {exc}") from exc


class SqliteQueue(_OnFile):
    """`gateway queue` on the SQLite file."""

    def list_jobs(self, which: JobFilter) -> list[QueuedJob]:
        return self._do(lambda conn: queueactions.queued_jobs(conn, which))

    def matching_jobs(self, action: QueueAction, which: JobFilter) -> list[Job]:
        return self._do(lambda conn: queueactions.matching_jobs(conn, action, which))

    def change_jobs(
        self, action: QueueAction, which: JobFilter, *, now: datetime, operator: str
    ) -> list[int]:
        return self._do(
            lambda conn: queueactions.change_jobs(conn, action, which, now=now, operator=operator)
        )

    def read_job(self, job_id: int) -> QueuedJob | None:
        return self._do(lambda conn: queueactions.read_queued(conn, job_id))

    def job_attempts(self, job_id: int) -> list[Attempt]:
        return self._do(lambda conn: outbox.job_attempts(conn, job_id))

    def sent_data(self, reference: str, job_id: int) -> bytes | None:
        return self._do(lambda conn: sentmail.sent_data(conn, reference, job_id))


class SqlitePostmaster(_OnFile):
    """`gateway postmaster` on the SQLite file."""

    def find_mail(self, *, since: datetime | None, limit: int) -> list[PostmasterMail]:
        return self._do(lambda conn: mailbox.find_postmaster_mail(conn, since=since, limit=limit))

    def read_mail(self, reference: str) -> PostmasterMail | None:
        return self._do(lambda conn: mailbox.read_mail(conn, reference))

    def read_raw(self, reference: str) -> bytes | None:
        return self._do(lambda conn: queries.read_raw(conn, reference))

    def queue_forward(self, reference: str, jobs: Sequence[JobRecord], now: datetime) -> list[int]:
        return self._do(lambda conn: outbox.queue_jobs(conn, reference, jobs, now)) or []
