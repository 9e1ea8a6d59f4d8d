"""The operator commands' store on PostgreSQL: interface.OperatorQueue (`gateway queue`) and
interface.PostmasterBox (`gateway postmaster`), for the jobs and mail of every node.

The SQLite store's semantics (queueactions.py's rules, the same values), with what a shared
queue adds:
- A change locks its jobs' rows in id order (`FOR UPDATE`), so it waits for a node that is
  claiming or finishing one of them, and then sees that node's outcome: a job just leased is
  held with its lease kept, and is not deleted; a hold that came first is kept by the node's
  finish(). Nodes never wait long for it: it holds those rows for one statement and the
  journal's insert, and gives up (nothing changed) after `LOCK_WAIT_S` rather than queue
  behind a stuck transaction.
- It takes the migration lock shared (postgres/schema.py), so no node migrates the store
  between its version check and its COMMIT.
- The journal's row (operator_actions) is taken by whichever node polls first, with SKIP
  LOCKED (postgres/outbox.py), and logged once, in that node's audit log.
Each class keeps one psycopg Connection (reading.py); every driver error is a StoreError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from gateway.errors import StoreError
from gateway.store.mailbox import FORWARD, PostmasterMail
from gateway.store.messages import JobRecord
from gateway.store.outbox import Attempt, Job
from gateway.store.postgres.jobfilter import job_where, queued_jobs
from gateway.store.postgres.reading import Connected, SyncConnection, node_attempts, sent_data
from gateway.store.postgres.rows import queued_from_row
from gateway.store.postgres.schema import MIGRATION_LOCK
from gateway.store.postgres.store import where as describe
from gateway.store.queueactions import (
    ACTION_RULES,
    JobFilter,
    QueueAction,
    QueuedJob,
    narrow,
)
from gateway.store.schema import SCHEMA_VERSION, SchemaTooNewError, SchemaTooOldError

__all__ = ["LOCK_WAIT_S", "PgPostmaster", "PgQueue"]

T = TypeVar("T")
Row = dict[str, Any]
# How long a change waits for a job row another transaction holds (a node's claim or finish
# takes milliseconds); past it, nothing is changed and the operator is told to try again.
LOCK_WAIT_S = 10.0


class _Shared(Connected):
    # reading.py's one connection, opened when first used and again after a failure.

    def __init__(self, dsn: str, *, node: str, lock_wait_s: float = LOCK_WAIT_S) -> None:
        super().__init__(dsn, node=node)
        self._lock_wait_s = lock_wait_s
        try:
            self._run(_require_store)  # connect now: a wrong URL or password is told at once
        except StoreError:
            self.close()
            raise

    def _change(self, work: Callable[[SyncConnection], T]) -> T:
        """`work` in one transaction, at this code's schema version, waiting `lock_wait_s` at
        most for a row.

        Raises:
            SchemaVersionError: the store is at another version; nothing was changed.
            StoreError: the store cannot be written, or a row stayed locked too long.
        """

        def change(conn: SyncConnection) -> T:
            with conn.transaction():
                wait = f"{round(self._lock_wait_s * 1000)}ms"
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait,))
                _require_current(conn)
                return work(conn)

        try:
            return self._run(change)
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                why = f"a node kept these jobs locked for over {self._lock_wait_s:g} s"
            elif isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                why = "PostgreSQL ended this change to break a deadlock with a node"
            else:
                raise
            raise StoreError(
                f"{describe(self._dsn)}: {why}; nothing was changed, try again"
            ) from exc


class PgQueue(_Shared):
    """`gateway queue` on the shared store: every node's jobs."""

    def list_jobs(self, which: JobFilter) -> list[QueuedJob]:
        return self._run(lambda conn: queued_jobs(conn, which))

    def matching_jobs(self, action: QueueAction, which: JobFilter) -> list[Job]:
        # As change_jobs chooses them, so a dry run counts what the change would do.
        rule = ACTION_RULES[action]
        found = self.list_jobs(replace(which, states=narrow(which.states, rule.states)))
        return [q.job for q in found if not (rule.is_unleased_only and q.lease_owner)]

    def change_jobs(
        self, action: QueueAction, which: JobFilter, *, now: datetime, operator: str
    ) -> list[int]:
        """Apply `action` to the jobs of `which` it applies to, and journal it, in one
        transaction; returns the ids changed (none: nothing journalled).

        Raises:
            SchemaVersionError: the store is not at this code's schema version.
            StoreError: the store cannot be written, or a node kept a job locked too long.
        """
        rule = ACTION_RULES[action]
        where, params = job_where(which, narrow(which.states, rule.states))
        if rule.is_unleased_only:
            where += " AND lease_owner IS NULL"
        # Locked in id order, as any other change does: two of them cannot deadlock, and a
        # row a node changed meanwhile is matched again as that node left it.
        sql = (
            f"UPDATE jobs SET {rule.assignment}, updated_at = %s WHERE id IN"
            f" (SELECT id FROM jobs WHERE {where} ORDER BY id FOR UPDATE) RETURNING id"
        )

        def change(conn: SyncConnection) -> list[int]:
            ids = sorted(int(row["id"]) for row in conn.execute(sql, [now, *params]))
            if ids:
                conn.execute(
                    "INSERT INTO operator_actions (action, requested_at, operator, job_ids,"
                    " filter) VALUES (%s, %s, %s, %s, %s)",
                    (action, now, operator, Jsonb(ids), Jsonb(which.describe())),
                )
            return ids

        return self._change(change)

    def read_job(self, job_id: int) -> QueuedJob | None:
        row = self._one("SELECT * FROM jobs WHERE id = %s", job_id)
        return None if row is None else queued_from_row(row)

    def job_attempts(self, job_id: int) -> list[Attempt]:
        return self._run(lambda conn: node_attempts(conn, job_id))

    def sent_data(self, reference: str, job_id: int) -> bytes | None:
        return self._run(lambda conn: sent_data(conn, reference, job_id))


_MAIL = """
SELECT m.reference, m.received_at, m.peer_ip, m.helo, m.mail_from, m.recipients, m.subject,
       m.size, m.sha256, m.outcome,
       EXISTS (SELECT 1 FROM raw_messages r WHERE r.reference = m.reference) AS has_raw,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(j.id, j.state, j.recipients) ORDER BY j.id),
                        '[]'::jsonb)
        FROM jobs j WHERE j.reference = m.reference AND j.kind = %s) AS forwards
FROM messages m WHERE {where}
"""
_TO_POSTMASTER = (
    "EXISTS (SELECT 1 FROM message_recipients p WHERE p.reference = m.reference"
    " AND p.kind = 'postmaster')"
)


class PgPostmaster(_Shared):
    """`gateway postmaster` on the shared store: mail to postmaster through any node."""

    def find_mail(self, *, since: datetime | None, limit: int) -> list[PostmasterMail]:
        where, params = _TO_POSTMASTER, list[object]()
        if since is not None:
            where += " AND m.received_at >= %s"
            params.append(since.astimezone(UTC))
        sql = _MAIL.format(where=where) + " ORDER BY m.received_at DESC, m.reference LIMIT %s"
        return [_mail(row) for row in self._all(sql, FORWARD, *params, limit)]

    def read_mail(self, reference: str) -> PostmasterMail | None:
        row = self._one(_MAIL.format(where="m.reference = %s"), FORWARD, reference)
        return None if row is None else _mail(row)

    def read_raw(self, reference: str) -> bytes | None:
        row = self._one("SELECT raw FROM raw_messages WHERE reference = %s", reference)
        return None if row is None else bytes(row["raw"])

    def queue_forward(self, reference: str, jobs: Sequence[JobRecord], now: datetime) -> list[int]:
        """Queue forward jobs for a kept message in one transaction, as this node's; returns
        their ids (none when the store has no such message).

        Due at the message's arrival if that is earlier than `now`, as outbox.queue_jobs.
        """

        def queue(conn: SyncConnection) -> list[int]:
            row = conn.execute(
                "SELECT received_at FROM messages WHERE reference = %s", (reference,)
            ).fetchone()
            if row is None:
                return []
            due = min(now, row["received_at"])
            ids = []
            for job in jobs:
                created = conn.execute(
                    "INSERT INTO jobs (reference, kind, office, mail_from, recipients,"
                    " destination, route, created_at, next_attempt_at, updated_at, node)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (reference, job.kind, job.office, job.mail_from, Jsonb(list(job.recipients)),
                     job.destination, job.route, now, due, now, self._node),
                ).fetchone()  # fmt: skip
                assert created is not None  # RETURNING of a one-row INSERT
                ids.append(int(created["id"]))
            return ids

        return self._change(queue)


def _require_store(conn: SyncConnection) -> None:
    row = conn.execute("SELECT to_regclass('jobs') IS NOT NULL AS made").fetchone()
    if row is None or not row["made"]:
        raise StoreError(
            f"{describe(conn.info.dsn)} holds no gateway store yet (has a gateway served with"
            " this [storage] url? `gateway migrate` makes it)"
        )


def _require_current(conn: SyncConnection) -> None:
    """In a transaction: the store is at this code's version, and stays so until COMMIT.

    Raises:
        SchemaTooNewError, SchemaTooOldError: it is at another version.
    """
    # Shared: operators do not wait for each other, but a migrating node waits for us.
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (MIGRATION_LOCK,))
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    found = None if row is None else int(row["value"])
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaTooNewError(found)
    if found != SCHEMA_VERSION:
        raise SchemaTooOldError(found)


def _mail(row: Row) -> PostmasterMail:
    return PostmasterMail(
        reference=row["reference"],
        received_at=row["received_at"],
        peer_ip=row["peer_ip"],
        helo=row["helo"],
        sender=row["mail_from"],
        recipients=tuple(row["recipients"]),
        subject=row["subject"],
        size=row["size"],
        sha256=row["sha256"],
        outcome=row["outcome"],
        has_raw=row["has_raw"],
        forwards=tuple((int(i), state, ", ".join(to)) for i, state, to in row["forwards"]),
    )
