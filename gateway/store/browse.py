"""Browsing attempts a page at a time, newest first, by keyset: (arrival time, reference).

The console's attempts page (http/console.py) asks for one page beyond a key, older or
newer, never an OFFSET, so that page 5,000 of a million attempts costs what the first page
does, and a page reached by its key holds the same rows however many attempts arrive
meanwhile. The filters and the rows are records.py's own (its SQL conditions, row mapping
and the filters SQL cannot apply), so a page holds exactly what `gateway audit list` lists,
newest first. The existing indexes (messages_received, refusals_at) carry the range:
`at <= key` walks them backwards, `at >= key` forwards, and the reference breaks ties among
equal times. The paging (`page_attempts`) asks only for windows of rows, so PostgreSQL's
reader (postgres/browse.py) pages the same way on its own SQL. Nothing here writes or
formats.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol

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
    attempts: tuple[AttemptRecord, ...]  # newest first
    next_key: Key | None  # older attempts may follow from here; None: this is the last page
    is_partial: bool = False  # stopped at the scan limit before the page was full
    newer_key: Key | None = None  # newer attempts may precede from here; None: the newest


def key_of(attempt: AttemptRecord) -> Key:
    return Key(attempt.at.astimezone(UTC).isoformat(timespec="microseconds"), attempt.reference)


class Window(Protocol):
    """The `limit` attempts nearest a key by SQL alone, in walk order (older ones newest
    first, or with `is_newer` newer ones oldest first; no key: from the newest, or the
    oldest), and whether that is all of them that way."""

    def __call__(
        self, key: Key | None, limit: int, *, is_newer: bool
    ) -> tuple[list[AttemptRecord], bool]: ...


def browse_attempts(
    conn: sqlite3.Connection,
    filters: Filters,
    *,
    before: Key | None = None,
    after: Key | None = None,
    size: int,
) -> Page:
    """Up to `size` attempts matching `filters`, newest first, beyond one key at most (as
    `page_attempts` takes them)."""

    def window(key: Key | None, limit: int, *, is_newer: bool) -> tuple[list[AttemptRecord], bool]:
        return _window(conn, filters, start=key, limit=limit, is_newer=is_newer)

    return page_attempts(window, filters, before=before, after=after, size=size)


def page_attempts(
    window: Window,
    filters: Filters,
    *,
    before: Key | None = None,
    after: Key | None = None,
    size: int,
) -> Page:
    """Up to `size` attempts matching `filters`, newest first, from the windows `window`
    reads (as many as the filters SQL cannot apply need, within a bound): the newest older
    than `before` (the newest of all without a key), or with `after` the oldest newer than
    it, which is the page an "Older" link from there came from; those rows stay the same as
    new attempts arrive above them. Give one key at most."""
    if after is None:
        found, older, is_partial = _walk(window, filters, before, size, is_newer=False)
        newer = key_of(found[0]) if before is not None and found else None
        return Page(tuple(found), older, is_partial, newer)
    found, newer, is_partial = _walk(window, filters, after, size, is_newer=True)
    # Older from the oldest shown; none shown (nothing newer matched): back to the newest.
    return Page(tuple(reversed(found)), key_of(found[0]) if found else None, is_partial, newer)


def _walk(
    window: Window, filters: Filters, start: Key | None, size: int, *, is_newer: bool
) -> tuple[list[AttemptRecord], Key | None, bool]:
    """Up to `size` matching attempts from `start` on, older ones (newest first) or newer
    ones (oldest first); the key to go on from (None: no more that way); whether the walk
    stopped at the scan limit before the page was full."""
    found: list[AttemptRecord] = []
    key, scanned = start, 0
    while len(found) < size:
        step = max(size, _STEP) if _needs_python(filters) else size + 1
        rows, is_last = window(key, step, is_newer=is_newer)
        scanned += len(rows)
        found += [a for a in rows if matches(a, filters)]
        if is_last or not rows:
            go_on = key_of(found[size - 1]) if len(found) > size else None
            return found[:size], go_on, False
        key = key_of(rows[-1])
        if scanned >= _SCAN_LIMIT:
            break
    if len(found) > size:
        return found[:size], key_of(found[size - 1]), False
    return found, key, len(found) < size


def _needs_python(filters: Filters) -> bool:
    return bool(filters.address or filters.decision or filters.notice)


def merge_window(
    messages: list[AttemptRecord], refusals: list[AttemptRecord], limit: int, *, is_newer: bool
) -> tuple[list[AttemptRecord], bool]:
    """The nearest `limit` of each table's nearest `limit` (older or newer), in walk order,
    and whether that is all.

    Of the two merged only the first `limit` are sure (past them, the table that gave out its
    `limit` may hold nearer rows not yet read)."""
    merged = sorted([*messages, *refusals], key=lambda a: (a.at, a.reference), reverse=not is_newer)
    is_last = len(messages) < limit and len(refusals) < limit
    return merged[:limit], is_last and len(merged) <= limit


def _window(
    conn: sqlite3.Connection, filters: Filters, *, start: Key | None, limit: int, is_newer: bool
) -> tuple[list[AttemptRecord], bool]:
    messages = _messages_beyond(conn, filters, start, limit, is_newer=is_newer)
    refusals = (
        []
        if filters.message_id
        else _refusals_beyond(conn, filters, start, limit, is_newer=is_newer)
    )
    return merge_window(messages, refusals, limit, is_newer=is_newer)


def _beyond(
    at: str, reference: str, key: Key | None, *, is_newer: bool
) -> tuple[list[str], list[str]]:
    if key is None:
        return [], []
    # The time's own bound first, so the index on the time carries the range (walked
    # backwards for older, forwards for newer); the reference breaks ties among equal times.
    if is_newer:
        return [f"{at} >= ? AND ({at} > ? OR {reference} > ?)"], [key.at, key.at, key.reference]
    return [f"{at} <= ? AND ({at} < ? OR {reference} < ?)"], [key.at, key.at, key.reference]


def _messages_beyond(
    conn: sqlite3.Connection, filters: Filters, key: Key | None, limit: int, *, is_newer: bool
) -> list[AttemptRecord]:
    where, params = _message_where(filters)
    more, more_params = _beyond("m.received_at", "m.reference", key, is_newer=is_newer)
    condition = " AND ".join([*where, *more]) or "1"
    order = "ASC" if is_newer else "DESC"
    source = (
        f"(SELECT * FROM messages m WHERE {condition}"
        f" ORDER BY m.received_at {order}, m.reference {order} LIMIT {int(limit)})"
    )
    sql = _MESSAGES.format(source=source, where="1", refused_for=_refused_for(conn))
    rows = conn.execute(sql, [JobKind.RELAY, JobKind.FORWARD, *params, *more_params]).fetchall()
    return [_message(group) for group in _grouped(rows)]


def _refusals_beyond(
    conn: sqlite3.Connection, filters: Filters, key: Key | None, limit: int, *, is_newer: bool
) -> list[AttemptRecord]:
    where, params = _refusal_where(filters)
    more, more_params = _beyond("at", "reference", key, is_newer=is_newer)
    sql = _REFUSALS.format(where=" AND ".join([*where, *more]) or "1")
    if not is_newer:
        sql = sql.replace("ORDER BY at, reference", "ORDER BY at DESC, reference DESC")
    rows = conn.execute(f"{sql} LIMIT {int(limit)}", [*params, *more_params]).fetchall()
    return [_refusal(row) for row in rows]
