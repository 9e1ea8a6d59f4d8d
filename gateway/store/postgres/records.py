"""The record of attempts in the shared store: records.py's find_attempts for PostgreSQL.

The same attempts as records.py finds in the SQLite file, from every node that shares the
store, each naming the node that took it. The filters SQL cannot apply, the reasons and the
values are records.py's, so both backends answer an operator alike. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC
from typing import Any

import psycopg
from psycopg.rows import dict_row

from gateway.errors import StoreError
from gateway.store.postgres.store import where as describe
from gateway.store.records import (
    AttemptRecord,
    Filters,
    Kind,
    matches,
    reason_for,
    refusal_action,
)
from gateway.vocabulary import JobKind, NoticeStatus, NoticeStatusKind, parse_notice_status

__all__ = [
    "find_shared_attempts",
    "message_where",
    "messages_from",
    "refusal_record",
    "refusal_where",
    "refusals_from",
    "shared_attempts",
]

Row = dict[str, Any]

_MESSAGES = """
SELECT m.reference, m.received_at, m.session_id, m.peer_ip, m.helo, m.mail_from, m.message_id,
       m.subject, m.size, m.sha256, m.attachments, m.a_numbers, m.outcome, m.reply, m.notice,
       m.refused_for, m.node,
       r.recipient, r.office, r.phase, r.action, r.reason,
       (SELECT j.state FROM jobs j WHERE j.reference = m.reference
        AND j.kind NOT IN (%s, %s) ORDER BY j.id DESC LIMIT 1) AS notice_state
FROM {source} m JOIN message_recipients r ON r.reference = m.reference
ORDER BY m.received_at, m.reference, r.seq
"""
_REFUSALS = "SELECT * FROM refusals WHERE {where} ORDER BY at, reference"


def find_shared_attempts(dsn: str, filters: Filters) -> list[AttemptRecord]:
    """Every node's attempts matching `filters`, oldest first.

    Raises:
        StoreError: the server cannot be reached or read (no password in the text).
    """
    try:
        with psycopg.connect(dsn, row_factory=dict_row, connect_timeout=5) as conn:
            return shared_attempts(conn, filters)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StoreError(f"{describe(dsn)}: {first}") from exc


def shared_attempts(conn: psycopg.Connection[Row], filters: Filters) -> list[AttemptRecord]:
    """find_shared_attempts on an open connection (rows as dicts); psycopg's errors pass."""
    messages = _messages(conn, filters)
    refusals = [] if filters.message_id else _refusals(conn, filters)
    merged = sorted([*messages, *refusals], key=lambda a: (a.at, a.reference))
    return [a for a in merged if matches(a, filters)]


def _common_where(
    filters: Filters, *, at: str, sender: str, reference: str
) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if filters.since is not None:
        where.append(f"{at} >= %s")
        params.append(filters.since.astimezone(UTC))
    if filters.until is not None:
        where.append(f"{at} < %s")
        params.append(filters.until.astimezone(UTC))
    if filters.sender is not None:
        where.append(f"lower({sender}) = lower(%s)")
        params.append(_null_sender(filters.sender))
    if filters.sender_domain:
        # As SQLite's LIKE: ASCII case ignored, the domain exactly, not its subdomains.
        where.append(f"{sender} ILIKE %s ESCAPE '\\'")
        params.append("%@" + _like_escape(filters.sender_domain.strip().lower()))
    if filters.reference:
        where.append(f"{reference} = %s")
        params.append(filters.reference.strip().upper())
    return where, params


def message_where(filters: Filters) -> tuple[list[str], list[object]]:
    """The SQL conditions on `messages m` the filters make (postgres/browse.py pages by them)."""
    where, params = _common_where(
        filters, at="m.received_at", sender="m.mail_from", reference="m.reference"
    )
    if filters.office:
        where.append(
            "EXISTS (SELECT 1 FROM message_recipients x"
            " WHERE x.reference = m.reference AND x.office = %s)"
        )
        params.append(filters.office)
    if filters.message_id:
        bare = filters.message_id.strip().strip("<>")
        where.append("m.message_id IN (%s, %s)")
        params += [f"<{bare}>", bare]
    return where, params


def messages_from(
    conn: psycopg.Connection[Row], source: str, params: Sequence[object]
) -> list[AttemptRecord]:
    """The attempts of the messages `source` selects (a table or a subquery, with `params`)."""
    sql = _MESSAGES.format(source=source)
    # The subquery's kinds come first: they are the first placeholders in the statement.
    rows = conn.execute(sql, [str(JobKind.RELAY), str(JobKind.FORWARD), *params]).fetchall()
    return [_message(group) for group in _grouped(rows)]


def _messages(conn: psycopg.Connection[Row], filters: Filters) -> list[AttemptRecord]:
    where, params = message_where(filters)
    source = f"(SELECT * FROM messages m WHERE {' AND '.join(where) or 'true'})"
    return messages_from(conn, source, params)


def _grouped(rows: Sequence[Row]) -> Iterator[list[Row]]:
    group: list[Row] = []
    for row in rows:
        if group and row["reference"] != group[0]["reference"]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _message(rows: Sequence[Row]) -> AttemptRecord:
    first = rows[0]
    # As records.py: the first recipient with an office speaks for the transaction.
    lead = next((r for r in rows if r["office"] is not None), first)
    notice = parse_notice_status(first["notice"])
    if notice.kind is NoticeStatusKind.QUEUED and first["notice_state"]:
        notice = NoticeStatus(NoticeStatusKind(first["notice_state"]))
    return AttemptRecord(
        reference=first["reference"],
        kind=Kind.MESSAGE,
        at=first["received_at"].astimezone(UTC),
        session_id=first["session_id"],
        peer_ip=first["peer_ip"],
        helo=first["helo"],
        sender=first["mail_from"],
        recipients=tuple(r["recipient"] for r in rows),
        office=lead["office"],
        phase=lead["phase"],
        action=lead["action"],
        decision=first["outcome"],
        reason=first["refused_for"] or reason_for(first["outcome"], notice, lead["reason"]),
        notice=notice,
        reply=first["reply"],
        message_id=first["message_id"],
        subject=first["subject"],
        size=first["size"],
        sha256=first["sha256"],
        attachments=tuple(a["filename"] for a in first["attachments"]),
        a_numbers=tuple(first["a_numbers"]),
        node=first["node"],
    )


def refusal_where(filters: Filters) -> tuple[list[str], list[object]]:
    """The SQL conditions on `refusals` the filters make (postgres/browse.py pages by them)."""
    where, params = _common_where(filters, at="at", sender="mail_from", reference="reference")
    if filters.office:
        where.append("office = %s")
        params.append(filters.office)
    return where, params


def refusals_from(
    conn: psycopg.Connection[Row], sql: str, params: Sequence[object]
) -> list[AttemptRecord]:
    """The attempts of the refusals `sql` selects (every column of `refusals`)."""
    return [refusal_record(row) for row in conn.execute(sql, params).fetchall()]


def _refusals(conn: psycopg.Connection[Row], filters: Filters) -> list[AttemptRecord]:
    where, params = refusal_where(filters)
    return refusals_from(conn, _REFUSALS.format(where=" AND ".join(where) or "true"), params)


def refusal_record(row: Row) -> AttemptRecord:
    return AttemptRecord(
        reference=row["reference"],
        kind=Kind.REFUSAL,
        at=row["at"].astimezone(UTC),
        session_id=row["session_id"],
        peer_ip=row["peer_ip"],
        helo=row["helo"],
        sender=row["mail_from"],
        recipients=(row["recipient"],),
        office=row["office"],
        phase=row["phase"],
        action=refusal_action(row["phase"]),
        decision="refused",
        reason=row["reason"],
        notice=NoticeStatus(NoticeStatusKind.NONE),
        reply=row["reply"],
        node=row["node"],
    )


def _null_sender(sender: str) -> str:
    return "" if sender.strip() in ("", "<>") else sender.strip()


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
