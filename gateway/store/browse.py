"""Browsing attempts a page at a time, newest first, by keyset: (arrival time, reference).

The console's attempts page (http/console.py) asks for one page after a key, never an
OFFSET, so that page 5,000 of a million attempts costs what the first page does. The filters
and the rows are records.py's own (its SQL conditions, row mapping and the filters SQL cannot
apply), so a page holds exactly what `gateway audit list` lists, newest first. The existing
indexes (messages_received, refusals_at) carry the range: `at <= key` walks them backwards
and the reference breaks ties among equal times. The paging (`page_attempts`) asks only for
windows of rows, so PostgreSQL's reader (postgres/browse.py) pages the same way on its own
SQL. Nothing here writes or formats.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

from gateway.store.records import (
    _MESSAGES,
    _REFUSALS,
    AttemptRecord,
    Filters,
    _grouped,
    _message,
    _message_where,
    _refusal,
    _refusal_where,
    _refused_for,
    matches,
)
from gateway.vocabulary import JobKind

__all__ = ["Key", "Page", "Window", "browse_attempts", "key_of", "merge_window", "page_attempts"]

# Rows read from each table per step while filling a page whose filters SQL cannot apply.
_STEP = 500
# At most this many rows are looked at for one page: a filter that matches nothing in a
# million attempts answers in bounded time, with a key to go on from.
_SCAN_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class Key:
    """Where a page ends: the stored arrival time (UTC, ISO) and the reference."""

    at: str
    reference: str


@dataclass(frozen=True, slots=True)
class Page:
    attempts: tuple[AttemptRecord, ...]
    next_key: Key | None  # older attempts may follow from here; None: this is the last page
    is_partial: bool = False  # stopped at the scan limit before the page was full


def key_of(attempt: AttemptRecord) -> Key:
    return Key(attempt.at.astimezone(UTC).isoformat(timespec="microseconds"), attempt.reference)


# The newest `limit` attempts older than a key by SQL alone, and whether that is all of them.
Window = Callable[[Key | None, int], tuple[list[AttemptRecord], bool]]


def browse_attempts(
    conn: sqlite3.Connection, filters: Filters, *, before: Key | None, size: int
) -> Page:
    """Up to `size` attempts matching `filters`, newest first, older than `before`."""

    def window(key: Key | None, limit: int) -> tuple[list[AttemptRecord], bool]:
        return _window(conn, filters, before=key, limit=limit)

    return page_attempts(window, filters, before=before, size=size)


def page_attempts(window: Window, filters: Filters, *, before: Key | None, size: int) -> Page:
    """Up to `size` attempts matching `filters`, newest first, older than `before`, from the
    windows `window` reads (as many as the filters SQL cannot apply need, within a bound)."""
    found: list[AttemptRecord] = []
    key, scanned = before, 0
    while len(found) < size:
        step = max(size, _STEP) if _needs_python(filters) else size + 1
        rows, is_last = window(key, step)
        scanned += len(rows)
        found += [a for a in rows if matches(a, filters)]
        if is_last or not rows:
            return Page(tuple(found[:size]), key_of(found[size - 1]) if len(found) > size else None)
        key = key_of(rows[-1])
        if scanned >= _SCAN_LIMIT:
            break
    if len(found) > size:
        return Page(tuple(found[:size]), key_of(found[size - 1]))
    return Page(tuple(found), key, is_partial=len(found) < size)


def _needs_python(filters: Filters) -> bool:
    return bool(filters.address or filters.decision or filters.notice)


def merge_window(
    messages: list[AttemptRecord], refusals: list[AttemptRecord], limit: int
) -> tuple[list[AttemptRecord], bool]:
    """The newest `limit` of each table's newest `limit`, and whether that is all.

    Of the two merged only the first `limit` are sure (past them, the table that gave out its
    `limit` may hold newer rows not yet read)."""
    merged = sorted([*messages, *refusals], key=lambda a: (a.at, a.reference), reverse=True)
    is_last = len(messages) < limit and len(refusals) < limit
    return merged[:limit], is_last and len(merged) <= limit


def _window(
    conn: sqlite3.Connection, filters: Filters, *, before: Key | None, limit: int
) -> tuple[list[AttemptRecord], bool]:
    messages = _messages_before(conn, filters, before, limit)
    refusals = [] if filters.message_id else _refusals_before(conn, filters, before, limit)
    return merge_window(messages, refusals, limit)


def _before(at: str, reference: str, key: Key | None) -> tuple[list[str], list[str]]:
    if key is None:
        return [], []
    # `at <= ?` first, so the index on the time carries the range; the rest breaks ties.
    return [f"{at} <= ? AND ({at} < ? OR {reference} < ?)"], [key.at, key.at, key.reference]


def _messages_before(
    conn: sqlite3.Connection, filters: Filters, key: Key | None, limit: int
) -> list[AttemptRecord]:
    where, params = _message_where(filters)
    more, more_params = _before("m.received_at", "m.reference", key)
    condition = " AND ".join([*where, *more]) or "1"
    source = (
        f"(SELECT * FROM messages m WHERE {condition}"
        f" ORDER BY m.received_at DESC, m.reference DESC LIMIT {int(limit)})"
    )
    sql = _MESSAGES.format(source=source, where="1", refused_for=_refused_for(conn))
    rows = conn.execute(sql, [JobKind.RELAY, JobKind.FORWARD, *params, *more_params]).fetchall()
    return [_message(group) for group in _grouped(rows)]


def _refusals_before(
    conn: sqlite3.Connection, filters: Filters, key: Key | None, limit: int
) -> list[AttemptRecord]:
    where, params = _refusal_where(filters)
    more, more_params = _before("at", "reference", key)
    sql = _REFUSALS.format(where=" AND ".join([*where, *more]) or "1")
    sql = sql.replace("ORDER BY at, reference", "ORDER BY at DESC, reference DESC")
    rows = conn.execute(f"{sql} LIMIT {int(limit)}", [*params, *more_params]).fetchall()
    return [_refusal(row) for row in rows]
