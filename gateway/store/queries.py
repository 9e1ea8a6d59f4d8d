"""Reading the record: each received message, decision, refusal and kept copy, as values.

Other packages (delivery's composer, the operators' commands) and the tests ask these
functions instead of writing SQL, so that the schema is known to the store alone and a
second backend is one more module beside this one. Each takes an open connection (the
caller's own, read-only if it likes) and returns frozen values; nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from gateway.mail.evidence import Attachment
from gateway.store.db import RefusalRecord
from gateway.vocabulary import NoticeStatus, parse_notice_status

__all__ = [
    "NoticeCount",
    "RawCopy",
    "StoredDecision",
    "StoredMessage",
    "integrity_problems",
    "is_raw_kept",
    "is_recorded",
    "list_decisions",
    "list_messages",
    "list_notice_counts",
    "list_raw_copies",
    "list_refusals",
    "read_message",
    "read_raw",
]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message received to the end of DATA, as its record stands."""

    reference: str
    received_at: datetime
    session_id: str
    peer_ip: str
    peer_port: int | None
    helo: str | None
    tls: str | None
    mail_from: str  # "" is the null sender
    recipients: tuple[str, ...]
    message_id: str | None
    subject: str | None
    date_header: str | None
    from_header: str | None
    size: int
    sha256: str
    attachments: tuple[Attachment, ...]
    a_numbers: tuple[str, ...]
    mime_truncated: bool
    outcome: str  # accepted, rejected or deferred
    reply: str
    notice: str  # "queued", "suppressed:<reason>" or "none"
    duplicate_of: str | None
    auth: str | None
    sender_authenticated: bool
    refused_for: str | None  # what about the message itself refused it, if anything

    @property
    def notice_status(self) -> NoticeStatus:
        """The notice column as a typed value (the field keeps the stored string)."""
        return parse_notice_status(self.notice)


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """What was decided for one recipient of a received message."""

    reference: str
    recipient: str
    kind: str  # addresses.AddressKind
    office: str | None
    phase: str | None
    action: str
    reason: str
    decided_at: datetime
    local_time: str | None  # as the office reads it


@dataclass(frozen=True, slots=True)
class RawCopy:
    """A message's bytes as received, kept until `keep_until` (None: while still needed)."""

    reference: str
    raw: bytes
    keep_until: datetime | None


@dataclass(frozen=True, slots=True)
class NoticeCount:
    """How many notices one sender, domain, client or the whole gateway had in an hour."""

    scope: str  # policy.NoticeScope
    key: str
    hour: str  # e.g. "2017-09-13T15"
    count: int


def read_message(conn: sqlite3.Connection, reference: str) -> StoredMessage | None:
    """The received message with this reference, or None."""
    row = conn.execute("SELECT * FROM messages WHERE reference = ?", (reference,)).fetchone()
    return None if row is None else _message(row)


def list_messages(conn: sqlite3.Connection) -> list[StoredMessage]:
    """Every received message, in the order they were recorded."""
    rows = conn.execute("SELECT * FROM messages ORDER BY rowid").fetchall()
    return [_message(row) for row in rows]


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        reference=row["reference"],
        received_at=datetime.fromisoformat(row["received_at"]),
        session_id=row["session_id"],
        peer_ip=row["peer_ip"],
        peer_port=row["peer_port"],
        helo=row["helo"],
        tls=row["tls"],
        mail_from=row["mail_from"],
        recipients=tuple(json.loads(row["recipients"])),
        message_id=row["message_id"],
        subject=row["subject"],
        date_header=row["date_header"],
        from_header=row["from_header"],
        size=row["size"],
        sha256=row["sha256"],
        attachments=tuple(
            Attachment(a["filename"], a["content_type"], a["size"])
            for a in json.loads(row["attachments"])
        ),
        a_numbers=tuple(json.loads(row["a_numbers"])),
        mime_truncated=bool(row["mime_truncated"]),
        outcome=row["outcome"],
        reply=row["reply"],
        notice=row["notice"],
        duplicate_of=row["duplicate_of"],
        auth=row["auth"],
        sender_authenticated=bool(row["sender_authenticated"]),
        refused_for=row["refused_for"],
    )


def list_decisions(
    conn: sqlite3.Connection, reference: str | None = None, *, office: str | None = None
) -> list[StoredDecision]:
    """The recipients' decisions in the order they were recorded: of one message (by its
    reference), for one office, or all of them."""
    where, params = ["1"], []
    if reference is not None:
        where.append("reference = ?")
        params.append(reference)
    if office is not None:
        where.append("office = ?")
        params.append(office)
    sql = f"SELECT * FROM message_recipients WHERE {' AND '.join(where)} ORDER BY rowid"
    return [_decision(row) for row in conn.execute(sql, params)]


def _decision(row: sqlite3.Row) -> StoredDecision:
    return StoredDecision(
        reference=row["reference"],
        recipient=row["recipient"],
        kind=row["kind"],
        office=row["office"],
        phase=row["phase"],
        action=row["action"],
        reason=row["reason"],
        decided_at=datetime.fromisoformat(row["decided_at"]),
        local_time=row["local_time"],
    )


def read_raw(conn: sqlite3.Connection, reference: str) -> bytes | None:
    """The message's bytes exactly as received, or None when they are not (or no longer) kept."""
    row = conn.execute("SELECT raw FROM raw_messages WHERE reference = ?", (reference,)).fetchone()
    return None if row is None else bytes(row["raw"])


def is_raw_kept(conn: sqlite3.Connection, reference: str) -> bool:
    """Whether the message's bytes as received are still kept."""
    row = conn.execute("SELECT 1 FROM raw_messages WHERE reference = ?", (reference,)).fetchone()
    return row is not None


def list_raw_copies(conn: sqlite3.Connection) -> list[RawCopy]:
    """Every kept copy of a received message, in the order they were recorded."""
    rows = conn.execute("SELECT reference, raw, keep_until FROM raw_messages ORDER BY rowid")
    return [RawCopy(r["reference"], bytes(r["raw"]), _optional_time(r["keep_until"])) for r in rows]


def list_refusals(conn: sqlite3.Connection) -> list[RefusalRecord]:
    """Every recipient refused at RCPT, oldest first."""
    rows = conn.execute("SELECT * FROM refusals ORDER BY at, rowid").fetchall()
    return [
        RefusalRecord(
            reference=r["reference"],
            at=datetime.fromisoformat(r["at"]),
            session_id=r["session_id"],
            peer_ip=r["peer_ip"],
            helo=r["helo"],
            mail_from=r["mail_from"],
            recipient=r["recipient"],
            reason=r["reason"],
            reply=r["reply"],
            office=r["office"],
            phase=r["phase"],
        )
        for r in rows
    ]


def list_notice_counts(conn: sqlite3.Connection) -> list[NoticeCount]:
    """The notice rate limits' counters still kept."""
    rows = conn.execute("SELECT scope, key, hour, count FROM notice_counts ORDER BY rowid")
    return [NoticeCount(*row) for row in rows]


def is_recorded(conn: sqlite3.Connection, reference: str) -> bool:
    """Whether an attempt (a received message or a refusal at RCPT) has this reference."""
    row = conn.execute(
        "SELECT 1 FROM messages WHERE reference = ?1 UNION ALL"
        " SELECT 1 FROM refusals WHERE reference = ?1 LIMIT 1",
        (reference,),
    ).fetchone()
    return row is not None


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What SQLite finds wrong with the file (its own check and the foreign keys); [] if
    nothing: what an operator asks of a store after a crash."""
    found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    problems = [] if found == ["ok"] else found
    problems += [
        f"{r[0]} row {r[1]}: no {r[2]} it refers to"
        for r in conn.execute("PRAGMA foreign_key_check")
    ]
    return problems


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
