"""Receipts from the shared store: store/receipts.py's read_receipt on PostgreSQL.

The attempt is found as `gateway audit` finds it on PostgreSQL (postgres/records.py), from
whichever node took it, and made a Receipt by receipts.first_receipt, the SQLite reader's own
step, so the page answers alike on either backend. Nothing here writes or formats.
"""

from __future__ import annotations

from datetime import UTC

from gateway.store.postgres.reading import Connected, SyncConnection
from gateway.store.postgres.records import shared_attempts
from gateway.store.receipts import REFERENCE_SHAPE, Receipt, first_receipt
from gateway.store.records import Filters
from gateway.store.sentmail import SentNotice

__all__ = ["PgReceipts"]


class PgReceipts(Connected):
    """interface.ReceiptReader on PostgreSQL, on one connection of its own."""

    def read_receipt(self, reference: str) -> Receipt | None:
        """The receipt of `reference`, or None (unknown, malformed, purged).

        Raises:
            StoreError: the server cannot be reached or read (no password in the text).
        """
        if REFERENCE_SHAPE.fullmatch(reference) is None:
            return None
        return self._run(lambda conn: _receipt(conn, reference))


def _receipt(conn: SyncConnection, reference: str) -> Receipt | None:
    return first_receipt(
        shared_attempts(conn, Filters(reference=reference)),
        auth=lambda found: _auth(conn, found),
        sent=lambda found: _sent(conn, found),
    )


def _auth(conn: SyncConnection, reference: str) -> str | None:
    row = conn.execute("SELECT auth FROM messages WHERE reference = %s", (reference,)).fetchone()
    return None if row is None else row["auth"]


def _sent(conn: SyncConnection, reference: str) -> list[SentNotice]:
    rows = conn.execute(
        "SELECT job_id, reference, kind, message_id, sha256, size, sent_at"
        " FROM sent_notices WHERE reference = %s ORDER BY job_id",
        (reference,),
    ).fetchall()
    return [SentNotice(**{**row, "sent_at": row["sent_at"].astimezone(UTC)}) for row in rows]
