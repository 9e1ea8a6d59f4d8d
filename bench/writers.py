"""The state store under several writing processes: commit waits, side by side.

    python bench/writers.py [--writes N] [--sessions S] [--rounds R]

One store file, written by 1 and then 2 processes at once (as `[server] workers = 1` and `2`
would), each process a real `Store` with its writer thread and group commit, each with S
concurrent "sessions" that await one durable write after another (the store's health-check
write: a row made durable with synchronous=FULL, the shape of every record's commit). Each
setup runs twice: with the store's writer lock (writers of different processes take turns
through a lock file, `store/db.py`), and without it, where they meet at SQLite's own lock and
its busy handler, which waits by sleeping and polling. Rounds interleave the four setups.

It prints, per setup, the medians over rounds of: durable writes per second (all processes),
and each write's wait from hand-in to durable (p50, p99, max: what a reply waits for; the
worst process's). A write is counted only once the store said it was durable,
so the figures are of replies that could be sent. The machine is shared and noisy: compare
within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

START_TIMEOUT = 30.0
RUN_TIMEOUT = 300.0


async def _session(store: object, writes: int, waits: list[float]) -> None:
    from gateway.store.db import Store

    assert isinstance(store, Store)
    for _ in range(writes):
        began = time.perf_counter()
        await store.ping(datetime.now(UTC))
        waits.append(time.perf_counter() - began)


async def _writer(
    database: Path, *, sessions: int, writes: int, start_at: float
) -> dict[str, float]:
    from gateway.store.db import Store

    store = Store(database)
    await store.open()
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # all processes start together
        waits: list[float] = []
        began = time.perf_counter()
        per_session = writes // sessions
        await asyncio.gather(*(_session(store, per_session, waits) for _ in range(sessions)))
        elapsed = time.perf_counter() - began
    finally:
        await store.close()
    return {"writes": len(waits), "seconds": elapsed, **_quantiles(waits)}


async def _create(database: Path) -> None:
    from gateway.store.db import Store

    store = Store(database)
    await store.open()
    await store.close()


def _quantiles(waits: Sequence[float]) -> dict[str, float]:
    ordered = sorted(waits)
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def _child(args: argparse.Namespace) -> int:
    if args.no_turns:
        from gateway.store import db

        # The alternative measured: no lock file, so writers meet at SQLite's busy handler.
        db._writer_turn = lambda _lock: contextlib.nullcontext()  # type: ignore[assignment]
    result = asyncio.run(
        _writer(args.database, sessions=args.sessions, writes=args.writes, start_at=args.start_at)
    )
    print(json.dumps(result), flush=True)
    return 0


def _run_setup(
    args: argparse.Namespace, work: Path, *, processes: int, turns: bool, round_: int
) -> dict[str, float]:
    database = work / f"store-{processes}-{turns}-{round_}.sqlite3"
    asyncio.run(_create(database))  # made once, as the supervisor does before its workers
    start_at = time.time() + 3.0  # after every interpreter has started and opened the store
    command = [
        sys.executable,
        __file__,
        "--child",
        "--database",
        str(database),
        "--sessions",
        str(args.sessions),
        "--writes",
        str(args.writes),
        "--start-at",
        str(start_at),
        *([] if turns else ["--no-turns"]),
    ]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=RUN_TIMEOUT)
        if child.returncode != 0:
            raise RuntimeError(f"a writer exited {child.returncode}")
        results.append(json.loads(out))
    writes = sum(r["writes"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return {
        "rate": writes / seconds,
        "p50": max(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),
        "max": max(r["max"] for r in results),
    }


@contextlib.contextmanager
def _work_directory(parent: Path) -> Iterator[Path]:
    # On the disk given, not /tmp, which may be memory (tmpfs), where fsync costs nothing.
    with tempfile.TemporaryDirectory(prefix="gateway-writers-", dir=parent) as path:
        yield Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=2000, help="durable writes per process")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent writers per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir", type=Path, default=Path("."), help="where the store files go (a real disk)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-turns", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    setups = [(p, t) for p in (1, 2) for t in (True, False)]
    found: dict[tuple[int, bool], list[dict[str, float]]] = {s: [] for s in setups}
    with _work_directory(args.dir) as work:
        for round_ in range(1, args.rounds + 1):
            for processes, turns in setups if round_ % 2 else list(reversed(setups)):
                result = _run_setup(args, work, processes=processes, turns=turns, round_=round_)
                found[(processes, turns)].append(result)
                print(
                    f"  round {round_} {_name(processes, turns):<34} {result['rate']:7.0f}/s",
                    flush=True,
                )
    print()
    print(f"{args.sessions} sessions per process, {args.writes} durable writes per process")
    print(f"{'setup':<34} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for processes, turns in setups:
        rows = found[(processes, turns)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"{_name(processes, turns):<34} {med['rate']:9.0f} {1e3 * med['p50']:7.2f}"
            f" {1e3 * med['p99']:7.2f} {1e3 * med['max']:7.1f}"
        )
    return 0


def _name(processes: int, turns: bool) -> str:
    lock = "writer lock" if turns else "SQLite busy handler"
    return f"{processes} process{'es' if processes > 1 else ''}, {lock}"


if __name__ == "__main__":
    sys.exit(main())
