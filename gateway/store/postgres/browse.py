"""Browsing the shared store's attempts a page at a time, newest first, by keyset.

store/browse.py's paging (`page_attempts`) over windows read from PostgreSQL: each table's
newest rows older than the key, with records.py's filters as postgres/records.py writes
them in SQL, so a page holds what `gateway audit list` lists on any node, newest first.
References compare byte for byte (`COLLATE "C"`), as Python and SQLite order them, whatever
the database's collation. Nothing here writes or formats.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from gateway.store.browse import Key, Page, merge_window, page_attempts
from gateway.store.postgres.records import (
    message_where,
    messages_from,
    refusal_where,
    refusals_from,
)
from gateway.store.records import AttemptRecord, Filters

__all__ = ["browse_shared_attempts"]

Row = dict[str, Any]


def browse_shared_attempts(
    conn: psycopg.Connection[Row], filters: Filters, *, before: Key | None, size: int
) -> Page:
    """Up to `size` attempts of every node matching `filters`, newest first, older than
    `before`; psycopg's errors pass."""

    def window(key: Key | None, limit: int) -> tuple[list[AttemptRecord], bool]:
        messages = _messages_before(conn, filters, key, limit)
        refusals = [] if filters.message_id else _refusals_before(conn, filters, key, limit)
        return merge_window(messages, refusals, limit)

    return page_attempts(window, filters, before=before, size=size)


def _before(at: str, reference: str, key: Key | None) -> tuple[list[str], list[object]]:
    if key is None:
        return [], []
    # `at <= key` first, so the index on the time carries the range; the rest breaks ties.
    when = datetime.fromisoformat(key.at)
    return (
        [f'{at} <= %s AND ({at} < %s OR {reference} COLLATE "C" < %s)'],
        [when, when, key.reference],
    )


def _messages_before(
    conn: psycopg.Connection[Row], filters: Filters, key: Key | None, limit: int
) -> list[AttemptRecord]:
    where, params = message_where(filters)
    more, more_params = _before("m.received_at", "m.reference", key)
    condition = " AND ".join([*where, *more]) or "true"
    source = (
        f"(SELECT * FROM messages m WHERE {condition}"
        f' ORDER BY m.received_at DESC, m.reference COLLATE "C" DESC LIMIT {int(limit)})'
    )
    return messages_from(conn, source, [*params, *more_params])


def _refusals_before(
    conn: psycopg.Connection[Row], filters: Filters, key: Key | None, limit: int
) -> list[AttemptRecord]:
    where, params = refusal_where(filters)
    more, more_params = _before("at", "reference", key)
    sql = (
        f"SELECT * FROM refusals WHERE {' AND '.join([*where, *more]) or 'true'}"
        f' ORDER BY at DESC, reference COLLATE "C" DESC LIMIT {int(limit)}'
    )
    return refusals_from(conn, sql, [*params, *more_params])
