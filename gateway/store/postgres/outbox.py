"""The outbox in PostgreSQL: one queue that every node's delivery worker takes jobs from.

The SQLite Outbox's operations (gateway/store/outbox.py) with the same values and states.
A claim locks due rows with `FOR UPDATE SKIP LOCKED`, so two nodes claiming at once never
take the same job and never wait for each other; the rows it locks but does not pick (the
per-route limit) go back at COMMIT. Leases are set and compared on one clock, the server's
`now()`, whatever each node's own clock says; due times (next_attempt_at) stay on the
gateway's clock, which set them. recover() takes back only leases that have run out: a lease
still running may be an attempt under way on another node, and releasing it would send that
mail twice.

This module decides nothing about retries (policy/ does) and sends nothing (delivery/).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.errors import LeaseLost
from gateway.store.outbox import Attempt, Bounce, Job
from gateway.store.postgres.rows import action_from_row, job_from_row
from gateway.store.postgres.store import Connection, PgStore
from gateway.store.queueactions import OperatorAction
from gateway.store.sentmail import SentNotice
from gateway.vocabulary import JobKind, JobState

__all__ = ["PgOutbox"]

_PENDING = [JobState.QUEUED, JobState.IN_FLIGHT, JobState.DEFERRED, JobState.HELD]

# Due jobs, and jobs whose lease ran out on the server's clock, oldest due first.
_CANDIDATES = (
    "SELECT id, route FROM jobs WHERE (state IN ('queued', 'deferred') AND next_attempt_at <= %s)"
    " OR (state = 'in-flight' AND lease_until < now())"
    " ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
)
_LEASE = (
    "UPDATE jobs SET state = 'in-flight', lease_owner = %s,"
    " lease_until = now() + make_interval(secs => %s), updated_at = %s"
    " WHERE id = ANY (%s) RETURNING *"
)


class PgOutbox:
    """The queue operations the delivery worker needs; each returns once it is committed."""

    def __init__(self, store: PgStore, *, owner: str) -> None:
        self.store = store
        self.owner = owner  # who holds the leases taken here

    async def recover(self) -> int:
        """Return jobs whose lease has run out (their owner died or hung) to the queue;
        returns how many. A job held meanwhile keeps its hold, without the lease."""
        async with self.store.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL"
                " WHERE state = 'held' AND lease_until < now()"
            )
            cursor = await conn.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL"
                " WHERE state = 'in-flight' AND lease_until < now()"
            )
            return cursor.rowcount

    async def claim(
        self, now: datetime, *, limit: int, lease_s: float, busy: Mapping[str, int], per_route: int
    ) -> list[Job]:
        """Lease up to `limit` due jobs for `lease_s` seconds of the server's clock, at most
        `per_route` in flight per route (counting `busy`), oldest due first."""
        if limit <= 0:
            return []
        async with self.store.transaction() as conn:
            cursor = await conn.execute(_CANDIDATES, (now, limit * 10))
            rows = await cursor.fetchall()
            chosen = _pick(rows, limit=limit, busy=busy, per_route=per_route)
            if not chosen:
                return []
            leased = conn.cursor(row_factory=dict_row)
            await leased.execute(_LEASE, (self.owner, lease_s, now, chosen))
            jobs = {row["id"]: job_from_row(row) for row in await leased.fetchall()}
        return [jobs[i] for i in chosen]

    async def finish(
        self,
        job: Job,
        attempt: Attempt,
        *,
        next_attempt_at: datetime | None = None,
        note: str | None = None,
        raw_keep_until: datetime | None = None,
        bounce: bool = False,
        sent: tuple[SentNotice, bytes] | None = None,
    ) -> Bounce | None:
        """Record an attempt and move the job to the attempt's outcome, in one transaction
        (the SQLite Outbox.finish's semantics: `note`, `raw_keep_until`, `bounce`, `sent`).

        Raises:
            LeaseLost: the job's lease is no longer this owner's; nothing was written.
            StoreError: the store could not be written.
        """
        number = job.attempts + 1
        async with self.store.transaction() as conn:
            # An operator may have held the job during this attempt: a deferral keeps it
            # held; a final outcome leaves nothing to hold. Only while the lease is still
            # ours: another node's state is not this attempt's to overwrite.
            reply = f"{note}; last: {_summary(attempt)}" if note else _summary(attempt)
            moved = await conn.execute(
                "UPDATE jobs SET state = CASE WHEN state = 'held' AND %s = 'deferred'"
                " THEN state ELSE %s END, attempts = %s, next_attempt_at = %s, last_reply = %s,"
                " lease_owner = NULL, lease_until = NULL, updated_at = %s"
                " WHERE id = %s AND lease_owner = %s",
                (attempt.outcome, attempt.outcome, number, next_attempt_at or attempt.finished_at,
                 reply, attempt.finished_at, job.id, self.owner),
            )  # fmt: skip
            if moved.rowcount == 0:
                raise LeaseLost(f"job {job.id} is no longer leased to {self.owner}")
            await conn.execute(
                "INSERT INTO attempts (job_id, attempt, started_at, finished_at, host, code,"
                " reply, outcome, node) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (job.id, number, attempt.started_at, attempt.finished_at, attempt.host,
                 attempt.code, attempt.reply, attempt.outcome, self.store.node),
            )  # fmt: skip
            if raw_keep_until is not None:
                await _release_raw(conn, job.reference, raw_keep_until)
            if sent is not None:
                await _insert_sent(conn, *sent)
            if not bounce:
                return None
            return await self._queue_bounce(conn, job, attempt.finished_at)

    async def renew(self, job: Job, now: datetime, *, lease_s: float) -> bool:
        """Extend this owner's lease on `job` to `lease_s` seconds of the server's clock
        (`now`, the gateway's, goes unused: leases are the server's); False when the lease
        is no longer ours (another node took it over, or recovered it).

        Raises:
            StoreError: the store could not be written.
        """
        async with self.store.connection() as conn:
            cursor = await conn.execute(
                "UPDATE jobs SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = %s AND lease_owner = %s AND state IN ('in-flight', 'held')",
                (lease_s, job.id, self.owner),
            )
            return cursor.rowcount == 1

    async def release(self, job: Job, now: datetime) -> None:
        """Give a job leased here back untried (shutdown), due again at once; a job whose
        lease has passed to another node is left to it."""
        async with self.store.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET state = CASE WHEN state = 'held' THEN state ELSE 'queued' END,"
                " lease_owner = NULL, lease_until = NULL, updated_at = %s"
                " WHERE id = %s AND lease_owner = %s AND state IN ('in-flight', 'held')",
                (now, job.id, self.owner),
            )

    async def take_operator_actions(self, now: datetime) -> list[OperatorAction]:
        """Operators' queue actions not yet logged, oldest first, marked logged as of `now`.

        SKIP LOCKED: two nodes polling at once split the actions, and each is logged once,
        by the node that took it.
        """
        async with self.store.transaction() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "UPDATE operator_actions SET logged_at = %s WHERE id IN (SELECT id FROM"
                " operator_actions WHERE logged_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED)"
                " RETURNING *",
                (now,),
            )
            rows = await cursor.fetchall()
        return [action_from_row(r) for r in sorted(rows, key=lambda r: int(r["id"]))]

    async def _queue_bounce(self, conn: Connection, relay: Job, at: datetime) -> Bounce | None:
        # RFC 5321 §6.1: mail we accepted and cannot deliver is reported to its sender, but
        # never to a sender we could not authenticate (backscatter) nor to the null sender.
        cursor = await conn.execute(
            "SELECT mail_from FROM messages WHERE reference = %s AND sender_authenticated"
            " AND mail_from != ''",
            (relay.reference,),
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        sender = str(row[0])
        cursor = await conn.execute(
            "INSERT INTO jobs (reference, kind, office, mail_from, recipients, route, created_at,"
            " next_attempt_at, updated_at, about_job, node)"
            " VALUES (%s, %s, %s, '', %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (relay.reference, JobKind.BOUNCE, relay.office, Jsonb([sender]),
             sender.rpartition("@")[2].lower(), at, at, at, relay.id, self.store.node),
        )  # fmt: skip
        created = await cursor.fetchone()
        assert created is not None  # RETURNING of a one-row INSERT
        return Bounce(int(created[0]), sender)


async def _release_raw(conn: Connection, reference: str, keep_until: datetime) -> None:
    await conn.execute(
        "UPDATE raw_messages SET keep_until = %s WHERE reference = %s AND keep_until IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM jobs WHERE reference = %s AND kind = %s"
        "  AND state = ANY (%s))"
        " AND NOT EXISTS (SELECT 1 FROM message_recipients WHERE reference = %s"
        "  AND kind = 'postmaster')",
        (keep_until, reference, reference, JobKind.RELAY, _PENDING, reference),
    )


async def _insert_sent(conn: Connection, notice: SentNotice, data: bytes) -> None:
    await conn.execute(
        "INSERT INTO sent_notices (job_id, reference, kind, message_id, sha256, size, sent_at,"
        " data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (notice.job_id, notice.reference, notice.kind, notice.message_id, notice.sha256,
         notice.size, notice.sent_at, data),
    )  # fmt: skip


def _pick(
    rows: list[tuple[Any, ...]], *, limit: int, busy: Mapping[str, int], per_route: int
) -> list[int]:
    """The ids to lease, in order: at most `per_route` in flight per route, `limit` in all."""
    taken: dict[str, int] = dict(busy)
    chosen: list[int] = []
    for job_id, route in rows:
        if taken.get(route, 0) >= per_route:
            continue
        taken[route] = taken.get(route, 0) + 1
        chosen.append(int(job_id))
        if len(chosen) == limit:
            break
    return chosen


def _summary(attempt: Attempt) -> str:
    host = f"{attempt.host}: " if attempt.host else ""
    code = f"{attempt.code} " if attempt.code else ""
    return f"{host}{code}{attempt.reply}"[:1000]
