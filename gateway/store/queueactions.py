"""Operators' queue actions by filter (`gateway queue hold|release|flush|retry|delete`). Each is
one transaction that changes the jobs and journals the action in operator_actions; the
serving gateway, the one writer of the audit log, logs journalled actions at its next poll
(take_operator_actions), so an action taken beside it is an audit event without a second
writer on the log. The journal's table is part of the schema (schema.py, version 3).

The values and the rules (which states each action applies to, what it sets) are both
backends'; the functions taking a sqlite3 connection are the SQLite file's, and
postgres/operator.py applies the same rules to the shared store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.store.db import Store, connect, iso
from gateway.store.outbox import Job
from gateway.store.schema import require_current
from gateway.vocabulary import JobState

__all__ = [
    "ACTION_RULES",
    "ActionRule",
    "JobFilter",
    "OperatorAction",
    "QueueAction",
    "QueuedJob",
    "change_jobs",
    "lease_node",
    "matching_jobs",
    "narrow",
    "queued_jobs",
    "read_queued",
    "select_jobs",
    "take_operator_actions",
]


class QueueAction(StrEnum):
    HOLD = "hold"
    RELEASE = "release"
    FLUSH = "flush"
    RETRY = "retry"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs an operator means; every field given narrows it, none given means all."""

    ids: tuple[int, ...] = ()
    states: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    since: datetime | None = None  # created at or after
    recipient: str | None = None  # one of the envelope recipients, in any case

    def describe(self) -> dict[str, object]:
        """The filter as given, for the journal and the audit event."""
        parts: dict[str, object] = {
            "ids": list(self.ids),
            "states": list(self.states),
            "kinds": list(self.kinds),
            "since": None if self.since is None else iso(self.since),
            "recipient": self.recipient,
        }
        return {key: value for key, value in parts.items() if value not in ([], None)}


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """An operator's queue action as journalled, waiting to be logged."""

    id: int
    action: QueueAction
    requested_at: datetime
    operator: str
    job_ids: tuple[int, ...]
    filter: dict[str, object]


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job as the operator's queue commands show it: where it came from, who has it now."""

    job: Job
    node: str | None  # the node that queued it (a shared store; None in a SQLite file)
    lease_owner: str | None  # the worker whose attempt is out ("mx2:4242:7f..."), if any
    lease_until: datetime | None


def lease_node(owner: str) -> str:
    """The node a lease owner names: "mx2" of "mx2:4242:7f..." or of "mx2/w1/4242:7f..."."""
    return re.split(r"[:/]", owner, maxsplit=1)[0]


@dataclass(frozen=True, slots=True)
class ActionRule:
    """The states an action applies to (a --state filter can only narrow them) and what it
    sets, as SQL plain enough for either backend (postgres/operator.py applies it too)."""

    states: tuple[JobState, ...]
    assignment: str
    # Only jobs no worker holds: a held job still out on its attempt is not gone.
    is_unleased_only: bool = False


ACTION_RULES: dict[QueueAction, ActionRule] = {
    # An in-flight job is held too: its attempt runs on, and finish() keeps it held if the
    # attempt is deferred. Its lease fields stay, so release can tell it is still out.
    QueueAction.HOLD: ActionRule(
        (JobState.QUEUED, JobState.DEFERRED, JobState.IN_FLIGHT), "state = 'held'"
    ),
    # Back to where it was: still leased (the hold came mid-attempt), never tried, or deferred
    # with its next attempt time kept (`flush` makes it due now), as `postsuper -H` does.
    QueueAction.RELEASE: ActionRule(
        (JobState.HELD,),
        "state = CASE WHEN lease_owner IS NOT NULL THEN 'in-flight'"
        " WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END",
    ),
    # Due "now" is the creation time, not the clock: a gateway serving --as-of finds it due too.
    QueueAction.FLUSH: ActionRule((JobState.DEFERRED,), "next_attempt_at = created_at"),
    QueueAction.RETRY: ActionRule(
        (JobState.QUEUED, JobState.DEFERRED, JobState.FAILED),
        "state = 'queued', next_attempt_at = created_at",
    ),
    QueueAction.DELETE: ActionRule(
        (JobState.QUEUED, JobState.DEFERRED, JobState.FAILED, JobState.HELD),
        "state = 'deleted'",
        is_unleased_only=True,
    ),
}


def queued_jobs(conn: sqlite3.Connection, which: JobFilter) -> list[QueuedJob]:
    """The jobs `which` names, oldest first, with their leases."""
    where, params = _where(which, which.states)
    rows = conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", params)
    return [_queued(row) for row in rows]


def read_queued(conn: sqlite3.Connection, job_id: int) -> QueuedJob | None:
    """One job with its lease, or None."""
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _queued(row)


def _queued(row: sqlite3.Row) -> QueuedJob:
    until = row["lease_until"]
    return QueuedJob(
        Job.from_row(row),
        node=None,
        lease_owner=row["lease_owner"],
        lease_until=None if until is None else datetime.fromisoformat(until),
    )


def select_jobs(conn: sqlite3.Connection, which: JobFilter) -> list[Job]:
    """The jobs `which` names, oldest first."""
    return [queued.job for queued in queued_jobs(conn, which)]


def matching_jobs(conn: sqlite3.Connection, action: QueueAction, which: JobFilter) -> list[Job]:
    """The jobs `action` would change: those of `which` it applies to, as change_jobs
    chooses them (so a dry run counts what the change would do)."""
    where, params = _action_where(ACTION_RULES[action], which)
    rows = conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", params)
    return [Job.from_row(row) for row in rows]


def _action_where(rule: ActionRule, which: JobFilter) -> tuple[str, list[object]]:
    """The jobs of `which` that `rule` applies to: in one of its states, and not out on an
    attempt when it leaves those alone."""
    where, params = _where(which, narrow(which.states, rule.states))
    if rule.is_unleased_only:
        where += " AND lease_owner IS NULL"
    return where, params


def change_jobs(
    conn: sqlite3.Connection,
    action: QueueAction,
    which: JobFilter,
    *,
    now: datetime,
    operator: str,
) -> list[int]:
    """Apply `action` to the jobs of `which` it applies to, and journal it, in one
    transaction; returns the ids changed (none changed: nothing journalled).

    Raises:
        SchemaVersionError: the store is not at this code's schema version.
    """
    rule = ACTION_RULES[action]
    where, params = _action_where(rule, which)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        require_current(conn)  # in the transaction: no gateway migrates it meanwhile
        rows = conn.execute(
            f"UPDATE jobs SET {rule.assignment}, updated_at = ? WHERE {where} RETURNING id",
            [iso(now), *params],
        ).fetchall()
        ids = sorted(int(row[0]) for row in rows)
        if ids:
            _journal(conn, action, ids, which, now=now, operator=operator)
    return ids


async def take_operator_actions(store: Store, now: datetime) -> list[OperatorAction]:
    """Operators' actions not yet logged, oldest first, marked logged as of `now`.

    Marked in the same transaction that reads them: an action is logged at most once; a
    crash between this and the log line loses that line, as any crash before a write may.
    The worker asks at every poll and the answer is nearly always none, so a read-only look
    comes first: an idle gateway takes no write lock and writes nothing for it.
    """
    if not await asyncio.to_thread(_has_unlogged, store):
        return []

    def take(conn: sqlite3.Connection) -> list[OperatorAction]:
        rows = conn.execute(
            "SELECT * FROM operator_actions WHERE logged_at IS NULL ORDER BY id"
        ).fetchall()
        conn.executemany(
            "UPDATE operator_actions SET logged_at = ? WHERE id = ?",
            [(iso(now), row["id"]) for row in rows],
        )
        return [_action(row) for row in rows]

    return await store.write(take)


def _has_unlogged(store: Store) -> bool:
    # Its own read-only connection, not the writer's queue: WAL readers take no lock a
    # writer waits on, and the partial index makes this one probe.
    with contextlib.closing(connect(store.path, readonly=True)) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM operator_actions WHERE logged_at IS NULL)"
        ).fetchone()
    return bool(row[0])


def _journal(
    conn: sqlite3.Connection,
    action: QueueAction,
    ids: Sequence[int],
    which: JobFilter,
    *,
    now: datetime,
    operator: str,
) -> None:
    conn.execute(
        "INSERT INTO operator_actions (action, requested_at, operator, job_ids, filter)"
        " VALUES (?,?,?,?,?)",
        (action, iso(now), operator, json.dumps(list(ids)), json.dumps(which.describe())),
    )


def _action(row: sqlite3.Row) -> OperatorAction:
    return OperatorAction(
        id=row["id"],
        action=QueueAction(row["action"]),
        requested_at=datetime.fromisoformat(row["requested_at"]),
        operator=row["operator"],
        job_ids=tuple(json.loads(row["job_ids"])),
        filter=json.loads(row["filter"]),
    )


def narrow(asked: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """The states an action may change that a --state filter asks for: a state outside what
    it applies to selects nothing rather than everything."""
    chosen = tuple(s for s in allowed if s in asked) if asked else tuple(allowed)
    return chosen or ("",)  # "" is no state: nothing matches


def _where(which: JobFilter, states: Sequence[str]) -> tuple[str, list[object]]:
    clauses, params = ["1"], list[object]()
    for column, values in (("id", which.ids), ("state", states), ("kind", which.kinds)):
        if values:
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    if which.since is not None:
        clauses.append("created_at >= ?")
        params.append(iso(which.since))
    if which.recipient is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(recipients) WHERE lower(value) = ?)")
        params.append(which.recipient.lower())
    return " AND ".join(clauses), params
