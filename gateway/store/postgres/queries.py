"""Reads of the PostgreSQL store, as the SQLite store's values (queries.py, outbox.py).

The first of them: a message's record, its jobs and the refusals, which the tests and a
node's checks read back. The operator commands' synchronous reads (`gateway audit`, `gateway
queue`) come with the store interface (docs/postgresql.md, "What is next").
"""

from __future__ import annotations

from psycopg.rows import dict_row

from gateway.store.messages import RefusalRecord
from gateway.store.outbox import Job
from gateway.store.postgres.rows import job_from_row, message_from_row, refusal_from_row
from gateway.store.postgres.store import PgStore
from gateway.store.queries import StoredMessage

__all__ = ["find_jobs", "list_refusals", "read_message"]


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
    return [refusal_from_row(r) for r in rows]
