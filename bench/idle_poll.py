"""What the delivery worker's look for operator actions costs at each poll.

Two ways side by side, in interleaved rounds on one store file (`synchronous=FULL`, WAL),
on an idle store and on a busy one (sessions' commits: four tasks committing health-check
writes through the writer, each an fsync, as long as the looks run):

- `read probe`: `take_operator_actions` as it is now, a read-only look at the journal's
  unlogged rows (nothing found, so nothing else);
- `empty write`: an empty transaction through the store's writer thread, what the look cost
  before (BEGIN IMMEDIATE, nothing changed, COMMIT): the write lock taken at every poll.

It prints the median and 95th percentile of each, per look and per scenario, and their
ratio; on the busy store it also counts the commits made meanwhile. Figures are
noisy on a shared machine: compare the two columns of one run, not runs with each other.

    python bench/idle_poll.py [--looks 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.store.db import Store
from gateway.store.queueactions import take_operator_actions


async def timed(look: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Microseconds taken by each of `count` looks."""
    taken = []
    for _ in range(count):
        start = time.perf_counter()
        await look()
        taken.append((time.perf_counter() - start) * 1e6)
    return taken


async def commit_until(store: Store, stop: asyncio.Event, done: list[int]) -> None:
    """Commit one small write after another until `stop`, as sessions' records would."""
    while not stop.is_set():
        await store.ping(datetime.now(UTC))
        done[0] += 1


async def scenario(store: Store, *, looks: int, rounds: int, writers: int) -> None:
    now = datetime.now(UTC)
    ways: dict[str, Callable[[], Awaitable[object]]] = {
        "read probe": lambda: take_operator_actions(store, now),
        "empty write": lambda: store.write(lambda _conn: None),
    }
    samples: dict[str, list[float]] = {name: [] for name in ways}
    stop, commits = asyncio.Event(), [0]
    background = [asyncio.create_task(commit_until(store, stop, commits)) for _ in range(writers)]
    try:
        async with asyncio.timeout(600):  # bounded whatever the machine's load
            for _ in range(rounds):
                for name, look in ways.items():
                    samples[name] += await timed(look, looks)
    finally:
        stop.set()
        await asyncio.gather(*background)
    label = "idle store" if not writers else f"busy store ({writers} writers)"
    print(f"{label}: {looks} looks x {rounds} rounds, interleaved; microseconds per look")
    medians = {}
    for name, taken in samples.items():
        medians[name] = statistics.median(taken)
        p95 = statistics.quantiles(taken, n=20)[-1]
        print(f"  {name:<12} median {medians[name]:9.1f}   p95 {p95:9.1f}")
    ratio = medians["read probe"] / medians["empty write"]
    print(f"  read probe / empty write (median): {ratio:.2f}")
    if writers:
        print(f"  commits by the writers meanwhile: {commits[0]}")


async def run(looks: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "gateway.sqlite3")
        await store.open()
        try:
            await scenario(store, looks=looks, rounds=rounds, writers=0)
            await scenario(store, looks=max(1, looks // 10), rounds=rounds, writers=4)
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--looks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.looks, args.rounds))


if __name__ == "__main__":
    main()
