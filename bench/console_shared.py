"""The console's keyset pages on the shared store: `PgAuditReader.browse_attempts`, first page,
deep page (older, and newer), and filtered pages, p50/p99 per case (the reads alone,
without HTTP).

    python bench/console_shared.py [--attempts N] [--requests R] [--seconds S]

1. Starts the tests' PostgreSQL (tests/postgres.py, loopback only) with one database, makes
   the schema with `PgStore.open()`, and fills it in three INSERT ... SELECT statements: N
   attempts one every 20 s, 90 % messages refused after DATA (one recipient each, 500
   senders over 50 domains, nodes mx1 and mx2 in turn), 10 % refusals at RCPT.
2. Per case, one reader asks for the same page of 100 (as the console's default page) R
   times, bounded by S seconds: the first page, the page at row N/2 (its key as an "Older"
   link would carry it), the page above it (as its "Newer" link would: `after=`, the keyset
   walked forwards), an office (SQL), a sender domain (SQL, no index) and a decision
   (applied in Python, read in windows of 500).

Every load is bounded in count and in time. The machine is shared: compare within one run.
bench/console.py measures the SQLite store through the console's HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from gateway.store.browse import Key
from gateway.store.postgres.reading import PgAuditReader
from gateway.store.postgres.store import PgStore
from gateway.store.records import Filters
from tests.postgres import running_postgres

SINCE = datetime(2017, 1, 1, tzinfo=UTC)
PAGE = 100

_MESSAGES = """
INSERT INTO messages (reference, received_at, session_id, peer_ip, mail_from, recipients, size,
    sha256, attachments, a_numbers, mime_truncated, outcome, reply, notice, node)
SELECT 'B' || lpad(n::text, 21, '0'), %(since)s + n * interval '20 seconds', 's', '192.0.2.1',
    'a' || (n %% 500) || '@firm' || (n %% 50) || '.example', '["f@occ.example"]', 100, 'x',
    '[]', '[]', false, 'rejected', '550', 'none', CASE WHEN n %% 2 = 0 THEN 'mx1' ELSE 'mx2' END
FROM generate_series(0, %(last)s) n WHERE n %% 10 <> 0
"""
_RECIPIENTS = """
INSERT INTO message_recipients (reference, recipient, kind, office, phase, action, reason,
    decided_at)
SELECT reference, 'f@occ.example', 'filing', 'occ', 'retired', 'reject-after-data', 'retired',
    received_at FROM messages
"""
_REFUSALS = """
INSERT INTO refusals (reference, at, session_id, peer_ip, mail_from, recipient, office, phase,
    reason, reply, node)
SELECT 'B' || lpad(n::text, 21, '0'), %(since)s + n * interval '20 seconds', 's', '192.0.2.1',
    'a@firm.example', 'f@occ.example', 'occ', 'retired', 'gone', '550', 'mx1'
FROM generate_series(0, %(last)s, 10) n
"""


def build(dsn: str, attempts: int) -> None:
    async def schema() -> None:
        store = PgStore(dsn, node="bench")
        await store.open()
        await store.close()

    asyncio.run(schema())
    values = {"since": SINCE, "last": attempts - 1}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_MESSAGES, values)
        conn.execute(_RECIPIENTS)
        conn.execute(_REFUSALS, values)
        conn.execute("ANALYZE")


def key_at(attempts: int, row: int) -> Key:
    """The page key of newest-first row `row`: attempt n arrived at SINCE + 20 n s."""
    n = attempts - 1 - row
    at = SINCE + timedelta(seconds=n * 20)
    return Key(at.isoformat(timespec="microseconds"), "B" + str(n).zfill(21))


def measure(
    reader: PgAuditReader,
    filters: Filters,
    keys: tuple[Key | None, Key | None],
    args: argparse.Namespace,
) -> str:
    before, after = keys
    times: list[float] = []
    deadline = time.monotonic() + args.seconds
    rows = 0
    while len(times) < args.requests and time.monotonic() < deadline:
        started = time.perf_counter()
        page = reader.browse_attempts(filters, before=before, after=after, size=PAGE)
        rows = len(page.attempts)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return (
        f"{rows} rows, {len(times)} reads, p50 {statistics.median(times):.1f} ms, p99 {p99:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with running_postgres(databases=("bench",)) as server:
        dsn = server.dsn_for("bench")
        started = time.monotonic()
        build(dsn, args.attempts)
        print(f"{args.attempts:,} attempts built in {time.monotonic() - started:.1f} s")
        deep = args.attempts // 2
        middle = key_at(args.attempts, deep)
        cases: dict[str, tuple[Filters, tuple[Key | None, Key | None]]] = {
            "first page": (Filters(), (None, None)),
            f"page at row {deep:,}": (Filters(), (middle, None)),
            f"page above row {deep:,} (Newer)": (Filters(), (None, middle)),
            "office (SQL)": (Filters(office="occ"), (None, None)),
            "sender domain (SQL, no index)": (Filters(sender_domain="firm7.example"), (None, None)),
            "decision (Python)": (Filters(decision="refused"), (None, None)),
        }
        reader = PgAuditReader(dsn, node="bench")
        try:
            for name, (filters, keys) in cases.items():
                print(f"| {name} | {measure(reader, filters, keys, args)} |", flush=True)
        finally:
            reader.close()


if __name__ == "__main__":
    main()
