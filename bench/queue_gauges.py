"""What one /metrics scrape's queue read costs, on a store of 100,000 jobs (issue 12).

    python bench/queue_gauges.py [--jobs N] [--scrapes S]

The read is the one the gauges make at every scrape (store/queuedepth.py's SqliteQueueDepth,
postgres/queuedepth.py's PgQueueDepth: one statement), timed S times in a row on each
backend, for two queues of N jobs:

  backlog   every job still counted: 40 % queued, 30 % deferred, 10 % in flight, 10 % held,
            10 % failed, over 3 nodes (a long outage of the smarthost: the worst case)
  history   99 % delivered, the other 1 % as above (a queue in service: most jobs are done)

PostgreSQL is a server of tests/postgres.py on 127.0.0.1, on the same cores, ANALYZEd after
the fill; the figures are one read's p50 and p99 in ms. The script checks that each read
counts every job it should. The machine is shared and noisy (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from gateway.store.db import Store  # noqa: E402
from gateway.store.postgres.queuedepth import PgQueueDepth  # noqa: E402
from gateway.store.postgres.store import PgStore  # noqa: E402
from gateway.store.queuedepth import QueueDepth, SqliteQueueDepth  # noqa: E402
from tests.postgres import running_postgres  # noqa: E402

_PENDING = ["queued"] * 4 + ["deferred"] * 3 + ["in-flight", "held", "failed"]
NODES = ("mx1", "mx2", "mx3")
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def states(jobs: int, *, history: bool) -> Iterator[str]:
    for n in range(jobs):
        if not history:
            yield _PENDING[n % len(_PENDING)]
        else:
            yield "delivered" if n % 100 else _PENDING[n // 100 % len(_PENDING)]


def rows(jobs: int, *, history: bool) -> Iterator[tuple[str, str, datetime, str]]:
    for n, state in enumerate(states(jobs, history=history)):
        at = T0 + timedelta(seconds=n)
        yield (f"20260105-{n:013d}", state, at, NODES[n % len(NODES)])


def fill_sqlite(path: Path, jobs: int, *, history: bool) -> None:
    store = Store(path)
    asyncio.run(_open_close(store))  # creates and migrates the file
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO jobs (reference, kind, mail_from, recipients, route, state, created_at,"
            " next_attempt_at, updated_at) VALUES (?, 'notice', '', '[]', 'x:25', ?, ?, ?, ?)",
            ((ref, state, at.isoformat(), at.isoformat(), at.isoformat())
             for ref, state, at, _node in rows(jobs, history=history)),
        )  # fmt: skip


def fill_postgres(dsn: str, jobs: int, *, history: bool) -> None:
    asyncio.run(_open_close(PgStore(dsn, node="bench")))
    with psycopg.connect(dsn) as conn:
        with conn.cursor().copy(
            "COPY jobs (reference, kind, mail_from, recipients, route, state, created_at,"
            " next_attempt_at, updated_at, node) FROM STDIN"
        ) as copy:
            for ref, state, at, node in rows(jobs, history=history):
                copy.write_row((ref, "notice", "", "[]", "x:25", state, at, at, at, node))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE jobs")


async def _open_close(store: Store | PgStore) -> None:
    await store.open()
    await store.close()


def timed(read: Callable[[], QueueDepth], scrapes: int, wanted: int) -> tuple[float, float]:
    read()  # the first read opens the connection: not a scrape's cost
    took = []
    for _ in range(scrapes):
        start = time.perf_counter()
        depth = read()
        took.append((time.perf_counter() - start) * 1000)
        counted = sum(depth.by_state().values())
        if counted != wanted:
            raise SystemExit(f"a read counted {counted} jobs, not {wanted}")
    cuts = statistics.quantiles(took, n=100)
    return statistics.median(took), cuts[98]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    print(f"{args.jobs:,} jobs, {args.scrapes} scrapes; one read's p50 / p99 in ms")
    print("| queue | counted | sqlite | postgres |\n|---|---:|---:|---:|")
    with running_postgres() as server, tempfile.TemporaryDirectory() as scratch:
        for name in ("backlog", "history"):
            history = name == "history"
            wanted = sum(s != "delivered" for s in states(args.jobs, history=history))
            path = Path(scratch) / f"{name}.sqlite3"
            fill_sqlite(path, args.jobs, history=history)
            dsn = server.create_database(f"gauges_{name}")
            fill_postgres(dsn, args.jobs, history=history)
            lite = timed(SqliteQueueDepth(path).read_depth, args.scrapes, wanted)
            pg = PgQueueDepth(dsn, node="bench")
            try:
                shared = timed(pg.read_depth, args.scrapes, wanted)
            finally:
                pg.close()
            print(
                f"| {name} | {wanted:,} | {lite[0]:.1f} / {lite[1]:.1f}"
                f" | {shared[0]:.1f} / {shared[1]:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
