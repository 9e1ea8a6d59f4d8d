"""Retention's deletes in PostgreSQL, a batch per transaction (store/purging.py's, for SQLite).

retention.py decides when and loops; PgStore's `purge_*` run one of these in a transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from gateway.store.purging import PENDING_STATES, Purged

__all__ = ["purge_expired_raw", "purge_messages", "purge_refusals", "purge_sent"]

Connection = psycopg.AsyncConnection[Any]
_PENDING = [str(state) for state in PENDING_STATES]


async def purge_messages(conn: Connection, *, before: datetime, limit: int) -> Purged:
    """Up to `limit` messages received before `before`, none with a job still to deliver."""
    cursor = await conn.execute(
        "SELECT reference FROM messages AS m WHERE received_at < %s AND NOT EXISTS ("
        " SELECT 1 FROM jobs AS j WHERE j.reference = m.reference AND j.state = ANY (%s))"
        " ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (before, _PENDING, limit),
    )
    keys = [row[0] for row in await cursor.fetchall()]
    if not keys:
        return Purged()

    async def delete(sql: str) -> int:
        return (await conn.execute(sql, (keys,))).rowcount

    # Children first; a bounce's job and the relay job it is about go in one statement.
    return Purged(
        attempts=await delete(
            "DELETE FROM attempts WHERE job_id IN (SELECT id FROM jobs WHERE reference = ANY (%s))"
        ),
        jobs=await delete("DELETE FROM jobs WHERE reference = ANY (%s)"),
        raw_messages=await delete("DELETE FROM raw_messages WHERE reference = ANY (%s)"),
        message_recipients=await delete(
            "DELETE FROM message_recipients WHERE reference = ANY (%s)"
        ),
        messages=await delete("DELETE FROM messages WHERE reference = ANY (%s)"),
    )


async def purge_refusals(conn: Connection, *, before: datetime, limit: int) -> int:
    """Up to `limit` refusals made before `before`, oldest first."""
    cursor = await conn.execute(
        "DELETE FROM refusals WHERE reference IN (SELECT reference FROM refusals"
        " WHERE at < %s ORDER BY at LIMIT %s FOR UPDATE SKIP LOCKED)",
        (before, limit),
    )
    return cursor.rowcount


async def purge_sent(conn: Connection, *, before: datetime, limit: int) -> int:
    """Up to `limit` notices kept as sent before `before`, oldest first."""
    cursor = await conn.execute(
        "DELETE FROM sent_notices WHERE (reference, job_id) IN (SELECT reference, job_id"
        " FROM sent_notices WHERE sent_at < %s ORDER BY sent_at LIMIT %s"
        " FOR UPDATE SKIP LOCKED)",
        (before, limit),
    )
    return cursor.rowcount


async def purge_expired_raw(conn: Connection, *, now: datetime, limit: int) -> int:
    """Up to `limit` raw copies whose retention ended (`limit` < 0: all), but never one still
    to be relayed or forwarded."""
    cursor = await conn.execute(
        "DELETE FROM raw_messages WHERE reference IN (SELECT r.reference FROM raw_messages AS r"
        " WHERE r.keep_until IS NOT NULL AND r.keep_until < %s AND NOT EXISTS (SELECT 1 FROM"
        " jobs AS j WHERE j.reference = r.reference AND j.kind IN ('relay', 'forward')"
        " AND j.state IN ('queued', 'in-flight', 'deferred')) LIMIT %s)",
        (now, None if limit < 0 else limit),
    )
    return cursor.rowcount
