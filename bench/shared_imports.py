"""What three gateway processes cost in memory when each imports on its own, and when two
are forked from a parent that imported for them (with and without gc.freeze()).

    .venv/bin/python bench/shared_imports.py            # ~10 s
    .venv/bin/python bench/shared_imports.py --rounds 3

The figure behind issue 14's "1,000 idle connections under 150 MB for the whole host": a
supervisor and two workers that each start `python -m gateway` import the serving stack
(about 50 MiB of Python objects, anonymous memory) three times; forked processes share
those pages copy-on-write until they write to them. Summed RSS counts a shared page once
per process, so it barely moves; PSS divides shared pages among the processes sharing them,
so it shows what the host really holds. Each child runs a full collection and an event loop
briefly (the writes a worker's start makes to the objects it inherited), then waits to be
measured; every child is killed and reaped before the next setup starts.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

# What a worker process imports before it serves (app.py pulls in the rest of the stack).
STACK = ("gateway.cli", "gateway.app", "gateway.supervisor")
CHILDREN = 2
SETTLE_S = 1.5  # for the children to run their start-up writes
CHILD_LIFE_S = 30.0  # a child left unmeasured ends by itself


def _kib(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _usage(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over `pids`."""
    rss = sum(_kib(f"/proc/{p}/status", "VmRSS") for p in pids)
    pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    return rss / 1024, pss / 1024


def _child_start() -> None:
    """A forked worker's first writes: a full collection and a short event loop."""
    import asyncio

    gc.enable()
    gc.collect()
    asyncio.run(asyncio.sleep(0.1))
    time.sleep(CHILD_LIFE_S)
    os._exit(0)


def _forked(*, freeze: bool) -> tuple[float, float]:
    """This process (already imported) and CHILDREN forked from it."""
    if freeze:
        gc.collect()
        gc.freeze()  # imported objects move out of the collector's reach: no writes to them
    children = []
    for _ in range(CHILDREN):
        pid = os.fork()
        if pid == 0:
            _child_start()
        children.append(pid)
    try:
        time.sleep(SETTLE_S)
        return _usage([os.getpid(), *children])
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if freeze:
            gc.unfreeze()


def _fresh() -> tuple[float, float]:
    """CHILDREN + 1 interpreters that each import the stack, as `python -m gateway` does."""
    code = (
        "import asyncio, gc, sys, time\n"
        f"for m in {STACK!r}: __import__(m)\n"
        "gc.collect(); asyncio.run(asyncio.sleep(0.1))\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        f"time.sleep({CHILD_LIFE_S})\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        for _ in range(CHILDREN + 1)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            process.stdout.readline()  # bounded: the child ends after CHILD_LIFE_S
        return _usage([p.pid for p in processes])
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for module in STACK:
        __import__(module)
    setups = {
        "3 interpreters, each importing": _fresh,
        "1 imported + 2 forked": lambda: _forked(freeze=False),
        "1 imported + 2 forked, gc.freeze()": lambda: _forked(freeze=True),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for round_ in range(1, args.rounds + 1):
        for name, measure in setups.items():
            rss, pss = measure()
            results[name].append((rss, pss))
            print(f"round {round_}  {name:36s} RSS {rss:6.1f} MiB  PSS {pss:6.1f} MiB")
    print("\n| setup (3 processes, idle, no connection) | RSS summed | PSS summed |")
    print("|---|---|---|")
    for name, figures in results.items():
        rss = statistics.median(r for r, _ in figures)
        pss = statistics.median(p for _, p in figures)
        print(f"| {name} | {rss:.0f} MiB | {pss:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
