"""Synchronous access to the PostgreSQL store, for threads and processes beside the event loop.

PgRecords is interface.MailRecords (the composer's reads), PgHeads interface.HeadStore (the
audit chain's anchor and checkpoints), PgAuditReader interface.AuditReader (`gateway audit`,
every node's records). Each keeps one psycopg Connection of its own, opened
when first used and again after a failure; every driver error comes out as StoreError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from gateway.errors import StoreError
from gateway.store.anchors import Anchor, Checkpoint
from gateway.store.browse import Key, Page
from gateway.store.outbox import Attempt, Job
from gateway.store.postgres.browse import browse_shared_attempts
from gateway.store.postgres.jobfilter import queued_jobs
from gateway.store.postgres.records import shared_attempts
from gateway.store.postgres.rows import (
    attempt_from_row,
    job_from_row,
    message_from_row,
    node_attempt_from_row,
)
from gateway.store.postgres.store import UTC_SESSION, where
from gateway.store.queries import StoredDecision, StoredMessage
from gateway.store.queueactions import JobFilter
from gateway.store.records import AttemptRecord, Filters
from gateway.store.sentmail import SentNotice
from gateway.vocabulary import JobState

__all__ = [
    "Connected",
    "PgAuditReader",
    "PgHeads",
    "PgRecords",
    "SyncConnection",
    "node_attempts",
    "sent_data",
]

T = TypeVar("T")
SyncConnection = psycopg.Connection[dict[str, Any]]


# A message's decisions, one per recipient; ordered by `seq`, their insertion order (SQLite's
# rowid), which the rows keep whatever a table rewrite does to their physical order.
_DECISIONS = (
    "SELECT reference, recipient, kind, office, phase, action, reason, decided_at, local_time"
    " FROM message_recipients WHERE reference = %s"
)

# A job's attempts in the order they were made (the composer's, the audit's and the queue's).
_ATTEMPTS = "SELECT * FROM attempts WHERE job_id = %s ORDER BY attempt"


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

    def _one(self, sql: str, *params: object) -> dict[str, Any] | None:
        return self._run(lambda conn: conn.execute(sql, params).fetchone())

    def _all(self, sql: str, *params: object) -> list[dict[str, Any]]:
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def _run(self, work: Callable[[SyncConnection], T]) -> T:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=5,
                    application_name=f"eservice-gateway {self._node}".strip()[:63],
                )  # fmt: skip
                self._conn.execute(UTC_SESSION)
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
        rows = self._all(f"{_DECISIONS} AND office = %s ORDER BY seq", reference, office)
        return [StoredDecision(**row) for row in rows]

    def read_raw(self, reference: str) -> bytes | None:
        row = self._one("SELECT raw FROM raw_messages WHERE reference = %s", reference)
        return None if row is None else bytes(row["raw"])

    def read_job(self, job_id: int) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE id = %s", job_id)
        return None if row is None else job_from_row(row)

    def job_attempts(self, job_id: int) -> list[Attempt]:
        return [attempt_from_row(r) for r in self._all(_ATTEMPTS, job_id)]


class PgAuditReader(Connected):
    """`gateway audit`'s reads of the shared store: every node's attempts, stories, kept
    notices and audit chains, as the SQLite reader gives one host's."""

    def find_attempts(self, filters: Filters) -> list[AttemptRecord]:
        return self._run(lambda conn: shared_attempts(conn, filters))

    def browse_attempts(
        self, filters: Filters, *, before: Key | None = None, after: Key | None = None, size: int
    ) -> Page:
        return self._run(
            lambda conn: browse_shared_attempts(
                conn, filters, before=before, after=after, size=size
            )
        )

    def list_jobs(self, states: tuple[str, ...]) -> list[Job]:
        # `gateway queue list --state`'s question, answered as it answers it (jobfilter.py).
        queued = self._run(lambda conn: queued_jobs(conn, JobFilter(states=states)))
        return [q.job for q in queued]

    def read_message(self, reference: str) -> StoredMessage | None:
        row = self._one("SELECT * FROM messages WHERE reference = %s", reference)
        return None if row is None else message_from_row(row)

    def list_decisions(self, reference: str) -> list[StoredDecision]:
        rows = self._all(f"{_DECISIONS} ORDER BY seq", reference)
        return [StoredDecision(**row) for row in rows]

    def is_raw_kept(self, reference: str) -> bool:
        return self._one("SELECT 1 FROM raw_messages WHERE reference = %s", reference) is not None

    def find_jobs(self, reference: str, *, state: JobState | None = None) -> list[Job]:
        wanted = None if state is None else state.value  # the value, not the member's name
        rows = self._all(
            "SELECT * FROM jobs WHERE reference = %s AND (%s::text IS NULL OR state = %s)"
            " ORDER BY id",
            reference,
            wanted,
            wanted,
        )
        return [job_from_row(r) for r in rows]

    def job_attempts(self, job_id: int) -> list[Attempt]:
        return self._run(lambda conn: node_attempts(conn, job_id))

    def read_sent(self, reference: str) -> list[SentNotice]:
        rows = self._all(
            "SELECT job_id, reference, kind, message_id, sha256, size, sent_at"
            " FROM sent_notices WHERE reference = %s ORDER BY job_id",
            reference,
        )
        return [SentNotice(**row) for row in rows]

    def sent_data(self, reference: str, job_id: int) -> bytes | None:
        return self._run(lambda conn: sent_data(conn, reference, job_id))

    def load_anchors(self) -> dict[str, Anchor]:
        # `*`: a store not yet migrated to version 4 (its nodes not restarted) has no node.
        rows = self._all("SELECT * FROM audit_chains ORDER BY started_at, chain")
        return {
            r["chain"]: Anchor(
                r["chain"], r["started_at"], r["log"], r["first_hash"], r.get("node")
            )
            for r in rows
        }

    def load_checkpoints(self) -> dict[str, list[Checkpoint]]:
        found: dict[str, list[Checkpoint]] = {}
        rows = self._all("SELECT chain, seq, hash, at FROM audit_checkpoints ORDER BY chain, seq")
        for r in rows:
            found.setdefault(r["chain"], []).append(Checkpoint(**r))
        return found


def node_attempts(conn: SyncConnection, job_id: int) -> list[Attempt]:
    """A job's attempts, first first, each naming its node: on a shared store, which host
    talked to the remote server (`gateway audit show`, `gateway queue show`)."""
    rows = conn.execute(_ATTEMPTS, (job_id,)).fetchall()
    return [node_attempt_from_row(r) for r in rows]


def sent_data(conn: SyncConnection, reference: str, job_id: int) -> bytes | None:
    """The bytes of the mail a job sent for `reference`, as kept, or None."""
    row = conn.execute(
        "SELECT data FROM sent_notices WHERE reference = %s AND job_id = %s", (reference, job_id)
    ).fetchone()
    return None if row is None else bytes(row["data"])


class PgHeads(Connected):
    """Each node's audit chain anchors and checkpoints, in the shared store."""

    def save_head(self, anchor: Anchor | None, checkpoint: Checkpoint | None) -> None:
        def save(conn: SyncConnection) -> None:
            with conn.transaction():
                if anchor is not None:
                    conn.execute(
                        "INSERT INTO audit_chains (chain, started_at, log, first_hash, node)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (
                            anchor.chain,
                            anchor.started_at,
                            anchor.log,
                            anchor.first_hash,
                            anchor.node,
                        ),
                    )
                if checkpoint is not None:
                    conn.execute(
                        "INSERT INTO audit_checkpoints (chain, seq, hash, at)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (checkpoint.chain, checkpoint.seq, checkpoint.hash, checkpoint.at),
                    )

        self._run(save)
