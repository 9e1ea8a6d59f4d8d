"""The outbox: the durable queue of notices and relays in the state store.

A job moves queued -> in-flight (leased to one worker) -> delivered | deferred | failed;
deferred jobs become due again at next_attempt_at. Every state change, with the attempt it
records, is one transaction through the store's writer, so a crash leaves each job either
before or after an attempt, never half way. Operators' commands (`gateway queue ...`) use the
synchronous functions at the end, on a connection of their own.

This module decides nothing about retries (policy/ does) and sends nothing (delivery/).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.errors import LeaseLost
from gateway.store.db import JobRecord, Store, iso
from gateway.store.purging import PENDING_STATES
from gateway.store.sentmail import SentNotice, insert_sent
from gateway.vocabulary import JobKind, JobState

if TYPE_CHECKING:
    from gateway.store.queueactions import OperatorAction

__all__ = [
    "PENDING_STATES",
    "Attempt",
    "Bounce",
    "Job",
    "JobState",
    "Outbox",
    "StateCount",
    "count_jobs",
    "find_jobs",
    "job_attempts",
    "list_jobs",
    "queue_jobs",
    "read_job",
]


_DUE_STATES = (JobState.QUEUED, JobState.DEFERRED)
# Still to be sent, like Postfix's mailq: what `gateway queue list` shows by default, and what
# retention keeps whatever its age; a job in these states may still be sent, so its message
# must be kept until it is.


class _Lost:
    """finish()'s write found the lease another owner's: nothing was written."""


_LOST = _Lost()


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    reference: str
    kind: JobKind
    office: str | None
    mail_from: str
    recipients: tuple[str, ...]
    destination: str | None
    route: str
    state: JobState
    created_at: datetime
    next_attempt_at: datetime
    attempts: int
    last_reply: str | None
    about_job: int | None = None  # a bounce's failed relay

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            reference=row["reference"],
            kind=JobKind(row["kind"]),
            office=row["office"],
            mail_from=row["mail_from"],
            recipients=tuple(json.loads(row["recipients"])),
            destination=row["destination"],
            route=row["route"],
            state=JobState(row["state"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            next_attempt_at=datetime.fromisoformat(row["next_attempt_at"]),
            attempts=row["attempts"],
            last_reply=row["last_reply"],
            about_job=row["about_job"],
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt, as recorded: who we talked to and what they said."""

    started_at: datetime
    finished_at: datetime
    host: str
    code: int  # 0 when no SMTP reply was had (DNS, connection, timeout)
    reply: str
    outcome: JobState  # delivered, deferred or failed
    node: str | None = None  # who made it, as a shared store's reader tells; None: this host


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery status notification queued for a failed relay."""

    job_id: int
    recipient: str


class Outbox:
    """The queue operations the delivery worker needs; each returns once it is durable."""

    def __init__(self, store: Store, *, owner: str, incarnations: str | None = None) -> None:
        self.store = store
        # Who holds leases taken here; recover() frees leases of earlier owners.
        self.owner = owner
        # The prefix every owner name of this worker's earlier lives starts with (its host and
        # worker slot), when other live workers share the store; None when none does.
        self.incarnations = incarnations

    async def recover(self) -> int:
        """Return jobs in flight under an earlier life of this worker (it crashed, or was
        killed) to the queue; returns how many.

        Alone on the store (`incarnations` None: one serving process), every other owner's
        lease is stale. Beside other workers (`[server] workers` above 1), only leases of
        owners named with this worker's own prefix are: the supervisor starts a worker slot
        again only once its previous process has died, so those leases have no one behind
        them, while another slot's may be an attempt under way right now, which releasing
        would send twice. Those of a slot that is gone for good (workers lowered) come back
        when their lease runs out, as claim() takes expired leases anyway.
        """

        def stale(column: str) -> tuple[str, tuple[object, ...]]:
            if self.incarnations is None:
                return f"{column} IS NOT ?", (self.owner,)
            prefix = self.incarnations
            return f"{column} IS NOT ? AND substr({column}, 1, ?) = ?", (
                self.owner,
                len(prefix),
                prefix,
            )

        def release(conn: sqlite3.Connection) -> int:
            others, values = stale("lease_owner")
            # A job held during its attempt keeps its hold; only the stale lease goes.
            conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL"
                f" WHERE state = ? AND lease_owner IS NOT NULL AND {others}",
                (JobState.HELD, *values),
            )
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, lease_owner = NULL, lease_until = NULL"
                f" WHERE state = ? AND {others}",
                (JobState.QUEUED, JobState.IN_FLIGHT, *values),
            )
            return cursor.rowcount

        return await self.store.write(release)

    async def claim(
        self, now: datetime, *, limit: int, lease_s: float, busy: Mapping[str, int], per_route: int
    ) -> list[Job]:
        """Lease up to `limit` due jobs, at most `per_route` in flight per route (counting
        `busy`, the routes' jobs this worker already has in flight), oldest due first."""
        if limit <= 0:
            return []

        def take(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE (state IN (?, ?) AND next_attempt_at <= ?)"
                " OR (state = ? AND lease_until < ?) ORDER BY next_attempt_at, id LIMIT ?",
                (*_DUE_STATES, iso(now), JobState.IN_FLIGHT, iso(now), limit * 10),
            ).fetchall()
            chosen = _pick(rows, limit=limit, busy=busy, per_route=per_route)
            until = iso(now + timedelta(seconds=lease_s))
            conn.executemany(
                "UPDATE jobs SET state = ?, lease_owner = ?, lease_until = ?, updated_at = ?"
                " WHERE id = ?",
                [(JobState.IN_FLIGHT, self.owner, until, iso(now), row["id"]) for row in chosen],
            )
            return [Job.from_row(row) for row in chosen]

        return await self.store.write(take)

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
        """Record an attempt and move the job to the attempt's outcome, in one transaction.

        `note` goes in front of the job's last reply (why it was given up, say). A finished
        relay hands its kept raw message over to retention with `raw_keep_until`, unless the
        message is still needed (another relay pending, or mail for postmaster). With
        `bounce`, a failed relay queues a delivery status notification to the original sender
        when, and only when, that sender was authenticated, and returns it.
        With `sent`, the mail as it was sent is kept (sentmail.py) in that same transaction:
        the store never says delivered without saying what.

        Raises:
            LeaseLost: the job's lease is no longer this owner's; nothing was written.
            StoreError: the store could not be written.
        """

        def record(conn: sqlite3.Connection) -> Bounce | _Lost | None:
            number = job.attempts + 1
            due = next_attempt_at or attempt.finished_at
            # An operator may have held the job during this attempt (lease-safe hold): a
            # deferral keeps it held; a final outcome leaves nothing to hold. Only while the
            # lease is still ours: another owner's state is not this attempt's to overwrite.
            moved = conn.execute(
                "UPDATE jobs SET state = CASE WHEN state = ? AND ? = ? THEN state ELSE ? END,"
                " attempts = ?, next_attempt_at = ?, last_reply = ?,"
                " lease_owner = NULL, lease_until = NULL, updated_at = ?"
                " WHERE id = ? AND lease_owner = ?",
                (
                    JobState.HELD,
                    attempt.outcome,
                    JobState.DEFERRED,
                    attempt.outcome,
                    number,
                    iso(due),
                    f"{note}; last: {_summary(attempt)}" if note else _summary(attempt),
                    iso(attempt.finished_at),
                    job.id,
                    self.owner,
                ),
            )
            if moved.rowcount == 0:
                return _LOST
            conn.execute(
                "INSERT INTO attempts VALUES (?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    number,
                    iso(attempt.started_at),
                    iso(attempt.finished_at),
                    attempt.host,
                    attempt.code,
                    attempt.reply,
                    attempt.outcome,
                ),
            )
            if raw_keep_until is not None:
                _release_raw(conn, job.reference, raw_keep_until)
            if sent is not None:
                insert_sent(conn, *sent)
            return _queue_bounce(conn, job, attempt.finished_at) if bounce else None

        result = await self.store.write(record)
        if isinstance(result, _Lost):
            raise LeaseLost(f"job {job.id} is no longer leased to {self.owner}")
        return result

    async def renew(self, job: Job, now: datetime, *, lease_s: float) -> bool:
        """Extend this owner's lease on `job` to `lease_s` seconds from `now`, as claim() set
        it; False when the lease is no longer ours (taken over, or recovered).

        Raises:
            StoreError: the store could not be written.
        """

        def extend(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ?"
                " AND state IN (?, ?)",
                (
                    iso(now + timedelta(seconds=lease_s)),
                    job.id,
                    self.owner,
                    JobState.IN_FLIGHT,
                    JobState.HELD,
                ),
            )
            return cursor.rowcount == 1

        return await self.store.write(extend)

    async def release(self, job: Job, now: datetime) -> None:
        """Give a job leased here back untried (shutdown), due again at once; a job whose
        lease has passed to another owner is left to that owner."""

        def give_back(conn: sqlite3.Connection) -> None:
            # Held during this attempt: it stays held, without the lease it no longer has.
            conn.execute(
                "UPDATE jobs SET state = CASE WHEN state = ? THEN state ELSE ? END,"
                " lease_owner = NULL, lease_until = NULL, updated_at = ?"
                " WHERE id = ? AND lease_owner = ? AND state IN (?, ?)",
                (
                    JobState.HELD,
                    JobState.QUEUED,
                    iso(now),
                    job.id,
                    self.owner,
                    JobState.IN_FLIGHT,
                    JobState.HELD,
                ),
            )

        await self.store.write(give_back)

    async def take_operator_actions(self, now: datetime) -> list[OperatorAction]:
        """Operators' queue actions not yet logged, marked logged (queueactions.py)."""
        # queueactions.py builds on this module's Job, so it is imported where it is used.
        from gateway.store.queueactions import take_operator_actions

        return await take_operator_actions(self.store, now)


def _queue_bounce(conn: sqlite3.Connection, relay: Job, at: datetime) -> Bounce | None:
    # RFC 5321 §6.1: mail we accepted and cannot deliver is reported to its sender, but
    # never to a sender we could not authenticate (backscatter) nor to the null sender.
    row = conn.execute(
        "SELECT mail_from FROM messages WHERE reference = ? AND sender_authenticated = 1"
        " AND mail_from != ''",
        (relay.reference,),
    ).fetchone()
    if row is None:
        return None
    sender = str(row["mail_from"])
    cursor = conn.execute(
        "INSERT INTO jobs (reference, kind, office, mail_from, recipients, route, created_at,"
        " next_attempt_at, updated_at, about_job) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            relay.reference,
            JobKind.BOUNCE,
            relay.office,
            "",
            json.dumps([sender]),
            sender.rpartition("@")[2].lower(),
            iso(at),
            iso(at),
            iso(at),
            relay.id,
        ),
    )
    assert cursor.lastrowid is not None
    return Bounce(cursor.lastrowid, sender)


def _release_raw(conn: sqlite3.Connection, reference: str, keep_until: datetime) -> None:
    conn.execute(
        "UPDATE raw_messages SET keep_until = ? WHERE reference = ? AND keep_until IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM jobs WHERE reference = ? AND kind = ?"
        "  AND state IN (?, ?, ?, ?))"
        " AND NOT EXISTS (SELECT 1 FROM message_recipients WHERE reference = ?"
        "  AND kind = 'postmaster')",
        (iso(keep_until), reference, reference, JobKind.RELAY, *PENDING_STATES, reference),
    )


def _pick(
    rows: list[sqlite3.Row], *, limit: int, busy: Mapping[str, int], per_route: int
) -> list[sqlite3.Row]:
    taken: dict[str, int] = dict(busy)
    chosen: list[sqlite3.Row] = []
    for row in rows:
        route = row["route"]
        if taken.get(route, 0) >= per_route:
            continue
        taken[route] = taken.get(route, 0) + 1
        chosen.append(row)
        if len(chosen) == limit:
            break
    return chosen


def _summary(attempt: Attempt) -> str:
    host = f"{attempt.host}: " if attempt.host else ""
    code = f"{attempt.code} " if attempt.code else ""
    return f"{host}{code}{attempt.reply}"[:1000]


# ---------------------------------------------------------------------------------------------
# Operators' commands: synchronous, on a connection of their own (another process may be
# serving). Writes here are single statements; SQLite's locking orders them with the server.


def list_jobs(conn: sqlite3.Connection, *, states: tuple[str, ...] = ()) -> list[Job]:
    """Jobs, oldest first; all states but deleted, or just `states`."""
    if states:
        marks = ",".join("?" * len(states))
        rows = conn.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states)
    else:
        rows = conn.execute("SELECT * FROM jobs WHERE state != ? ORDER BY id", (JobState.DELETED,))
    return [Job.from_row(row) for row in rows]


def find_jobs(
    conn: sqlite3.Connection,
    *,
    reference: str | None = None,
    kind: str | None = None,
    state: str | None = None,
) -> list[Job]:
    """Jobs of any state (deleted ones too), oldest first; each argument given narrows it."""
    where, params = ["1"], []
    for column, value in (("reference", reference), ("kind", kind), ("state", state)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = conn.execute(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id", params)
    return [Job.from_row(row) for row in rows]


@dataclass(frozen=True, slots=True)
class StateCount:
    """How many jobs are in one state, and when the oldest of them was created."""

    count: int
    oldest: datetime


def count_jobs(conn: sqlite3.Connection, states: Sequence[JobState]) -> dict[JobState, StateCount]:
    """Each of `states` that has jobs, with their count and oldest, in one read."""
    marks = ",".join("?" * len(states))
    rows = conn.execute(
        f"SELECT state, count(*), min(created_at) FROM jobs WHERE state IN ({marks})"
        " GROUP BY state",
        tuple(states),
    ).fetchall()
    return {
        JobState(state): StateCount(count, datetime.fromisoformat(oldest))
        for state, count, oldest in rows
    }


def queue_jobs(
    conn: sqlite3.Connection, reference: str, jobs: Sequence[JobRecord], now: datetime
) -> list[int] | None:
    """Queue jobs about a received message in one transaction; returns their ids, or None
    when the store has no such message.

    Due at once: at the message's arrival, not `now`, so that a gateway serving with --as-of
    finds them due as well.
    """
    row = conn.execute(
        "SELECT received_at FROM messages WHERE reference = ?", (reference,)
    ).fetchone()
    if row is None:
        return None
    due = min(iso(now), row["received_at"])
    ids: list[int] = []
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for job in jobs:
            cursor = conn.execute(
                "INSERT INTO jobs (reference, kind, office, mail_from, recipients, route,"
                " created_at, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    reference,
                    job.kind,
                    job.office,
                    job.mail_from,
                    json.dumps(list(job.recipients)),
                    job.route,
                    iso(now),
                    due,
                    iso(now),
                ),
            )
            assert cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
    return ids


def read_job(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else Job.from_row(row)


def job_attempts(conn: sqlite3.Connection, job_id: int) -> list[Attempt]:
    rows = conn.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,))
    return [
        Attempt(
            started_at=datetime.fromisoformat(r["started_at"]),
            finished_at=datetime.fromisoformat(r["finished_at"]),
            host=r["host"],
            code=r["code"],
            reply=r["reply"],
            outcome=JobState(r["outcome"]),
        )
        for r in rows
    ]
