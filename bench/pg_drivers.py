"""The PostgreSQL driver choice, measured (issue 12): psycopg 3 or asyncpg on the DATA path.

    python bench/pg_drivers.py [--rounds R] [--messages N] [--sessions 1,10,50] [--jobs J]

It needs the postgres extra and asyncpg, which is no dependency of the project:
`pip install -e '.[dev]' asyncpg`. PSYCOPG_IMPL=binary or python picks psycopg's build; the
first lines printed say which one ran, and on which libpq.

Against a fresh PostgreSQL server from tests/postgres.py (127.0.0.1, fsync=on, commits durable
as a 250 requires), each of N concurrent sessions records messages the way the gateway's
DATA path does, one transaction per message:

  1. the notice gate: a savepoint, the dedup entry inserted ON CONFLICT (a repeat within the
     window returns no row: no second notice) and the four hourly counters (sender, domain,
     client, total) upserted RETURNING their counts (the row locks make two sessions unable
     to pass one limit together; past a limit the real code rolls back to the savepoint);
  2. the message row (the 25 columns of gateway/store/schema.py), three recipient rows and
     one notice job, then COMMIT.

Backends, in interleaved rounds (the order rotates every round), each pool opened with N
connections before the clock starts:

  asyncpg     asyncpg.create_pool; one round trip per statement, executemany in one
  asyncpg+last the same with the gate moved last, just before COMMIT (the order
              psycopg+1rt has; asyncpg cannot pipeline, so the locks span two round trips)
  psycopg     psycopg 3 AsyncConnectionPool; one round trip per statement, executemany
              pipelined (psycopg does that by itself)
  psycopg+pl  the same in pipeline mode: the gate in one round trip, the writes and the
              COMMIT in a second
  psycopg+1rt pipeline mode with the gate last: everything and the COMMIT in one round
              trip (the counters' locks are then held only while the server commits)
  sqlite      the gateway's own store (gateway.store.db.Store, group commit,
              synchronous=FULL) recording the same message with its notice check, for scale

Before the rounds it prints which of libpq's connection strings each driver takes
(keyword/value, parameters such as connect_timeout, a service file with PGPASSFILE). After
them comes the outbox claim: J queued jobs taken in batches of 20 by one and by two
concurrent claimers (`UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
RETURNING`, each an autocommit transaction), and by the SQLite store's Outbox.claim for
scale; every job must be claimed exactly once, or the script fails.

Every run is bounded by its message count and by --seconds; a run that hits the time bound
says so. The machine is shared and noisy (bench/README.md): compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import psycopg_pool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.mail.evidence import MessageFacts  # noqa: E402
from gateway.policy.answer import AnswerGroup, AnswerKind, Reply, ReplyKind  # noqa: E402
from gateway.policy.decision import NoticeScope  # noqa: E402
from gateway.policy.verdict import Job, NoticeGate, Verdict  # noqa: E402
from gateway.store.db import (  # noqa: E402
    JobRecord,
    MessageRecord,
    NoticeCheck,
    RecipientRecord,
    Store,
)
from gateway.store.outbox import Outbox  # noqa: E402
from gateway.vocabulary import JobKind, NoticeStatus, NoticeStatusKind, Outcome  # noqa: E402
from tests.postgres import DATABASE, SUPERUSER, PostgresServer, running_postgres  # noqa: E402

OFFICE = "occ-chicago"
RETIRED = (
    "occ-chicago-filings@occ-chicago.example",
    "occ-chicago-service@occ-chicago.example",
    "occ-chicago-clerk@occ-chicago.example",
)
REPLY = "550 5.1.6 NOT FILED: this address was retired on 2017-09-12 (ref {ref})"
BATCH = 20  # jobs per claim, like the delivery worker's claim limit
NEVER = 10**9  # hourly limits no run reaches: the bench measures the common path

# -- the PostgreSQL schema: the SQLite one's shape, in PostgreSQL's types ------------------------

SCHEMA = """
CREATE TABLE messages (
    reference text PRIMARY KEY, received_at timestamptz NOT NULL, session_id text NOT NULL,
    peer_ip text NOT NULL, peer_port integer, helo text, tls text, mail_from text NOT NULL,
    recipients jsonb NOT NULL, message_id text, subject text, date_header text,
    from_header text, size bigint NOT NULL, sha256 text NOT NULL, attachments jsonb NOT NULL,
    a_numbers jsonb NOT NULL, mime_truncated boolean NOT NULL, outcome text NOT NULL,
    reply text NOT NULL, notice text NOT NULL, duplicate_of text, auth text,
    sender_authenticated boolean NOT NULL DEFAULT false, refused_for text, node text NOT NULL);
CREATE INDEX messages_received ON messages (received_at);
CREATE INDEX messages_sender ON messages (mail_from);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE TABLE message_recipients (
    reference text NOT NULL REFERENCES messages (reference), recipient text NOT NULL,
    kind text NOT NULL, office text, phase text, action text NOT NULL, reason text NOT NULL,
    decided_at timestamptz NOT NULL, local_time text, PRIMARY KEY (reference, recipient));
CREATE TABLE notice_counts (
    scope text NOT NULL, key text NOT NULL, hour timestamptz NOT NULL, count integer NOT NULL,
    PRIMARY KEY (scope, key, hour));
CREATE TABLE notice_dedup (key text PRIMARY KEY, reference text NOT NULL, at timestamptz NOT NULL);
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, reference text NOT NULL,
    kind text NOT NULL, office text, mail_from text NOT NULL, recipients jsonb NOT NULL,
    destination text, route text NOT NULL, state text NOT NULL DEFAULT 'queued',
    created_at timestamptz NOT NULL, next_attempt_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0, lease_owner text, lease_until timestamptz,
    last_reply text, updated_at timestamptz NOT NULL, node text NOT NULL,
    about_job bigint REFERENCES jobs (id));
CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
CREATE INDEX jobs_reference ON jobs (reference);
"""
TRUNCATE = "TRUNCATE messages, message_recipients, notice_counts, notice_dedup, jobs"

# Positional $n parameters in both drivers (psycopg through its raw cursor), so that both
# send the very same statements.
DEDUP = (
    "INSERT INTO notice_dedup (key, reference, at) VALUES ($1, $2, $3)"
    " ON CONFLICT (key) DO UPDATE SET reference = excluded.reference, at = excluded.at"
    " WHERE notice_dedup.at < $4 RETURNING reference"
)
# One statement for the four counters, locked in one fixed order (no deadlock between two
# sessions), each returning its count after this notice.
COUNTERS = (
    "INSERT INTO notice_counts (scope, key, hour, count)"
    " SELECT s, k, $3, 1 FROM unnest($1::text[], $2::text[]) AS t (s, k)"
    " ON CONFLICT (scope, key, hour) DO UPDATE SET count = notice_counts.count + 1"
    " RETURNING scope, count"
)
MESSAGE = (
    "INSERT INTO messages (reference, received_at, session_id, peer_ip, peer_port, helo, tls,"
    " mail_from, recipients, message_id, subject, date_header, from_header, size, sha256,"
    " attachments, a_numbers, mime_truncated, outcome, reply, notice, duplicate_of, auth,"
    " sender_authenticated, refused_for, node) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
    " $9::jsonb, $10, $11, $12, $13, $14, $15, $16::jsonb, $17::jsonb, $18, $19, $20, $21,"
    " $22, $23, $24, $25, $26)"
)
RECIPIENT = (
    "INSERT INTO message_recipients (reference, recipient, kind, office, phase, action,"
    " reason, decided_at, local_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
JOB = (
    "INSERT INTO jobs (reference, kind, office, mail_from, recipients, route, created_at,"
    " next_attempt_at, updated_at, node) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $7, $7, $8)"
)
CLAIM = (
    "UPDATE jobs SET state = 'in-flight', lease_owner = $1, lease_until = $2, updated_at = $3"
    " WHERE id IN (SELECT id FROM jobs WHERE state IN ('queued', 'deferred')"
    "  AND next_attempt_at <= $3 ORDER BY next_attempt_at, id LIMIT $4"
    "  FOR UPDATE SKIP LOCKED) RETURNING id"
)


# -- one message, as plain values ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filing:
    """What one message writes; the same values for every backend."""

    reference: str
    at: datetime
    sender: str
    domain: str
    client: str
    message_id: str

    @property
    def hour(self) -> datetime:
        return self.at.replace(minute=0, second=0, microsecond=0)

    has_total: bool = True  # whether the one counter every message shares is counted

    @property
    def counters(self) -> tuple[list[str], list[str]]:
        scopes, keys = ["sender", "domain", "client"], [self.sender, self.domain, self.client]
        if self.has_total:
            scopes.append("total")
            keys.append("*")
        return scopes, keys


def filing(number: int, run: str, *, has_total: bool = True) -> Filing:
    """Message `number` of a run: 997 senders in 89 domains from 250 clients, all distinct
    filings (each gets its notice), as a busy morning after a cutoff looks."""
    domain = f"firm{number % 89}.example"
    return Filing(
        has_total=has_total,
        reference=f"{run}-{number:08d}",
        at=datetime.now(UTC),
        sender=f"attorney{number % 997}@{domain}",
        domain=domain,
        client=f"192.0.2.{number % 250}",
        message_id=f"<{run}.{number}@{domain}>",
    )


def message_row(f: Filing) -> tuple[Any, ...]:
    recipients = '["' + '","'.join(RETIRED) + '"]'
    return (
        f.reference, f.at, "s-" + f.reference, f.client, 40000, "mail." + f.domain, "TLSv1.3",
        f.sender, recipients, f.message_id, "Motion to continue A123456789", "Thu, 3 Dec 2026",
        f.sender, 2048, "ab" * 32, "[]", '["A123456789"]', False, "rejected",
        REPLY.format(ref=f.reference), "queued", None, "dkim=pass", True, None, "mx1",
    )  # fmt: skip


def recipient_rows(f: Filing) -> list[tuple[Any, ...]]:
    return [
        (
            f.reference,
            r,
            "retired",
            OFFICE,
            "retired",
            "reject-after-data",
            "retired",
            f.at,
            "09:00",
        )
        for r in RETIRED
    ]


def job_row(f: Filing) -> tuple[Any, ...]:
    return (f.reference, "notice", OFFICE, "", f'["{f.sender}"]', f.domain, f.at, "mx1")


# -- the backends ---------------------------------------------------------------------------------

Record = Callable[[Filing], Awaitable[None]]


class AsyncpgBackend:
    name = "asyncpg"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None

    async def open(self, sessions: int) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=sessions, max_size=sessions)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def record(self, f: Filing) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SAVEPOINT gate")
            first = await conn.fetchval(DEDUP, f.message_id, f.reference, f.at, f.at - DAY)
            counts = await conn.fetch(COUNTERS, *f.counters, f.hour)
            _check_gate(first, counts)
            await conn.execute("RELEASE gate")
            await conn.execute(MESSAGE, *message_row(f))
            await conn.executemany(RECIPIENT, recipient_rows(f))
            await conn.execute(JOB, *job_row(f))

    async def claim(self, owner: str, now: datetime) -> list[int]:
        assert self.pool is not None
        rows = await self.pool.fetch(CLAIM, owner, now + LEASE, now, BATCH)
        return [int(r[0]) for r in rows]


class LastGateAsyncpgBackend(AsyncpgBackend):
    """asyncpg with the gate moved last, as psycopg+1rt has it: the counters' row locks are
    then held over two round trips (the gate, then COMMIT) rather than over all of them."""

    name = "asyncpg+last"

    async def record(self, f: Filing) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(MESSAGE, *message_row(f))
            await conn.executemany(RECIPIENT, recipient_rows(f))
            await conn.execute(JOB, *job_row(f))
            first = await conn.fetchval(DEDUP, f.message_id, f.reference, f.at, f.at - DAY)
            _check_gate(first, await conn.fetch(COUNTERS, *f.counters, f.hour))


class PsycopgBackend:
    name = "psycopg"
    is_pipelined = False

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    async def open(self, sessions: int) -> None:
        self.pool = psycopg_pool.AsyncConnectionPool(
            self.dsn,
            min_size=sessions,
            max_size=sessions,
            kwargs={"cursor_factory": psycopg.AsyncRawCursor},
            open=False,
        )
        await self.pool.open(wait=True, timeout=60)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def record(self, f: Filing) -> None:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            if self.is_pipelined:
                async with conn.pipeline():
                    await self._write(conn, f)
            else:
                await self._write(conn, f)

    async def _write(self, conn: psycopg.AsyncConnection[Any], f: Filing) -> None:
        async with conn.transaction():
            await conn.execute("SAVEPOINT gate")
            dedup = await conn.execute(DEDUP, (f.message_id, f.reference, f.at, f.at - DAY))
            counters = await conn.execute(COUNTERS, (*f.counters, f.hour))
            # In pipeline mode the fetches are what sends the gate: one round trip for both.
            first = await dedup.fetchone()
            _check_gate(first, await counters.fetchall())
            await conn.execute("RELEASE gate")
            await conn.execute(MESSAGE, message_row(f))
            async with conn.cursor() as cursor:
                await cursor.executemany(RECIPIENT, recipient_rows(f))
            await conn.execute(JOB, job_row(f))

    async def claim(self, owner: str, now: datetime) -> list[int]:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            cursor = await conn.execute(CLAIM, (owner, now + LEASE, now, BATCH))
            return [int(r[0]) for r in await cursor.fetchall()]


class PipelinedPsycopgBackend(PsycopgBackend):
    name = "psycopg+pl"
    is_pipelined = True


class OneTripPsycopgBackend(PsycopgBackend):
    """Pipeline mode with the gate last: the writes, the dedup entry, the counters and the
    COMMIT go to the server in one round trip, so the counters' row locks are held only
    while the server commits, never while this process waits for its event loop.

    (The gateway would check the limits in that statement, failing the transaction when one
    is passed or the filing is a repeat, and record again with the settled verdict: a rare
    second transaction. The bench never passes a limit.)
    """

    name = "psycopg+1rt"
    is_pipelined = True

    async def _write(self, conn: psycopg.AsyncConnection[Any], f: Filing) -> None:
        async with conn.transaction():
            await conn.execute(MESSAGE, message_row(f))
            async with conn.cursor() as cursor:
                await cursor.executemany(RECIPIENT, recipient_rows(f))
            await conn.execute(JOB, job_row(f))
            dedup = await conn.execute(DEDUP, (f.message_id, f.reference, f.at, f.at - DAY))
            counters = await conn.execute(COUNTERS, (*f.counters, f.hour))
        # Leaving the transaction queued the COMMIT and sent the pipeline: all results are in.
        _check_gate(await dedup.fetchone(), await counters.fetchall())


class SqliteBackend:
    """The gateway's real store: its writer thread, group commit and notice check."""

    name = "sqlite"

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="pgbench-sqlite-")
        self.store: Store | None = None
        self.runs = 0

    async def open(self, sessions: int) -> None:
        self.runs += 1
        self.store = Store(Path(self.dir.name) / f"run{self.runs}.sqlite3")
        await self.store.open()

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

    async def record(self, f: Filing) -> None:
        assert self.store is not None
        record, check = sqlite_message(f)
        stored = await self.store.record_message(record, check)
        if stored.notice != "queued":
            raise RuntimeError(f"{f.reference}: notice {stored.notice}, not queued")

    async def claim(self, owner: str, now: datetime) -> list[int]:
        assert self.store is not None
        jobs = await Outbox(self.store, owner=owner).claim(
            now, limit=BATCH, lease_s=LEASE.total_seconds(), busy={}, per_route=NEVER
        )
        return [j.id for j in jobs]


DAY = timedelta(days=1)
# With the total counter, every notice locks the one row all sessions share until its COMMIT
# is durable; without it, sessions contend only when they share a sender, domain or client.
SCENARIOS = {True: "total", False: "no-total"}
LEASE = timedelta(minutes=5)


def _check_gate(first: object, counts: Sequence[Any]) -> None:
    # Every filing is distinct and no limit is near: a duplicate or a missing count is a bug
    # in the bench, and would make its figures lie.
    if first is None or len(counts) not in (3, 4):
        raise RuntimeError(f"gate: dedup {first!r}, {len(counts)} counters")


def sqlite_message(f: Filing) -> tuple[MessageRecord, NoticeCheck]:
    """The same message as the gateway's session hands it to its store."""
    facts = MessageFacts(
        size=2048, sha256="ab" * 32, message_id=f.message_id,
        subject="Motion to continue A123456789", date="Thu, 3 Dec 2026", from_header=f.sender,
        a_numbers=("A123456789",),
    )  # fmt: skip
    recipients = tuple(
        RecipientRecord(r, "retired", "reject-after-data", "retired", f.at, OFFICE, "retired")
        for r in RETIRED
    )
    notice = Job(JobKind.NOTICE, "", (f.sender,), OFFICE)
    gate = NoticeGate(
        dedup_key=f.message_id,
        dedup_since=f.at - DAY,
        hour=f"{f.at:%Y-%m-%dT%H}",
        counters=dict(zip(map(NoticeScope, f.counters[0]), f.counters[1], strict=True)),
        limits=dict.fromkeys(NoticeScope, NEVER),
    )
    verdict = Verdict(
        decisions=(),
        group=AnswerGroup(AnswerKind.RETIRED, OFFICE),
        reply=Reply(ReplyKind.RETIRED, OFFICE),
        outcome=Outcome.REJECTED,
        notice=NoticeStatus(NoticeStatusKind.QUEUED),
        jobs=(notice,),
        is_sender_authenticated=True,
        gate=gate,
    )
    replies = {r: REPLY.format(ref=f.reference) for r in verdict.possible_replies()}
    record = MessageRecord(
        reference=f.reference, received_at=f.at, session_id="s-" + f.reference,
        peer_ip=f.client, peer_port=40000, helo="mail." + f.domain, tls="TLSv1.3",
        mail_from=f.sender, facts=facts, recipients=recipients, outcome="rejected",
        reply=REPLY.format(ref=f.reference), notice="queued",
        jobs=(JobRecord("notice", "", (f.sender,), OFFICE),), auth="dkim=pass",
        sender_authenticated=True,
    )  # fmt: skip
    return record, NoticeCheck(verdict, replies)


Backend = AsyncpgBackend | PsycopgBackend | SqliteBackend

# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    backend: str
    scenario: str
    sessions: int
    messages: int
    seconds: float
    latencies: list[float]
    is_cut_short: bool

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(
    backend: Backend, *, sessions: int, messages: int, seconds: float, run: str, has_total: bool
) -> Run:
    """`messages` messages over `sessions` concurrent sessions, within `seconds`."""
    await backend.open(sessions)
    latencies: list[float] = []
    numbers = iter(range(messages))
    deadline = time.monotonic() + seconds

    async def session() -> None:
        for number in numbers:
            if time.monotonic() > deadline:
                return
            began = time.perf_counter()
            await backend.record(filing(number, run, has_total=has_total))
            latencies.append(time.perf_counter() - began)

    try:
        began = time.perf_counter()
        async with asyncio.timeout(seconds + 30):
            await asyncio.gather(*(session() for _ in range(sessions)))
        elapsed = time.perf_counter() - began
    finally:
        await backend.close()
    done = len(latencies)
    scenario = SCENARIOS[has_total]
    return Run(backend.name, scenario, sessions, done, elapsed, latencies, done < messages)


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TRUNCATE)
    finally:
        await conn.close()


async def data_path(dsn: str, args: argparse.Namespace) -> list[Run]:
    backends: list[Backend] = [
        AsyncpgBackend(dsn),
        LastGateAsyncpgBackend(dsn),
        PsycopgBackend(dsn),
        PipelinedPsycopgBackend(dsn),
        OneTripPsycopgBackend(dsn),
        SqliteBackend(),
    ]
    runs: list[Run] = []
    for round_no in range(args.rounds):
        for sessions, has_total in itertools.product(args.sessions, (True, False)):
            shift = (round_no + sessions) % len(backends)
            for backend in backends[shift:] + backends[:shift]:
                await reset(dsn)
                result = await measure(
                    backend,
                    sessions=sessions,
                    messages=args.messages,
                    seconds=args.seconds,
                    run=f"r{round_no}s{sessions}{has_total:d}{backend.name}",
                    has_total=has_total,
                )
                runs.append(result)
                cut = " (time bound hit)" if result.is_cut_short else ""
                print(
                    f"round {round_no + 1} {result.scenario:<10} sessions {sessions:>2}"
                    f" {result.backend:<10}"
                    f" {result.rate:8.0f} msgs/s  p50 {result.quantile(0.5):6.2f} ms"
                    f"  p99 {result.quantile(0.99):6.2f} ms{cut}",
                    flush=True,
                )
    return runs


# -- the outbox claim -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimRun:
    backend: str
    claimers: int
    jobs: int
    claims: int
    seconds: float
    latencies: list[float]


async def fill_jobs(backend: Backend, jobs: int, *, run: str) -> None:
    """`jobs` queued notice jobs, made the way the DATA path makes them."""
    numbers = iter(range(jobs))

    async def session() -> None:
        for number in numbers:
            await backend.record(filing(number, f"{run}{backend.name}"))

    async with asyncio.timeout(300):
        await asyncio.gather(*(session() for _ in range(10)))


async def claim_all(backend: Backend, *, claimers: int, jobs: int, seconds: float) -> ClaimRun:
    """Claim every job with `claimers` concurrent claimers; each job exactly once."""
    claimed: list[int] = []
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def claimer(owner: str) -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            ids = await backend.claim(owner, datetime.now(UTC) + timedelta(seconds=1))
            latencies.append(time.perf_counter() - began)
            if not ids:
                return
            claimed.extend(ids)

    began = time.perf_counter()
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(claimer(f"node{n}") for n in range(claimers)))
    elapsed = time.perf_counter() - began
    if len(claimed) != jobs or len(set(claimed)) != jobs:
        raise RuntimeError(
            f"{backend.name}: {len(claimed)} claims of {len(set(claimed))} distinct jobs,"
            f" {jobs} queued: a job was claimed twice or not at all"
        )
    return ClaimRun(backend.name, claimers, jobs, len(latencies), elapsed, latencies)


async def outbox_claims(dsn: str, args: argparse.Namespace) -> list[ClaimRun]:
    """Interleaved rounds of the claim: one and two claimers, each backend in turn."""
    results: list[ClaimRun] = []
    backends: list[Backend] = [AsyncpgBackend(dsn), PsycopgBackend(dsn), SqliteBackend()]
    for round_no, claimers in itertools.product(range(args.rounds), (1, 2)):
        shift = (round_no + claimers) % len(backends)
        for backend in backends[shift:] + backends[:shift]:
            await reset(dsn)
            await backend.open(10)
            try:
                await fill_jobs(backend, args.jobs, run=f"claim{round_no}{claimers}")
                result = await claim_all(
                    backend, claimers=claimers, jobs=args.jobs, seconds=args.seconds
                )
            finally:
                await backend.close()
            results.append(result)
            print(
                f"round {round_no + 1} claim, {claimers} claimer(s) {result.backend:<8}"
                f" {result.jobs} jobs in {result.claims} claims:"
                f" {result.jobs / result.seconds:7.0f} jobs/s"
                f"  p50 {_ms(result.latencies, 0.5):6.2f} ms"
                f"  p99 {_ms(result.latencies, 0.99):6.2f} ms",
                flush=True,
            )
    return results


def claim_summary(results: list[ClaimRun]) -> None:
    print("\nclaims, medians over the rounds")
    print(f"{'claimers':>8} {'backend':<8} {'jobs/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
    for claimers in (1, 2):
        for name in dict.fromkeys(r.backend for r in results):
            mine = [r for r in results if r.backend == name and r.claimers == claimers]
            rate = statistics.median(r.jobs / r.seconds for r in mine)
            p50 = statistics.median(_ms(r.latencies, 0.5) for r in mine)
            p99 = statistics.median(_ms(r.latencies, 0.99) for r in mine)
            print(f"{claimers:>8} {name:<8} {rate:7.0f} {p50:7.2f} {p99:7.2f}")


def _ms(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# -- the report -----------------------------------------------------------------------------------


def summary(runs: list[Run], sessions: Sequence[int]) -> None:
    """Medians over the rounds, and each backend's msgs/s as a ratio to asyncpg's."""
    names = list(dict.fromkeys(r.backend for r in runs))
    print("\nmedians over the rounds")
    print(f"{'scenario':<9} {'sessions':>8} {'backend':<12} {'msgs/s':>7} {'p50 ms':>7}"
          f" {'p99 ms':>8} {'/asyncpg':>8}")  # fmt: skip
    for scenario, n in itertools.product(SCENARIOS.values(), sessions):
        same = [r for r in runs if r.sessions == n and r.scenario == scenario]
        rates = {n: statistics.median(r.rate for r in same if r.backend == n) for n in names}
        for name in names:
            mine = [r for r in same if r.backend == name]
            p50 = statistics.median(r.quantile(0.5) for r in mine)
            p99 = statistics.median(r.quantile(0.99) for r in mine)
            print(f"{scenario:<9} {n:>8} {name:<12} {rates[name]:7.0f} {p50:7.2f} {p99:8.2f}"
                  f" {rates[name] / rates['asyncpg']:8.2f}")  # fmt: skip


# -- connection strings as an operator writes them ---------------------------------------------


async def connection_forms(server: PostgresServer) -> None:
    """Which libpq connection strings each driver takes (docs/postgresql.md has the table)."""
    service = server.root / "bench_service.conf"
    service.write_text(
        f"[gw]\nhost=127.0.0.1\nport={server.port}\ndbname={DATABASE}\nuser={SUPERUSER}\n"
    )
    passfile = server.root / "bench_pgpass"
    passfile.write_text(f"127.0.0.1:{server.port}:*:{SUPERUSER}:{server.password}\n")
    passfile.chmod(0o600)
    keywords = (
        f"host=127.0.0.1 port={server.port} dbname={DATABASE} user={SUPERUSER}"
        f" password={server.password}"
    )
    forms = {
        "keyword/value": keywords,
        "?connect_timeout=5": server.dsn + "?connect_timeout=5",
        "?keepalives_idle=30": server.dsn + "?keepalives_idle=30",
        "?require_auth=scram-sha-256": server.dsn + "?require_auth=scram-sha-256",
        "?channel_binding=disable": server.dsn + "?channel_binding=disable",
        "?target_session_attrs=read-write": server.dsn + "?target_session_attrs=read-write",
        "service=gw (+ PGPASSFILE)": "postgresql:///?service=gw",
    }
    saved = {k: os.environ.get(k) for k in ("PGSERVICEFILE", "PGPASSFILE")}
    os.environ.update(PGSERVICEFILE=str(service), PGPASSFILE=str(passfile))
    try:
        print("connection strings: psycopg | asyncpg")
        for label, dsn in forms.items():
            first = await _try(psycopg.AsyncConnection.connect(dsn))
            second = await _try(asyncpg.connect(dsn))
            print(f"  {label:<34} {first} | {second}", flush=True)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value
    print()


async def _try(connecting: Awaitable[Any]) -> str:
    try:
        async with asyncio.timeout(30):
            conn = await connecting
        await conn.close()
        return "connects"
    except (psycopg.Error, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


async def create_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="per run")
    parser.add_argument("--sessions", default="1,10,50", help="comma-separated session counts")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to claim")
    parser.add_argument("--seconds", type=float, default=40.0, help="time bound of one run")
    args = parser.parse_args(argv)
    args.sessions = [int(s) for s in args.sessions.split(",")]
    with running_postgres() as server:
        print(f"PostgreSQL in {server.root}, port {server.port}, fsync=on", flush=True)
        print(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} libpq"
              f" {psycopg.pq.version()}), asyncpg {asyncpg.__version__}\n", flush=True)  # fmt: skip
        asyncio.run(connection_forms(server))
        asyncio.run(create_schema(server.dsn))
        runs = asyncio.run(data_path(server.dsn, args))
        summary(runs, args.sessions)
        print()
        claim_summary(asyncio.run(outbox_claims(server.dsn, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
