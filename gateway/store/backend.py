"""The backend, chosen once at start from `[storage] url`: the SQLite file or PostgreSQL.

`StoreLocation` is where the store is and who writes (the node); it is a plain value, so a
composer process gets it pickled and opens its own reader. The functions here build each
part of the interface (interface.py) for that backend. PostgreSQL's modules (and psycopg,
an optional extra) are imported only when the location names PostgreSQL.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.config import GatewaySettings
from gateway.errors import StoreError
from gateway.store.anchors import Anchor, Checkpoint, save_head_now
from gateway.store.db import Store, connect
from gateway.store.interface import (
    AuditReader,
    HeadStore,
    JobQueue,
    MailRecords,
    OperatorQueue,
    PostmasterBox,
    QueueGauges,
    ReceiptReader,
    RecordStore,
)
from gateway.store.operator import SqlitePostmaster, SqliteQueue
from gateway.store.outbox import Outbox
from gateway.store.queuedepth import SqliteQueueDepth
from gateway.store.reading import SqliteAuditReader, SqliteRecords
from gateway.store.receipts import SqliteReceipts
from gateway.store.schema import schema_version

__all__ = [
    "StoreLocation",
    "head_store",
    "make_queue",
    "masked",
    "migrate_store",
    "new_store",
    "open_audit_reader",
    "open_postmaster",
    "open_queue",
    "open_receipts",
    "open_records",
    "queue_gauges",
]


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """The store's place: `dsn` (PostgreSQL, the password in it) or else `database`."""

    database: Path
    node: str
    dsn: str | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> StoreLocation:
        """The store that `settings` name, with the password joined to the URL for libpq."""
        storage = settings.storage
        dsn = None
        if storage.is_shared:
            from psycopg.conninfo import make_conninfo

            extra = {} if storage.password is None else {"password": storage.password}
            dsn = make_conninfo(storage.url, **extra)
        return cls(storage.database, settings.server.node, dsn)

    def __repr__(self) -> str:  # never the password
        return f"StoreLocation({self.describe()!r}, node={self.node!r})"

    def describe(self) -> str:
        """The store for messages and logs: the file, or server and database (no password)."""
        if self.dsn is None:
            return str(self.database)
        from gateway.store.postgres.store import where

        return where(self.dsn)

    def may_exist(self) -> bool:
        """Whether there may be a store to read here: a shared store is asked when read (it
        says for itself when it holds none); a file must be there, or nothing was recorded."""
        return self.dsn is not None or self.database.is_file()


def new_store(location: StoreLocation) -> RecordStore:
    """The record store at `location`, not yet opened."""
    if location.dsn is None:
        return Store(location.database)
    from gateway.store.postgres.store import PgStore

    return PgStore(location.dsn, node=location.node)


def make_queue(store: RecordStore, *, owner: str, incarnations: str | None) -> JobQueue:
    """The outbox on `store`; `incarnations` matters to SQLite only (outbox.py recover)."""
    if isinstance(store, Store):
        return Outbox(store, owner=owner, incarnations=incarnations)
    from gateway.store.postgres.outbox import PgOutbox
    from gateway.store.postgres.store import PgStore

    assert isinstance(store, PgStore), "new_store() makes one of the two"
    # Leases run out on the server's clock, whoever held them: no incarnations needed.
    return PgOutbox(store, owner=owner)


def open_records(location: StoreLocation) -> MailRecords:
    """A synchronous reader of `location`, on a connection of its own.

    Raises:
        StoreError: the store cannot be opened.
    """
    if location.dsn is None:
        return SqliteRecords(location.database)
    from gateway.store.postgres.reading import PgRecords

    return PgRecords(location.dsn)


def open_audit_reader(location: StoreLocation) -> AuditReader:
    """`gateway audit`'s reader of `location`: the file read-only, or every node's records.

    Raises:
        StoreError: the SQLite file cannot be opened (PostgreSQL connects at the first read).
    """
    if location.dsn is None:
        return SqliteAuditReader.open(location.database)
    from gateway.store.postgres.reading import PgAuditReader

    return PgAuditReader(location.dsn, node=location.node)


def open_receipts(location: StoreLocation) -> ReceiptReader:
    """The receipt page's reader of `location`; it connects at its first read, in the
    thread that reads."""
    if location.dsn is None:
        return SqliteReceipts(location.database)
    from gateway.store.postgres.receipts import PgReceipts

    return PgReceipts(location.dsn, node=location.node)


def queue_gauges(location: StoreLocation) -> QueueGauges:
    """/metrics' reader of the queue at `location` (on PostgreSQL, the shared queue)."""
    if location.dsn is None:
        return SqliteQueueDepth(location.database)
    from gateway.store.postgres.queuedepth import PgQueueDepth

    return PgQueueDepth(location.dsn, node=location.node)


def open_queue(location: StoreLocation, *, writable: bool) -> OperatorQueue:
    """`gateway queue`'s view of `location`, connected; read-only unless `writable` (SQLite:
    PostgreSQL's transactions say for themselves).

    Raises:
        StoreError: the store cannot be opened, or a shared one has no store yet.
    """
    if location.dsn is None:
        return SqliteQueue(location.database, writable=writable)
    from gateway.store.postgres.operator import PgQueue

    return PgQueue(location.dsn, node=location.node)


def open_postmaster(location: StoreLocation, *, writable: bool) -> PostmasterBox:
    """`gateway postmaster`'s view of `location`, connected, as open_queue().

    Raises:
        StoreError: the store cannot be opened, or a shared one has no store yet.
    """
    if location.dsn is None:
        return SqlitePostmaster(location.database, writable=writable)
    from gateway.store.postgres.operator import PgPostmaster

    return PgPostmaster(location.dsn, node=location.node)


class _SqliteHeads:
    def __init__(self, database: Path) -> None:
        self._database = database

    def save_head(self, anchor: Anchor | None, checkpoint: Checkpoint | None) -> None:
        try:
            save_head_now(self._database, anchor, checkpoint)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self._database}: {exc}") from exc

    def close(self) -> None:
        """Nothing to close: each save opens the file for itself."""


def head_store(location: StoreLocation) -> HeadStore:
    """Where the audit chain's anchor and checkpoints go, for a thread beside the loop."""
    if location.dsn is None:
        return _SqliteHeads(location.database)
    from gateway.store.postgres.reading import PgHeads

    return PgHeads(location.dsn, node=location.node)


async def migrate_store(location: StoreLocation) -> int | None:
    """Bring the store at `location` to this code's schema version, as opening it for serving
    does (under the backend's lock: several nodes may start at once); returns the version it
    was at before (None: a new store).

    Raises:
        StoreError: the store cannot be reached, or holds a newer version (left untouched).
    """
    before = await _version(location)
    store = new_store(location)
    await store.open()
    await store.close()
    return before


async def _version(location: StoreLocation) -> int | None:
    if location.dsn is None:
        if not location.database.exists():
            return None
        try:
            with contextlib.closing(connect(location.database, readonly=True)) as conn:
                return schema_version(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {location.database}: {exc}") from exc
    from gateway.store.postgres.store import stored_version

    return await stored_version(location.dsn)


def masked(url: str) -> str:
    """`[storage] url` fit to show: its password, if it has one, replaced by `***`."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
