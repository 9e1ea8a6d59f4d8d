"""The public receipt page with a large store: lookups per second, and what the page under
load costs the SMTP side, side by side with the page idle.

    python bench/receipt.py [--attempts N] [--messages M] [--rounds R] [--workers W]
                            [--rates 50,max] [--seconds S] [--total T] [--baseline CHECKOUT]

1. Builds a store of N attempts (default 1,000,000: 90 % messages refused after DATA, their
   notices withheld for one reason or another; 10 % refusals at RCPT) through the store's own
   interface: `Store.write()` batches of the store package's insert functions, the statements
   every session's record uses, committed durably. It prints how long that took.
2. Starts `gateway serve` on that store (the built-in configuration, `[server] workers = W`,
   `[lookup] listen` on a free port; loopback untrusted, so no notice is composed), and a
   load process that asks /ref/<reference> for references drawn at random from the store
   (one in ten unknown: a 404), from 32 loopback source addresses (each within its rate
   limit, raised to 6,000 a minute for this), at a fixed rate or as fast as it can (`max`).
   `[lookup] total_per_second` is out of the way unless `--total` gives it (`--total 50`,
   the default's, shows what it holds back: the lookups past it get 429).
3. Per rate, in each round: the page alone for S seconds (lookups/s); then M SMTP
   transactions (10 reused sessions, 2 KB to a retired address, refused after DATA) with the
   page idle, again with the page under that load, and idle once more (the idle figure is
   the mean of the two on either side). Rounds interleave; medians print (the change too:
   the median of the rounds' own changes, and the CPU the page's process took meanwhile),
   with the CPU a lookup costs the process serving the page (the supervisor's own, with
   workers: utime and stime of all its threads over the page-alone run, divided by lookups).
4. With `--baseline CHECKOUT`, that checkout's gateway (run by its own `.venv/bin/python`) on
   a copy of the same store joins the same rounds, one after the other, so a change is
   measured against the code before it on the same minutes; a Markdown table of both ends
   the run, with each one's memory (RSS and PSS of its process tree) after the last round.

Every load is bounded in count and in time. The machine is shared: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._client import Load, run_load
from bench._servers import (
    DATA_ADDRESS,
    REPO,
    Running,
    TreeUsage,
    _logged_port,
    gateway_env,
    start_logged,
    tree_usage,
)

BATCH = 20_000
SOURCES = 32  # loopback source addresses of the page's load: 127.0.1.1 ... 127.0.1.32
LOAD_DEADLINE = 300.0
OFFICE = "ice-occ-chicago"  # the built-in configuration's office
SINCE = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
_WITHHELD = ("sender-not-authenticated", "duplicate", "null-sender", "rate-limit-sender")


# -- 1. the store ------------------------------------------------------------------------------


def _records(start: int, count: int) -> tuple[list[object], list[str]]:
    from gateway.mail.evidence import MessageFacts
    from gateway.store.messages import (
        MessageRecord,
        RecipientRecord,
        RefusalRecord,
        new_reference,
    )

    records: list[object] = []
    references: list[str] = []
    for n in range(start, start + count):
        at = SINCE + timedelta(seconds=n * 20)  # a million attempts: some seven months
        reference = new_reference(at)
        references.append(reference)
        sender = f"attorney{n % 5000}@firm{n % 700}.example"
        if n % 10 == 9:
            records.append(
                RefusalRecord(
                    reference=reference,
                    at=at,
                    session_id=f"s{n}",
                    peer_ip="192.0.2.10",
                    helo="mail.firm.example",
                    mail_from=sender,
                    recipient=DATA_ADDRESS,
                    office=OFFICE,
                    phase="retired",
                    reason="address retired; refused at RCPT",
                    reply=f"550 5.1.6 NOT FILED ... (ref {reference})",
                )
            )
            continue
        # No job rows: a queued notice would set the serving gateway composing hundreds of
        # thousands of them while it is measured. What the page reads is the same either way.
        withheld = _WITHHELD[n % len(_WITHHELD)]
        facts = MessageFacts(
            size=2048,
            sha256=f"{n:064x}",
            message_id=f"<m{n}@firm.example>",
            subject=f"Motion to continue {n}",
            date=None,
            from_header=None,
        )
        recipient = RecipientRecord(
            DATA_ADDRESS,
            "retired",
            "reject-after-data",
            "address retired; refused after DATA",
            at,
            office=OFFICE,
            phase="retired",
            local_time=at.isoformat(),
        )
        records.append(
            MessageRecord(
                reference=reference,
                received_at=at,
                session_id=f"s{n}",
                peer_ip="192.0.2.10",
                peer_port=40000 + n % 20000,
                helo="mail.firm.example",
                tls=None,
                mail_from=sender,
                facts=facts,
                recipients=(recipient,),
                outcome="rejected",
                reply=f"550 5.1.6 NOT FILED ... (ref {reference})",
                notice=f"suppressed:{withheld}",
                auth="mx.example; spf=fail smtp.mailfrom=firm.example",
            )
        )
    return records, references


async def build_store(database: Path, attempts: int) -> tuple[list[str], float]:
    """`attempts` records, written in durable batches; returns a sample of references."""
    import sqlite3

    from gateway.store.db import Store
    from gateway.store.messages import MessageRecord, insert_gated, insert_refusal

    def writer(records: list[object]) -> Callable[[sqlite3.Connection], None]:
        def write(conn: sqlite3.Connection) -> None:
            for record in records:
                if isinstance(record, MessageRecord):
                    insert_gated(conn, record, None)
                else:
                    insert_refusal(conn, record)  # type: ignore[arg-type]

        return write

    store = Store(database)
    await store.open()
    sample: list[str] = []
    began = time.perf_counter()
    try:
        for start in range(0, attempts, BATCH):
            records, references = _records(start, min(BATCH, attempts - start))
            await store.write(writer(records))
            sample += random.sample(references, min(len(references), 200))
    finally:
        await store.close()
    return sample, time.perf_counter() - began


# -- 2. the page's load (a process of its own) -------------------------------------------------


async def page_load(
    port: int, references: list[str], *, rate: float, until: Path, seconds: float
) -> dict[str, float]:
    import aiohttp

    statuses: dict[int, int] = {}
    done = 0
    started = time.perf_counter()
    stop_at = started + seconds
    interval = 0.0 if rate <= 0 else SOURCES / rate  # per source

    async def client(index: int) -> None:
        nonlocal done
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.1.{index + 1}", 0), limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            next_at = time.perf_counter()
            while time.perf_counter() < stop_at and not os.path.exists(until):  # noqa: ASYNC240
                ref = random.choice(references)
                if random.random() < 0.1:
                    ref = ref[:-4] + "ZZZZ"
                async with session.get(f"http://127.0.0.1:{port}/ref/{ref}") as got:
                    await got.read()
                    statuses[got.status] = statuses.get(got.status, 0) + 1
                done += 1
                if interval:
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(client(i) for i in range(SOURCES)))
    elapsed = time.perf_counter() - started
    statuses_seen = {str(k): v for k, v in statuses.items()}
    return {"requests": done, "seconds": elapsed, "cpu": time.process_time(), **statuses_seen}


def start_page_load(
    port: int, refs: Path, *, rate: float, until: Path, seconds: float, nice: int = 0
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, __file__, "--page-load", str(port), "--refs", str(refs)]
    argv += ["--rate", str(rate), "--until", str(until), "--seconds", str(seconds)]
    argv += ["--load-nice", str(nice)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)


def finish(process: subprocess.Popen[bytes]) -> dict[str, float]:
    out, _ = process.communicate(timeout=LOAD_DEADLINE)
    result: dict[str, float] = json.loads(out)
    return result


# -- 3. measuring ------------------------------------------------------------------------------


@dataclass
class Round:
    page_alone: float = 0.0  # lookups/s
    smtp_idle: float = 0.0  # msgs/s with the page idle
    smtp_loaded: float = 0.0  # msgs/s with the page under load
    page_during: float = 0.0  # lookups/s while SMTP was loaded
    not_found: float = 0.0  # share of 404s (one in ten asked is unknown)
    other: int = 0  # answers neither 200 nor 404 (429 would mean the limit was hit)
    cpu_us: float = 0.0  # CPU of the page's process (the supervisor's, with workers) per lookup
    page_cores: float = 0.0  # CPU of the page's process during the loaded SMTP run, in cores
    smtp_cores: float = 0.0  # CPU of the rest of the tree (the workers) meanwhile
    load_cores: float = 0.0  # CPU of the page's load generator (its clients) meanwhile

    @property
    def change(self) -> float:
        return self.smtp_loaded / self.smtp_idle - 1


def cpu_s(pid: int) -> float:
    """The CPU time (user and system) of the process `pid` so far, all its threads, without
    its children's: with workers, the supervisor's own, which serves the page."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def smtp(port: int, messages: int) -> float:
    load = Load(port, DATA_ADDRESS, messages, 10, True, 2048, LOAD_DEADLINE)
    outcome = await run_load(load)
    if outcome.unexpected:
        raise RuntimeError(f"{outcome.unexpected} unexpected replies: {outcome.first_unexpected}")
    return outcome.rate


async def one_round(
    gateway: Gateway, refs: Path, run: Path, *, rate: float, args: argparse.Namespace
) -> Round:
    result = Round()
    smtp_port, page_port, pid = gateway.server.port, gateway.page_port, gateway.server.process.pid
    cpu_before = cpu_s(pid)
    alone = start_page_load(
        page_port, refs, rate=rate, until=run / "never", seconds=args.seconds, nice=args.load_nice
    )
    stats = await asyncio.to_thread(finish, alone)
    result.page_alone = stats["requests"] / stats["seconds"]
    result.cpu_us = (cpu_s(pid) - cpu_before) / max(stats["requests"], 1) * 1e6
    result.not_found = stats.get("404", 0) / max(stats["requests"], 1)
    result.other = int(stats["requests"] - stats.get("200", 0) - stats.get("404", 0))
    idle_before = await smtp(smtp_port, args.messages)
    until = run / f"stop-{time.monotonic_ns()}"
    loaded = start_page_load(
        page_port, refs, rate=rate, until=until, seconds=LOAD_DEADLINE, nice=args.load_nice
    )
    await asyncio.sleep(1.0)  # the page's load under way before SMTP starts
    try:
        page_cpu, all_cpu, began = cpu_s(pid), tree_usage(pid).cpu_seconds, time.perf_counter()
        result.smtp_loaded = await smtp(smtp_port, args.messages)
        took = time.perf_counter() - began
        # What the page's process took of the CPU while SMTP was under way (with workers, the
        # supervisor's; the workers' is the rest of the tree), in cores: the machine's other
        # work moves throughput, but less what each side was given.
        result.page_cores = (cpu_s(pid) - page_cpu) / took
        result.smtp_cores = (tree_usage(pid).cpu_seconds - all_cpu) / took - result.page_cores
    finally:
        until.touch()
    stats = await asyncio.to_thread(finish, loaded)
    result.page_during = stats["requests"] / stats["seconds"]
    result.load_cores = stats["cpu"] / stats["seconds"]
    # Idle again after: the loaded run is compared with the idle runs on either side of it,
    # so that a drift of the shared machine's load over the round counts half as much.
    result.smtp_idle = (idle_before + await smtp(smtp_port, args.messages)) / 2
    print(
        f"  {gateway.name} {rate or 'max'}: page alone {result.page_alone:,.0f}/s,"
        f" SMTP idle {idle_before:,.0f} then {result.smtp_idle * 2 - idle_before:,.0f},"
        f" under load {result.smtp_loaded:,.0f} msgs/s ({result.change:+.1%}),"
        f" CPU meanwhile: page's process {result.page_cores:.2f}, rest {result.smtp_cores:.2f},"
        f" page's clients {result.load_cores:.2f},"
        f" load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return result


@dataclass
class Gateway:
    """One gateway measured: this checkout's, or the baseline's on a copy of the store."""

    name: str
    server: Running
    page_port: int
    rounds: dict[str, list[Round]]


def start_gateway(
    name: str, checkout: Path, python: str, state: Path, args: argparse.Namespace
) -> Gateway:
    env = gateway_env(
        state,
        is_trusted=False,
        poll=1.0,
        GATEWAY_SERVER__WORKERS=str(args.workers),
        GATEWAY_LOOKUP__LISTEN="127.0.0.1:0",
        GATEWAY_LOOKUP__PER_MINUTE="6000",
        GATEWAY_LOOKUP__BURST="1000",
        GATEWAY_LOOKUP__TOTAL_PER_SECOND=str(args.total),
    )
    log = state.parent / f"{name}.log"
    argv = [python, "-m", "gateway", "serve", "--as-of", "2026-12-01T10:00:00-06:00"]
    server = start_logged(
        name, argv, ready_event="gateway.listening", stdout=log, env=env, cwd=checkout
    )
    return Gateway(name, server, _logged_port(log, "gateway.lookup.listening"), {})


def _checkout(path: Path) -> tuple[Path, str]:
    checkout = path.resolve()
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"--baseline {checkout}: no {python}; make its venv first")
    return checkout, str(python)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-receipt-") as tmp:
        run = Path(tmp)
        state = run / "state"
        state.mkdir()
        sample, took = await build_store(state / "gateway.sqlite3", args.attempts)
        print(
            f"store: {args.attempts:,} attempts written in {took:.1f} s"
            f" ({args.attempts / took:,.0f}/s)"
        )
        refs = run / "refs.json"
        refs.write_text(json.dumps(sample))
        wanted = [("gateway", REPO, sys.executable, state)]
        if args.baseline is not None:
            # Its own copy of the store: the same million attempts, and its own writes.
            copy = run / "baseline-state"
            copy.mkdir()
            shutil.copy2(state / "gateway.sqlite3", copy / "gateway.sqlite3")
            wanted.append(("baseline", *_checkout(args.baseline), copy))
        gateways: list[Gateway] = []
        try:
            for name, checkout, python, where in wanted:
                gateways.append(start_gateway(name, checkout, python, where, args))
            for gateway in gateways:
                await smtp(gateway.server.port, min(300, args.messages))  # warm-up
            for rate_text in args.rates.split(","):
                rate = 0.0 if rate_text == "max" else float(rate_text)
                for _ in range(args.rounds):
                    for gateway in gateways:  # interleaved: the same minutes for each
                        measured = await one_round(gateway, refs, run, rate=rate, args=args)
                        gateway.rounds.setdefault(rate_text, []).append(measured)
                for gateway in gateways:
                    report(gateway.name, rate_text, gateway.rounds[rate_text], args)
            memory = {g.name: tree_usage(g.server.process.pid) for g in gateways}
        finally:
            for gateway in gateways:
                gateway.server.stop()
        table(gateways, memory, args)


def _median(rounds: list[Round], name: str) -> float:
    return statistics.median(getattr(r, name) for r in rounds)


def report(name: str, rate: str, rounds: list[Round], args: argparse.Namespace) -> None:
    idle, loaded = _median(rounds, "smtp_idle"), _median(rounds, "smtp_loaded")
    print(
        f"\n{name}: page load {rate} lookups/s (asked), workers = {args.workers},"
        f" total_per_second = {args.total}, the page's clients at nice {args.load_nice},"
        f" {args.attempts:,} attempts in the store, medians of {len(rounds)} rounds:"
    )
    other = sum(r.other for r in rounds)
    print(
        f"  receipt page alone        {_median(rounds, 'page_alone'):8,.0f} lookups/s"
        f"  ({_median(rounds, 'not_found'):.0%} 404, {other} neither 200 nor 404),"
        f" {_median(rounds, 'cpu_us'):,.0f} µs CPU a lookup"
    )
    print(
        f"  receipt page during SMTP  {_median(rounds, 'page_during'):8,.0f} lookups/s,"
        f" its process taking {_median(rounds, 'page_cores'):.2f} cores"
        f" (the rest of the tree {_median(rounds, 'smtp_cores'):.2f})"
    )
    print(f"  SMTP, page idle           {idle:8,.0f} msgs/s", flush=True)
    print(f"  SMTP, page under load     {loaded:8,.0f} msgs/s   ({_median(rounds, 'change'):+.1%})")


def table(gateways: list[Gateway], memory: dict[str, TreeUsage], args: argparse.Namespace) -> None:
    """Every gateway's medians as one Markdown table, then each one's memory at the end."""
    print(
        "\n| gateway | `workers` | page load | page alone | CPU a lookup | page during SMTP"
        " | its CPU meanwhile | SMTP, page idle | SMTP, page under load | change |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for rate in args.rates.split(","):
        for g in gateways:
            rounds = g.rounds[rate]
            idle, loaded = _median(rounds, "smtp_idle"), _median(rounds, "smtp_loaded")
            print(
                f"| {g.name} | {args.workers} | {rate} | {_median(rounds, 'page_alone'):,.0f}/s"
                f" | {_median(rounds, 'cpu_us'):,.0f} µs"
                f" | {_median(rounds, 'page_during'):,.0f}/s"
                f" | {_median(rounds, 'page_cores'):.2f} cores | {idle:,.0f} msgs/s"
                f" | {loaded:,.0f} msgs/s | {_median(rounds, 'change'):+.1%} |"
            )
    for name, usage in memory.items():
        print(
            f"{name}: {usage.processes} processes, RSS {usage.rss_kib / 1024:.0f} MiB,"
            f" PSS {usage.pss_kib / 1024:.0f} MiB at the end"
        )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument(
        "--messages", type=int, default=2000, help="SMTP transactions per measurement"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rates", default="50,max", help="page loads: lookups/s, or max")
    parser.add_argument(
        "--total",
        type=int,
        default=100_000,
        help="[lookup] total_per_second (default: out of the way; the gateway's own is 50)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="the page alone, per round")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (its .venv/bin/python) measured in the same interleaved rounds",
    )
    parser.add_argument(
        "--load-nice",
        type=int,
        default=0,
        help="run the page's clients at this nice: clients elsewhere, not on the SMTP side's CPU",
    )
    # The page's load process (started by the benchmark itself).
    parser.add_argument("--page-load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--refs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--until", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.page_load:
        # Niced, the page's clients stand for machines elsewhere, off the SMTP side's CPU.
        os.nice(arguments.load_nice)
        references = json.loads(arguments.refs.read_text())
        stats = asyncio.run(
            page_load(
                arguments.page_load,
                references,
                rate=arguments.rate,
                until=arguments.until,
                seconds=arguments.seconds,
            )
        )
        print(json.dumps(stats))
    else:
        asyncio.run(main(arguments))
