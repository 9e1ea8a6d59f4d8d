"""PgStore: the durable record in PostgreSQL, written by every node that shares it.

The SQLite Store's writes (gateway/store/db.py) with the same semantics and return values,
but no writer thread and no group commit: each decision is its own transaction on a pooled
connection, and PostgreSQL flushes concurrent commits together. A call returns only once
its COMMIT has returned, and every connection is checked, as the pool makes it, for a
`synchronous_commit` that makes a COMMIT durable before it returns (not `off`, not `local`).

A message is one round trip in pipeline mode: its rows, then the notice gate last, then
COMMIT, so the counters' row locks are held only while the server commits. When the gate
finds a repeat or a limit reached it aborts the transaction (GW001), and a second
transaction settles the verdict as the SQLite store does (policy/verdict.py `settle`). Every
driver error comes out as StoreError, the one error the SMTP side answers with 451 4.3.0.
After a server restart the pool checks each connection before lending it and reconnects by
itself, so calls fail while the server is away and work again once it is back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from gateway.errors import StoreError
from gateway.policy.verdict import NoticeGate, settle
from gateway.store.messages import MessageRecord, NoticeCheck, RefusalRecord
from gateway.store.postgres import messages as sql
from gateway.store.postgres import purging
from gateway.store.postgres.schema import migrate, schema_version
from gateway.store.purging import Purged
from gateway.store.schema import SchemaTooNewError

__all__ = ["UTC_SESSION", "PgStore", "stored_version", "where"]

Connection = psycopg.AsyncConnection[Any]
# Settings under which COMMIT returns before the commit is on the server's disk.
_NOT_DURABLE = frozenset({"off", "local"})


class _GateMet(Exception):
    """The strict gate aborted the transaction: the verdict needs settling."""


def where(dsn: str) -> str:
    """The server and database a DSN names, for messages: never its password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the PostgreSQL store (an unreadable connection string)"
    host, port = parts.get("host", "localhost"), parts.get("port", "5432")
    service = parts.get("service")
    return (
        f"postgresql service {service}"
        if service
        else f"postgresql {host}:{port}/{parts.get('dbname', '')}"
    )


class PgStore:
    """The durable record in PostgreSQL; `await store.record_message(...)` returns once it is
    committed. `node` names this gateway on what it writes."""

    def __init__(
        self,
        dsn: str,
        *,
        node: str,
        max_connections: int = 10,
        wait_s: float = 5.0,
        connect_timeout_s: int = 5,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self._max = max_connections
        # How long a call waits for a connection before it fails (a 451, not a hang).
        self._wait_s = wait_s
        self._connect_timeout_s = connect_timeout_s
        self._pool: psycopg_pool.AsyncConnectionPool[Connection] | None = None

    async def open(self) -> None:
        """Connect, check durability and bring the schema to this version.

        Raises:
            StoreError: the server cannot be reached, does not make commits durable, or
                holds a store of a newer version (the SQLite store's words).
        """
        settings: dict[str, Any] = {
            "autocommit": True,
            "application_name": f"eservice-gateway {self.node}"[:63],
            "connect_timeout": self._connect_timeout_s,
        }
        pool = psycopg_pool.AsyncConnectionPool(
            self.dsn,
            open=False,
            min_size=1,
            max_size=self._max,
            kwargs=settings,
            configure=self._configure,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            timeout=self._wait_s,
            name=f"store-{self.node}",
        )
        try:
            # One connection of our own first: the pool retries a failed connection in the
            # background and would report only a timeout, not libpq's reason (a wrong
            # password, no such database, the server refusing).
            async with await psycopg.AsyncConnection.connect(self.dsn, **settings) as conn:
                refusal = await _durability_problem(conn)
                if refusal is not None:
                    raise StoreError(refusal)
                await migrate(conn)
            await pool.open(wait=True, timeout=self._wait_s)
        except (psycopg.Error, SchemaTooNewError, StoreError) as exc:
            await pool.close()
            reason = _reason(exc) if isinstance(exc, psycopg.Error) else str(exc)
            raise StoreError(f"cannot open {where(self.dsn)}: {reason}") from exc
        self._pool = pool

    def is_alive(self) -> bool:
        """Whether the store is open (the server may still be away: ping() tells)."""
        return self._pool is not None

    async def close(self) -> None:
        """Close every connection; calls after this fail with StoreError."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self, at: datetime) -> None:
        """Commit a trivial write, as a health check.

        Raises:
            StoreError: the store is closed or the commit failed.
        """
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('health_checked_at', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (at.isoformat(timespec="microseconds"),),
            )

    async def record_message(
        self, record: MessageRecord, check: NoticeCheck | None = None
    ) -> MessageRecord:
        """Make a received message, its decisions and its jobs durable, in one transaction;
        returns the record as stored.

        With a `check`, the verdict's notice meets the dedup entry and the hourly counts in
        the same transaction (so every node's sessions count alike), and the record stored is
        the one of the verdict as settled (policy/verdict.py `settle`).

        Raises:
            StoreError: the commit failed; nothing of this record was stored.
        """
        gate = None if check is None else check.verdict.gate
        if check is None or gate is None:
            await self._record(record, None)
            return record
        hopeful = sql.settled(record, check, check.verdict)
        try:
            await self._record(
                hopeful, sql.gate_row(gate, record.reference, record.received_at, is_strict=True)
            )
        except _GateMet:
            return await self._record_settled(record, check, gate)
        return hopeful

    async def record_refusal(self, record: RefusalRecord) -> None:
        """Make a refusal at RCPT durable.

        Raises:
            StoreError: the commit failed.
        """
        async with self.transaction() as conn:
            await conn.execute(sql.REFUSAL, sql.refusal_row(record, node=self.node))

    # -- retention (retention.py loops over the batches) ---------------------------------------

    async def purge_expired_raw(self, now: datetime, *, limit: int = -1) -> int:
        """Delete kept raw copies whose retention ended, at most `limit` (-1: all); how many.

        Raises:
            StoreError: the batch could not be committed.
        """
        async with self.transaction() as conn:
            return await purging.purge_expired_raw(conn, now=now, limit=limit)

    async def purge_messages(self, before: datetime, *, limit: int) -> Purged:
        """Delete up to `limit` messages received before `before`, with their rows.

        Raises:
            StoreError: the batch could not be committed.
        """
        async with self.transaction() as conn:
            return await purging.purge_messages(conn, before=before, limit=limit)

    async def purge_refusals(self, before: datetime, *, limit: int) -> int:
        """Delete up to `limit` refusals made before `before`; how many.

        Raises:
            StoreError: the batch could not be committed.
        """
        async with self.transaction() as conn:
            return await purging.purge_refusals(conn, before=before, limit=limit)

    async def purge_sent(self, before: datetime, *, limit: int) -> int:
        """Delete up to `limit` notices kept as sent before `before`; how many.

        Raises:
            StoreError: the batch could not be committed.
        """
        async with self.transaction() as conn:
            return await purging.purge_sent(conn, before=before, limit=limit)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection (autocommit) for one call; driver errors as StoreError.

        Raises:
            StoreError: the store is closed, no connection came in time, or a statement failed.
        """
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"{where(self.dsn)}: {_reason(exc)}") from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One transaction, committed when the block ends (a durable COMMIT).

        Raises:
            StoreError: as connection(); nothing of the transaction was committed.
        """
        async with self.connection() as conn, conn.transaction():
            yield conn

    # -- the DATA path -----------------------------------------------------------------------

    async def _record(self, record: MessageRecord, gate: sql.GateRow | None) -> None:
        """The message's rows, the strict gate last, COMMIT: one round trip."""
        try:
            async with self.connection() as conn, conn.pipeline(), conn.transaction():
                await self._insert(conn, record)
                if gate is not None:
                    await conn.execute(sql.GATE, gate.params)
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.Error) and exc.__cause__.sqlstate == sql.GATE_MET:
                raise _GateMet from exc
            raise

    async def _record_settled(
        self, record: MessageRecord, check: NoticeCheck, gate: NoticeGate
    ) -> MessageRecord:
        """The gate first, read back (one trip), settle(), then the settled record and COMMIT."""
        row = sql.gate_row(gate, record.reference, record.received_at, is_strict=False)
        async with self.connection() as conn, conn.pipeline(), conn.transaction():
            cursor = await conn.execute(sql.GATE, row.params)
            found = await cursor.fetchone()
            assert found is not None  # the function returns one row
            duplicate_of, counts, counted = found
            verdict = settle(check.verdict, sql.history(row.scopes, duplicate_of, counts))
            if verdict.counts_notice and not counted:
                # The SQL gate and policy's settle() disagree: a notice would pass uncounted.
                raise StoreError("the notice gate and settle() disagree; nothing was stored")
            stored = sql.settled(record, check, verdict)
            await self._insert(conn, stored)
        return stored

    async def _insert(self, conn: Connection, record: MessageRecord) -> None:
        await conn.execute(sql.MESSAGE, sql.message_row(record, node=self.node))
        async with conn.cursor() as cursor:
            await cursor.executemany(sql.RECIPIENT, sql.recipient_rows(record))
            if record.jobs:
                await cursor.executemany(sql.JOB, sql.job_rows(record, node=self.node))
        raw = sql.raw_row(record)
        if raw is not None:
            await conn.execute(sql.RAW, raw)

    async def _configure(self, conn: Connection) -> None:
        """Each new connection of the pool: its commits must be durable when COMMIT returns
        (a setting may change after open(), for the role or the database)."""
        refusal = await _durability_problem(conn)
        if refusal is not None:
            raise StoreError(refusal)  # the pool drops the connection and tries again
        await conn.execute(UTC_SESSION)


# Times come back in the session's TimeZone, which is the server's or the role's unless set:
# UTC on every connection, as the SQLite store gives them, whatever the server is set to.
# (Not through the DSN's `options`, which an operator's connection string may hold already.)
UTC_SESSION = "SET TIME ZONE 'UTC'"


async def stored_version(dsn: str) -> int | None:
    """The version the store at `dsn` is at; None for an empty database.

    Raises:
        StoreError: the server cannot be reached or read (libpq's reason, no password).
    """
    try:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=5) as conn:
            return await schema_version(conn)
    except psycopg.Error as exc:
        raise StoreError(f"cannot open {where(dsn)}: {_reason(exc)}") from exc


async def _durability_problem(conn: Connection) -> str | None:
    """Why COMMIT on `conn` could return before the commit is on the server's disk, or None."""
    cursor = await conn.execute("SELECT current_setting('synchronous_commit')")
    row = await cursor.fetchone()
    setting = "" if row is None else str(row[0])
    if setting not in _NOT_DURABLE:
        return None
    return (
        f"synchronous_commit is {setting!r} for this role or database, so a commit could be"
        " lost after the gateway answered; set it to 'on'"
    )


def _reason(exc: psycopg.Error) -> str:
    # The first line only: a driver's detail lines may quote the row (a sender's address).
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
