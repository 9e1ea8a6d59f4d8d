"""The state store: one SQLite file (WAL) holding the evidence and the job queue.

Every write goes through a single writer thread that group-commits: whatever concurrent
sessions hand in while the previous commit is being made durable goes into the next one, and
each caller's await returns only once its own rows are committed with synchronous=FULL. So a
250 or 550 after DATA is sent only after its record is on disk, and the event loop never
blocks on SQLite. Several processes may share the file (WAL, busy timeout); nothing about
the queue is kept in process memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import StoreError
from gateway.mail.evidence import MessageFacts
from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import Job, NoticeGate, NoticeHistory, Reply, Verdict, settle
from gateway.vocabulary import NOTICE_KINDS, format_notice_status

__all__ = [
    "NOTICE_KINDS",
    "JobRecord",
    "MessageRecord",
    "NoticeCheck",
    "RecipientRecord",
    "RefusalRecord",
    "Store",
    "connect",
    "iso",
    "job_record",
    "new_reference",
]

# 2: sent_notices and messages.refused_for. Opening an older store adds what it lacks (CREATE
# ... IF NOT EXISTS, ALTER TABLE for columns) and records the new version, so an older gateway,
# which would neither fill nor purge them, refuses it.
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    reference     TEXT PRIMARY KEY,
    received_at   TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    peer_ip       TEXT NOT NULL,
    peer_port     INTEGER,
    helo          TEXT,
    tls           TEXT,
    mail_from     TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    message_id    TEXT,
    subject       TEXT,
    date_header   TEXT,
    from_header   TEXT,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    attachments   TEXT NOT NULL,
    a_numbers     TEXT NOT NULL,
    mime_truncated INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    reply         TEXT NOT NULL,
    notice        TEXT NOT NULL,
    duplicate_of  TEXT,
    auth          TEXT,
    sender_authenticated INTEGER NOT NULL DEFAULT 0,
    refused_for   TEXT
);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (mail_from);
CREATE TABLE IF NOT EXISTS message_recipients (
    reference   TEXT NOT NULL REFERENCES messages (reference),
    recipient   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    office      TEXT,
    phase       TEXT,
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    decided_at  TEXT NOT NULL,
    local_time  TEXT,
    PRIMARY KEY (reference, recipient)
);
CREATE TABLE IF NOT EXISTS notice_counts (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    hour        TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (scope, key, hour)
);
CREATE TABLE IF NOT EXISTS notice_dedup (
    key         TEXT PRIMARY KEY,
    reference   TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_messages (
    reference   TEXT PRIMARY KEY REFERENCES messages (reference),
    raw         BLOB NOT NULL,
    keep_until  TEXT
);
CREATE TABLE IF NOT EXISTS refusals (
    reference   TEXT PRIMARY KEY,
    at          TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    peer_ip     TEXT NOT NULL,
    helo        TEXT,
    mail_from   TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    office      TEXT,
    phase       TEXT,
    reason      TEXT NOT NULL,
    reply       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals (at);
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY,
    reference       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    office          TEXT,
    mail_from       TEXT NOT NULL,
    recipients      TEXT NOT NULL,
    destination     TEXT,
    route           TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued',
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     TEXT,
    last_reply      TEXT,
    updated_at      TEXT NOT NULL,
    about_job       INTEGER REFERENCES jobs (id)
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_attempt_at);
-- Retention looks up a message's jobs, and raw messages by their end of retention.
CREATE INDEX IF NOT EXISTS jobs_reference ON jobs (reference);
CREATE INDEX IF NOT EXISTS raw_keep_until ON raw_messages (keep_until);
CREATE TABLE IF NOT EXISTS attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    host        TEXT NOT NULL,
    code        INTEGER NOT NULL,
    reply       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
-- `gateway audit` finds attempts by Message-ID and refusals by sender.
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS refusals_sender ON refusals (mail_from);
-- The audit log's hash chains (chain.py): each chain's first line, and its head over time.
CREATE TABLE IF NOT EXISTS audit_chains (
    chain       TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    log         TEXT NOT NULL,
    first_hash  TEXT NOT NULL
);
-- No foreign key: a chain resumed from a file whose anchor is elsewhere still checkpoints.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
-- Each notice, advisory and bounce as sent, after DKIM signing: what the sender was told
-- (sentmail.py). No foreign key: it has its own retention ([storage]
-- notice_retention_days) and may outlive its job's record.
CREATE TABLE IF NOT EXISTS sent_notices (
    reference   TEXT NOT NULL,
    job_id      INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    message_id  TEXT,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sent_at     TEXT NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (reference, job_id)
);
CREATE INDEX IF NOT EXISTS sent_notices_sent_at ON sent_notices (sent_at);
"""

# Crockford's base32: no I, L, O, U, so a reference read over the phone is unambiguous.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_reference(at: datetime) -> str:
    """A reference id: the UTC date and 50 random bits, e.g. "20170912-7K3QM9XD0A"."""
    bits = secrets.randbits(50)
    tail = "".join(_ALPHABET[(bits >> shift) & 31] for shift in range(45, -1, -5))
    return f"{at:%Y%m%d}-{tail}"


def iso(at: datetime) -> str:
    """UTC ISO-8601 with microseconds, the one time format of the store."""
    return at.isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    recipient: str
    kind: str  # addresses.AddressKind
    action: str
    reason: str
    decided_at: datetime
    office: str | None = None
    phase: str | None = None
    local_time: str | None = None  # decided_at in the office's zone, as the office reads it


@dataclass(frozen=True, slots=True)
class JobRecord:
    kind: str  # a vocabulary.JobKind: relay, forward (postmaster mail), notice, advisory
    mail_from: str
    recipients: tuple[str, ...]
    office: str | None = None
    destination: str | None = None  # host:port for relays; None: by the delivery mode

    @property
    def is_notice(self) -> bool:
        """Whether this job answers the sender, so that the notice limits apply to it."""
        return self.kind in NOTICE_KINDS

    @property
    def route(self) -> str:
        """What limits concurrency: the fixed destination, else the recipients' domain."""
        if self.destination:
            return self.destination.lower()
        return self.recipients[0].rpartition("@")[2].lower() if self.recipients else ""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    reference: str
    received_at: datetime
    session_id: str
    peer_ip: str
    peer_port: int | None
    helo: str | None
    tls: str | None
    mail_from: str
    facts: MessageFacts
    recipients: tuple[RecipientRecord, ...]
    outcome: str  # "accepted" or "rejected"
    reply: str
    notice: str  # "queued", "suppressed:<reason>" or "none"
    jobs: tuple[JobRecord, ...] = ()
    raw: bytes | None = None
    raw_keep_until: datetime | None = None
    duplicate_of: str | None = None  # the earlier message whose notice this one repeats
    auth: str | None = None  # Authentication-Results value of the sender checks
    # Whether mail may be sent to the envelope sender: a notice, or a bounce if a relay fails.
    sender_authenticated: bool = False
    # What about the message itself refused it ("message-too-big", "line-too-long"), if so.
    refused_for: str | None = None


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    reference: str
    at: datetime
    session_id: str
    peer_ip: str
    helo: str | None
    mail_from: str
    recipient: str
    reason: str
    reply: str
    office: str | None = None
    phase: str | None = None


T = TypeVar("T")
# What a caller hands the writer: runs inside the next group-committed transaction.
Write = Callable[[sqlite3.Connection], Any]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


@dataclass(frozen=True, slots=True)
class _Pending:
    write: Write
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the store file with the settings every connection needs."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    else:
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, which is what a 250 promises.
        conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Store:
    """The durable record; `await store.record_message(...)` returns once it is committed."""

    # Upper bound on one group commit, so a burst cannot starve replies waiting on it.
    MAX_BATCH = 512

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None

    async def open(self) -> None:
        """Create the file and schema if needed and start the writer thread.

        Raises:
            StoreError: the file cannot be created or opened.
        """
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            raise StoreError(f"cannot open {self.path}: {self._open_error}") from self._open_error

    def is_alive(self) -> bool:
        """Whether the writer thread is running (open, and not stopped or dead)."""
        return self._thread is not None and self._thread.is_alive()

    async def ping(self, at: datetime) -> None:
        """Commit a trivial write through the writer, as a health check: it returns only if
        the thread takes work, SQLite grants the write lock and the disk takes the commit.

        Raises:
            StoreError: the store is closed or the commit failed.
        """

        def touch(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('health_checked_at', ?)",
                (iso(at),),
            )

        await self.write(touch)

    async def close(self) -> None:
        """Commit what is pending, then stop the writer thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        # Writes handed in while the thread was stopping were never run: fail them, or their
        # callers would wait for ever.
        stranded: list[_Pending] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    stranded.append(item)
        _resolve(stranded, [(None, StoreError("the store is closed")) for _ in stranded])

    async def record_message(
        self, record: MessageRecord, check: NoticeCheck | None = None
    ) -> MessageRecord:
        """Make a received message, its decisions and its jobs durable, in one transaction;
        returns the record as stored.

        With a `check`, the verdict's notice is first met with the earlier ones read in the
        same transaction (so concurrent sessions and processes count alike), and the record
        stored is the one of the verdict as settled (policy/verdict.py `settle`).

        Raises:
            StoreError: the commit failed; nothing of this record was stored.
        """
        return await self.write(lambda conn: _insert_gated(conn, record, check))

    async def record_refusal(self, record: RefusalRecord) -> None:
        """Make a refusal at RCPT durable.

        Raises:
            StoreError: the commit failed.
        """
        await self.write(lambda conn: _insert_refusal(conn, record))

    async def purge_expired_raw(self, now: datetime, *, limit: int = -1) -> int:
        """Delete retained raw messages whose retention ended, at most `limit` (-1: all);
        returns how many.

        Raises:
            StoreError: the delete could not be committed.
        """

        def purge(conn: sqlite3.Connection) -> int:
            # A copy still to be relayed or forwarded outlives its retention until it is sent.
            cursor = conn.execute(
                "DELETE FROM raw_messages WHERE reference IN (SELECT r.reference"
                " FROM raw_messages AS r WHERE r.keep_until IS NOT NULL AND r.keep_until < ?"
                " AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.reference = r.reference"
                "  AND j.kind IN ('relay', 'forward')"
                "  AND j.state IN ('queued', 'in-flight', 'deferred')) LIMIT ?)",
                (iso(now), limit),
            )
            return cursor.rowcount

        return await self.write(purge)

    def write(self, write: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `write` in the writer's next transaction; the future holds its result once
        that transaction is durable. A write that raises fails alone, the batch commits.

        Raises (through the future):
            StoreError: the store is closed, the write raised, or the commit failed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            future.set_exception(StoreError("the store is not open"))
        else:
            self._queue.put(_Pending(write, future, loop))
        return future

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
            _migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while (batch := self._next_batch()) is not None:
                _commit_batch(conn, batch)
        finally:
            conn.close()

    def _next_batch(self) -> list[_Pending] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch


def _commit_batch(conn: sqlite3.Connection, batch: Sequence[_Pending]) -> None:
    results: list[tuple[Any, BaseException | None]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = [_apply_one(conn, item.write) for item in batch]
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        # One exception per caller: an instance raised in several tasks would gather every
        # task's frames in its one traceback, and each log would show the others' stacks.
        results = [(None, _commit_failure(exc)) for _ in batch]
    _resolve(batch, results)


def _commit_failure(cause: sqlite3.Error) -> StoreError:
    failure = StoreError(f"commit failed: {cause}")
    failure.__cause__ = cause
    return failure


def _apply_one(conn: sqlite3.Connection, write: Write) -> tuple[Any, BaseException | None]:
    # A savepoint per caller: one bad record fails alone, the rest of the batch commits.
    conn.execute("SAVEPOINT one")
    try:
        result = write(conn)
    except Exception as exc:  # the writer thread must outlive any one bad write
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")
        failure = StoreError(f"record rejected: {exc}")
        failure.__cause__ = exc
        return None, failure
    conn.execute("RELEASE one")
    return result, None


def _resolve(
    batch: Sequence[_Pending], results: Sequence[tuple[Any, BaseException | None]]
) -> None:
    # One wake-up per event loop and batch, not one per record.
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for item, (result, error) in zip(batch, results, strict=True):
        by_loop.setdefault(item.loop, []).append((item.future, result, error))
    for loop, outcomes in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: Iterable[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue  # the caller went away while we committed
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


# Columns added since schema 1, for stores made by an older gateway.
_ADDED_COLUMNS = (("messages", "refused_for", "TEXT"),)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is not None and int(row[0]) > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"store schema {row[0]} is newer than this gateway ({SCHEMA_VERSION})"
        )
    for table, column, kind in _ADDED_COLUMNS:
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    # The script and columns above have brought an older store up to date: say so.
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )


@dataclass(frozen=True, slots=True)
class NoticeCheck:
    """A message's verdict whose notice is to meet the limits as its record is written."""

    verdict: Verdict
    # The wording of each reply the verdict may settle on (Verdict.possible_replies): the
    # store chooses among them and words none itself.
    replies: Mapping[Reply, str]


def job_record(job: Job) -> JobRecord:
    """The store's record of a job the verdict queues."""
    return JobRecord(job.kind, job.mail_from, job.recipients, job.office, job.destination)


def _insert_gated(
    conn: sqlite3.Connection, record: MessageRecord, check: NoticeCheck | None
) -> MessageRecord:
    if check is not None and check.verdict.gate is not None:
        record = _gated(conn, record, check, check.verdict.gate)
    _insert_message(conn, record)
    return record


def _gated(
    conn: sqlite3.Connection, record: MessageRecord, check: NoticeCheck, gate: NoticeGate
) -> MessageRecord:
    verdict = settle(check.verdict, _history(conn, gate))
    if verdict.counts_notice:
        _count_notice(conn, gate)
        conn.execute(
            "INSERT OR REPLACE INTO notice_dedup VALUES (?,?,?)",
            (gate.dedup_key, record.reference, iso(record.received_at)),
        )
    return replace(
        record,
        outcome=verdict.outcome,
        reply=check.replies[verdict.reply],
        notice=format_notice_status(verdict.notice),
        jobs=tuple(job_record(j) for j in verdict.jobs),
        duplicate_of=verdict.duplicate_of,
    )


def _history(conn: sqlite3.Connection, gate: NoticeGate) -> NoticeHistory:
    """What earlier notices say about this one; the counts are read only if it is new."""
    earlier = conn.execute(
        "SELECT reference FROM notice_dedup WHERE key = ? AND at >= ?",
        (gate.dedup_key, iso(gate.dedup_since)),
    ).fetchone()
    if earlier is not None:
        return NoticeHistory(duplicate_of=earlier[0])
    counts = {scope: _count(conn, scope, key, gate.hour) for scope, key in gate.counters.items()}
    return NoticeHistory(counts=counts)


def _count(conn: sqlite3.Connection, scope: str, key: str, hour: str) -> int:
    row = conn.execute(
        "SELECT count FROM notice_counts WHERE scope = ? AND key = ? AND hour = ?",
        (scope, key, hour),
    ).fetchone()
    return int(row[0]) if row else 0


def _count_notice(conn: sqlite3.Connection, gate: NoticeGate) -> None:
    if not _count(conn, NoticeScope.TOTAL, "*", gate.hour):
        # The first notice of the hour tidies up: older windows no longer limit anything.
        conn.execute("DELETE FROM notice_counts WHERE hour < ?", (gate.hour,))
        conn.execute("DELETE FROM notice_dedup WHERE at < ?", (iso(gate.dedup_since),))
    conn.executemany(
        "INSERT INTO notice_counts VALUES (?,?,?,1)"
        " ON CONFLICT (scope, key, hour) DO UPDATE SET count = count + 1",
        [(scope, key, gate.hour) for scope, key in gate.counters.items()],
    )


_MESSAGE_COLUMNS = (
    "reference, received_at, session_id, peer_ip, peer_port, helo, tls, mail_from, recipients,"
    " message_id, subject, date_header, from_header, size, sha256, attachments, a_numbers,"
    " mime_truncated, outcome, reply, notice, duplicate_of, auth, sender_authenticated,"
    " refused_for"
)


def _insert_message(conn: sqlite3.Connection, r: MessageRecord) -> None:
    facts = r.facts
    conn.execute(
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ({','.join('?' * 25)})",
        (
            r.reference,
            iso(r.received_at),
            r.session_id,
            r.peer_ip,
            r.peer_port,
            r.helo,
            r.tls,
            r.mail_from,
            json.dumps([x.recipient for x in r.recipients]),
            facts.message_id,
            facts.subject,
            facts.date,
            facts.from_header,
            facts.size,
            facts.sha256,
            _attachments_json(facts),
            json.dumps(list(facts.a_numbers)),
            int(facts.truncated),
            r.outcome,
            r.reply,
            r.notice,
            r.duplicate_of,
            r.auth,
            int(r.sender_authenticated),
            r.refused_for,
        ),
    )
    conn.executemany(
        "INSERT INTO message_recipients VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                r.reference,
                x.recipient,
                x.kind,
                x.office,
                x.phase,
                x.action,
                x.reason,
                iso(x.decided_at),
                x.local_time,
            )
            for x in r.recipients
        ],
    )
    if r.raw is not None:
        keep = None if r.raw_keep_until is None else iso(r.raw_keep_until)
        conn.execute("INSERT INTO raw_messages VALUES (?,?,?)", (r.reference, r.raw, keep))
    created = iso(r.received_at)
    conn.executemany(
        "INSERT INTO jobs (reference, kind, office, mail_from, recipients, destination, route,"
        " created_at, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                r.reference,
                j.kind,
                j.office,
                j.mail_from,
                json.dumps(list(j.recipients)),
                j.destination,
                j.route,
                created,
                created,
                created,
            )
            for j in r.jobs
        ],
    )


def _attachments_json(facts: MessageFacts) -> str:
    return json.dumps(
        [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in facts.attachments
        ]
    )


def _insert_refusal(conn: sqlite3.Connection, r: RefusalRecord) -> None:
    conn.execute(
        "INSERT INTO refusals VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            r.reference,
            iso(r.at),
            r.session_id,
            r.peer_ip,
            r.helo,
            r.mail_from,
            r.recipient,
            r.office,
            r.phase,
            r.reason,
            r.reply,
        ),
    )
