"""Does the SMTP side stay responsive while the delivery worker drains a backlog of notices?

Fills the outbox with N notice jobs while the worker sleeps, restarts the gateway so that
the worker drains them to a bare aiosmtpd listener (as smarthost), and meanwhile times full
SMTP transactions against the gateway. The same probe then runs on the idle gateway. Prints
latency percentiles for both and the drain rate. Loopback only; every loop is bounded.

    python bench/backlog.py [--notices 3000] [--probes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from receive import Server, start_server  # a sibling script

RETIRED = "occ-chicago-filings@occ-chicago.example"
AS_OF = "2017-09-13T10:00:00-05:00"
FILL_SESSIONS = 10


def message(n: int, sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {RETIRED}\r\nSubject: Motion {n}\r\n"
        f"Message-ID: <{n}.backlog@bench.example>\r\n\r\n" + "Please file the attached.\r\n" * 60
    ).encode()


async def fill(port: int, count: int) -> None:
    """Send `count` filings from distinct senders (so no limit holds them back)."""

    async def session(worker: int) -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port,
            local_hostname="fill.bench",
            timeout=30,
            start_tls=False,
        )
        await client.connect()
        for n in range(worker, count, FILL_SESSIONS):
            sender = f"lawyer{n}@firm{n % 200}.example"
            try:
                await client.sendmail(sender, [RETIRED], message(n, sender))
            except aiosmtplib.SMTPDataError as exc:
                if exc.code != 550:  # refused after DATA, the notice queued, is what we want
                    raise
        await client.quit()

    async with asyncio.timeout(600):
        await asyncio.gather(*(session(w) for w in range(FILL_SESSIONS)))


async def probe(port: int, count: int, *, until: Callable[[], bool]) -> list[float]:
    """Time up to `count` whole transactions (connect .. QUIT), one after another, until
    `until()` says stop. The null sender: the probes themselves queue no notice."""
    timings: list[float] = []
    for n in range(count):
        if until():
            break
        started = time.perf_counter()
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port,
            local_hostname="probe.bench",
            timeout=30,
            start_tls=False,
        )
        async with asyncio.timeout(30):
            await client.connect()
            with contextlib.suppress(aiosmtplib.SMTPDataError):  # the 550 is what is timed
                await client.sendmail("", [RETIRED], message(10**6 + n, "probe@probe.example"))
            await client.quit()
        timings.append(time.perf_counter() - started)
    return timings


def queued(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'in-flight', 'deferred')"
            ).fetchone()[0]
        )


def gateway(work: Path, sink_port: int, *, poll: float, name: str, composers: int) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_SERVER__LISTEN": "127.0.0.1:0",
            "GATEWAY_STORAGE__STATE_DIR": str(work / "state"),
            "GATEWAY_METRICS__LISTEN": "",
            "GATEWAY_SENDER_AUTH__ENABLED": "false",  # loopback is trusted: notices go out
            "GATEWAY_DELIVERY__MODE": "smarthost",
            "GATEWAY_DELIVERY__SMARTHOST": f"127.0.0.1:{sink_port}",
            "GATEWAY_DELIVERY__STARTTLS": "opportunistic",
            "GATEWAY_DELIVERY__CONCURRENCY": "20",
            "GATEWAY_DELIVERY__PER_DOMAIN_CONCURRENCY": "5",
            "GATEWAY_DELIVERY__POLL_INTERVAL": str(poll),
            "GATEWAY_DELIVERY__COMPOSER_PROCESSES": str(composers),
            "GATEWAY_METRICS__STALL_AFTER": str(max(30.0, 3 * poll)),
            "GATEWAY_LIMITS__NOTICES_TOTAL": "1000000",
            "GATEWAY_LIMITS__NOTICES_PER_CLIENT": "1000000",
            "GATEWAY_AUDIT__FORMAT": "json",
        }
    )
    argv = [sys.executable, "-m", "gateway", "serve", "--as-of", AS_OF]
    return start_server(
        name,
        argv,
        ready_event="gateway.listening",
        log_path=work / f"{name}.log",
        env=env,
        cwd=work,
    )


async def wait_for(condition: Callable[[], bool], *, within: float) -> None:
    """Poll `condition`: another process changes it, so there is nothing else to await."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


def percentiles(timings: Sequence[float]) -> str:
    ms = sorted(t * 1000 for t in timings)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    p50 = statistics.median(ms)
    return f"n={len(ms):4d}  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {ms[-1]:6.1f} ms"


async def run(args: argparse.Namespace, work: Path) -> int:
    sink = start_server(
        "sink",
        [sys.executable, str(Path(__file__).parent / "receive.py"), "--bare-server"],
        ready_event="bare.listening",
        log_path=work / "sink.log",
    )
    try:
        # 1. Fill the outbox while the worker looks at the queue only once an hour.
        filler = gateway(work, sink.port, poll=3600.0, name="fill", composers=0)
        await fill(filler.port, args.notices)
        filler.stop()
        database = work / "state" / "gateway.sqlite3"
        backlog = queued(database)
        # 2. Restart: the worker starts draining at once; probe while it does.
        draining = gateway(
            work, sink.port, poll=1.0, name="drain", composers=args.composer_processes
        )
        started = time.monotonic()
        await wait_for(lambda: queued(database) < backlog, within=120)  # composer started
        deadline = time.monotonic() + 600
        busy = await probe(
            draining.port,
            args.probes * 100,
            until=lambda: queued(database) == 0 or time.monotonic() > deadline,
        )
        drained = time.monotonic() - started
        # 3. The same probe on the idle gateway.
        idle = await probe(draining.port, args.probes, until=lambda: time.monotonic() > deadline)
        draining.stop()
    finally:
        sink.stop()
    print(
        f"backlog: {backlog} notice jobs, drained in {drained:.1f} s ({backlog / drained:.0f}/s)"
        " while the busy probe ran"
    )
    print(f"SMTP transaction latency while draining: {percentiles(busy)}")
    print(f"SMTP transaction latency when idle:      {percentiles(idle)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=3000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument(
        "--composer-processes",
        type=int,
        default=1,
        help="[delivery] composer_processes for the draining gateway (0: a thread)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-backlog-") as work:
        return asyncio.run(run(args, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
