"""Reads of the PostgreSQL store, as the SQLite store's values (queries.py, outbox.py).

The first of them: a message's record, its jobs and the refusals, which the tests and a
node's checks read back. The operator commands' synchronous reads (`gateway audit`, `gateway
queue`) come with the store interface (docs/postgresql.md, "What is next").
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from gateway.mail.evidence import Attachment
from gateway.store.messages import RefusalRecord
from gateway.store.outbox import Job
from gateway.store.postgres.outbox import job_from_row
from gateway.store.postgres.store import PgStore
from gateway.store.queries import StoredMessage

__all__ = ["find_jobs", "list_refusals", "message_from_row", "read_message"]


async def read_message(store: PgStore, reference: str) -> StoredMessage | None:
    """The received message with this reference, or None.

    Raises:
        StoreError: the store could not be read.
    """
    async with store.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute("SELECT * FROM messages WHERE reference = %s", (reference,))
        row = await cursor.fetchone()
    return None if row is None else message_from_row(row)


async def find_jobs(store: PgStore, *, reference: str) -> list[Job]:
    """A message's jobs, of any state, oldest first.

    Raises:
        StoreError: the store could not be read.
    """
    async with store.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute("SELECT * FROM jobs WHERE reference = %s ORDER BY id", (reference,))
        return [job_from_row(row) for row in await cursor.fetchall()]


async def list_refusals(store: PgStore) -> list[RefusalRecord]:
    """Every recipient refused at RCPT, oldest first.

    Raises:
        StoreError: the store could not be read.
    """
    async with store.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute("SELECT * FROM refusals ORDER BY at, seq")
        rows = await cursor.fetchall()
    return [
        RefusalRecord(
            reference=r["reference"],
            at=r["at"],
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


def message_from_row(row: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        reference=row["reference"],
        received_at=row["received_at"],
        session_id=row["session_id"],
        peer_ip=row["peer_ip"],
        peer_port=row["peer_port"],
        helo=row["helo"],
        tls=row["tls"],
        mail_from=row["mail_from"],
        recipients=tuple(row["recipients"]),
        message_id=row["message_id"],
        subject=row["subject"],
        date_header=row["date_header"],
        from_header=row["from_header"],
        size=row["size"],
        sha256=row["sha256"],
        attachments=tuple(
            Attachment(a["filename"], a["content_type"], a["size"]) for a in row["attachments"]
        ),
        a_numbers=tuple(row["a_numbers"]),
        mime_truncated=row["mime_truncated"],
        outcome=row["outcome"],
        reply=row["reply"],
        notice=row["notice"],
        duplicate_of=row["duplicate_of"],
        auth=row["auth"],
        sender_authenticated=row["sender_authenticated"],
        refused_for=row["refused_for"],
    )
