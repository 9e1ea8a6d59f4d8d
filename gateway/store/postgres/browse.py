"""Browsing the shared store's attempts a page at a time, newest first, by keyset.

store/browse.py's paging (`page_attempts`) over windows read from PostgreSQL: each table's
nearest rows beyond the key, older (`at <= key`, descending) or newer (`at >= key`,
ascending), with records.py's filters as postgres/records.py writes them in SQL, so a page
holds what `gateway audit list` lists on any node, newest first. References compare byte for
byte (`COLLATE "C"`), as Python and SQLite order them, whatever the database's collation.
Nothing here writes or formats.
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
    conn: psycopg.Connection[Row],
    filters: Filters,
    *,
    before: Key | None = None,
    after: Key | None = None,
    size: int,
) -> Page:
    """Up to `size` attempts of every node matching `filters`, newest first, beyond one key
    at most (as `page_attempts` takes them); psycopg's errors pass."""

    def window(key: Key | None, limit: int, *, is_newer: bool) -> tuple[list[AttemptRecord], bool]:
        messages = _messages_beyond(conn, filters, key, limit, is_newer=is_newer)
        refusals = (
            []
            if filters.message_id
            else _refusals_beyond(conn, filters, key, limit, is_newer=is_newer)
        )
        return merge_window(messages, refusals, limit, is_newer=is_newer)

    return page_attempts(window, filters, before=before, after=after, size=size)


def _beyond(
    at: str, reference: str, key: Key | None, *, is_newer: bool
) -> tuple[list[str], list[object]]:
    if key is None:
        return [], []
    # The time's own bound first, so the index on the time carries the range (backwards for
    # older, forwards for newer); the reference breaks ties among equal times.
    when = datetime.fromisoformat(key.at)
    bound, beyond = (">=", ">") if is_newer else ("<=", "<")
    return (
        [f'{at} {bound} %s AND ({at} {beyond} %s OR {reference} COLLATE "C" {beyond} %s)'],
        [when, when, key.reference],
    )


def _order(is_newer: bool) -> str:
    return "ASC" if is_newer else "DESC"


def _messages_beyond(
    conn: psycopg.Connection[Row], filters: Filters, key: Key | None, limit: int, *, is_newer: bool
) -> list[AttemptRecord]:
    where, params = message_where(filters)
    more, more_params = _beyond("m.received_at", "m.reference", key, is_newer=is_newer)
    condition = " AND ".join([*where, *more]) or "true"
    order = _order(is_newer)
    source = (
        f"(SELECT * FROM messages m WHERE {condition}"
        f' ORDER BY m.received_at {order}, m.reference COLLATE "C" {order} LIMIT {int(limit)})'
    )
    return messages_from(conn, source, [*params, *more_params])


def _refusals_beyond(
    conn: psycopg.Connection[Row], filters: Filters, key: Key | None, limit: int, *, is_newer: bool
) -> list[AttemptRecord]:
    where, params = refusal_where(filters)
    more, more_params = _beyond("at", "reference", key, is_newer=is_newer)
    order = _order(is_newer)
    sql = (
        f"SELECT * FROM refusals WHERE {' AND '.join([*where, *more]) or 'true'}"
        f' ORDER BY at {order}, reference COLLATE "C" {order} LIMIT {int(limit)}'
    )
    return refusals_from(conn, sql, [*params, *more_params])
