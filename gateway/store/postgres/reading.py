"""Synchronous access to the PostgreSQL store, for threads and processes beside the event loop.

PgRecords is interface.MailRecords (the composer's reads), PgHeads interface.HeadStore (the
audit chain's anchor and checkpoints). Each keeps one psycopg Connection of its own, opened
when first used and again after a failure; every driver error comes out as StoreError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from gateway.errors import StoreError
from gateway.store.anchors import Anchor, Checkpoint
from gateway.store.outbox import Attempt, Job
from gateway.store.postgres.outbox import job_from_row
from gateway.store.postgres.queries import message_from_row
from gateway.store.postgres.store import where
from gateway.store.queries import StoredDecision, StoredMessage
from gateway.vocabulary import JobState

__all__ = ["Connected", "PgHeads", "PgRecords", "SyncConnection"]

T = TypeVar("T")
SyncConnection = psycopg.Connection[dict[str, Any]]


class Connected:
    """One psycopg Connection of its own (dict rows, autocommit), opened on first use and
    again after a failure; `_run` turns every driver error into StoreError."""

    def __init__(self, dsn: str, *, node: str = "") -> None:
        self._dsn = dsn
        self._node = node
        self._conn: SyncConnection | None = None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _run(self, work: Callable[[SyncConnection], T]) -> T:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=5,
                    application_name=f"eservice-gateway {self._node}".strip()[:63],
                )  # fmt: skip
            return work(self._conn)
        except psycopg.Error as exc:
            self.close()  # the next call connects afresh (the server may have restarted)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"{where(self._dsn)}: {first}") from exc


class PgRecords(Connected):
    """The composer's reads of a PostgreSQL store."""

    def read_message(self, reference: str) -> StoredMessage | None:
        row = self._one("SELECT * FROM messages WHERE reference = %s", reference)
        return None if row is None else message_from_row(row)

    def list_decisions(self, reference: str, *, office: str) -> list[StoredDecision]:
        # ctid: the rows' insertion order, as SQLite's rowid (they are never updated).
        rows = self._all(
            "SELECT * FROM message_recipients WHERE reference = %s AND office = %s ORDER BY ctid",
            reference,
            office,
        )
        return [StoredDecision(**row) for row in rows]

    def read_raw(self, reference: str) -> bytes | None:
        row = self._one("SELECT raw FROM raw_messages WHERE reference = %s", reference)
        return None if row is None else bytes(row["raw"])

    def read_job(self, job_id: int) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE id = %s", job_id)
        return None if row is None else job_from_row(row)

    def job_attempts(self, job_id: int) -> list[Attempt]:
        rows = self._all("SELECT * FROM attempts WHERE job_id = %s ORDER BY attempt", job_id)
        return [
            Attempt(
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                host=r["host"],
                code=r["code"],
                reply=r["reply"],
                outcome=JobState(r["outcome"]),
            )
            for r in rows
        ]

    def _one(self, sql: str, *params: object) -> dict[str, Any] | None:
        return self._run(lambda conn: conn.execute(sql, params).fetchone())

    def _all(self, sql: str, *params: object) -> list[dict[str, Any]]:
        return self._run(lambda conn: conn.execute(sql, params).fetchall())


class PgHeads(Connected):
    """Each node's audit chain anchors and checkpoints, in the shared store."""

    def save_head(self, anchor: Anchor | None, checkpoint: Checkpoint | None) -> None:
        def save(conn: SyncConnection) -> None:
            with conn.transaction():
                if anchor is not None:
                    conn.execute(
                        "INSERT INTO audit_chains (chain, started_at, log, first_hash)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (anchor.chain, anchor.started_at, anchor.log, anchor.first_hash),
                    )
                if checkpoint is not None:
                    conn.execute(
                        "INSERT INTO audit_checkpoints (chain, seq, hash, at)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (checkpoint.chain, checkpoint.seq, checkpoint.hash, checkpoint.at),
                    )

        self._run(save)
