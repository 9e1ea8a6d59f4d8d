"""Mail to postmaster as the store keeps it: the messages and their forward jobs.

What `gateway postmaster list|show` reads (smtp/postmaster.py formats it and queues the
forwards). Queries take an open connection and return values; nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.store.db import iso
from gateway.vocabulary import JobKind

__all__ = ["FORWARD", "PostmasterMail", "find_postmaster_mail", "read_mail"]

# The job kind that relays mail to postmaster to [postmaster] forward_to (kept by this name
# for smtp/postmaster.py, which queues them).
FORWARD = JobKind.FORWARD


@dataclass(frozen=True, slots=True)
class PostmasterMail:
    """A received message as these commands show it."""

    reference: str
    received_at: datetime
    peer_ip: str
    helo: str | None
    sender: str
    recipients: tuple[str, ...]
    subject: str | None
    size: int
    sha256: str
    outcome: str
    has_raw: bool
    forwards: tuple[tuple[int, str, str], ...]  # (job id, state, recipients)

    @property
    def forward_state(self) -> str:
        """ "-" when never forwarded, else the states of its forward jobs."""
        return ",".join(dict.fromkeys(state for _, state, _ in self.forwards)) or "-"


_MAIL = """
SELECT m.reference, m.received_at, m.peer_ip, m.helo, m.mail_from, m.recipients, m.subject,
       m.size, m.sha256, m.outcome,
       EXISTS (SELECT 1 FROM raw_messages r WHERE r.reference = m.reference) AS has_raw
FROM messages m WHERE {where}
"""
_TO_POSTMASTER = (
    "EXISTS (SELECT 1 FROM message_recipients p WHERE p.reference = m.reference"
    " AND p.kind = 'postmaster')"
)


def find_postmaster_mail(
    conn: sqlite3.Connection, *, since: datetime | None, limit: int
) -> list[PostmasterMail]:
    """Messages to postmaster, newest first, received at or after `since`."""
    where, params = _TO_POSTMASTER, [] if since is None else [iso(since.astimezone(UTC))]
    if since is not None:
        where += " AND m.received_at >= ?"
    sql = _MAIL.format(where=where) + " ORDER BY m.received_at DESC, m.reference LIMIT ?"
    rows = conn.execute(sql, (*params, limit)).fetchall()
    return [_mail(conn, row) for row in rows]


def read_mail(conn: sqlite3.Connection, reference: str) -> PostmasterMail | None:
    """Any received message by its reference, or None."""
    row = conn.execute(_MAIL.format(where="m.reference = ?"), (reference,)).fetchone()
    return None if row is None else _mail(conn, row)


def _mail(conn: sqlite3.Connection, row: sqlite3.Row) -> PostmasterMail:
    jobs = conn.execute(
        "SELECT id, state, recipients FROM jobs WHERE reference = ? AND kind = ? ORDER BY id",
        (row["reference"], FORWARD),
    ).fetchall()
    return PostmasterMail(
        reference=row["reference"],
        received_at=datetime.fromisoformat(row["received_at"]),
        peer_ip=row["peer_ip"],
        helo=row["helo"],
        sender=row["mail_from"],
        recipients=tuple(json.loads(row["recipients"])),
        subject=row["subject"],
        size=row["size"],
        sha256=row["sha256"],
        outcome=row["outcome"],
        has_raw=bool(row["has_raw"]),
        forwards=tuple((j["id"], j["state"], ", ".join(json.loads(j["recipients"]))) for j in jobs),
    )
