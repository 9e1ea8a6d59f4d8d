"""The gateway against Postfix smtpd and bare aiosmtpd, side by side in one interleaved run.

    python bench/compare.py [--rounds 3] [--messages 2000] [--quick] [--only PATTERNS]
                            [--gateway-python PYTHON] [--keep]

Three servers on 127.0.0.1, driven by the same asyncio client (bench/_client.py):

* postfix: Debian's package unpacked into the cache (bench/_postfix.py), `master -d` on a
  configuration of its own: the retired address refused at RCPT by relocated_maps, any other
  address at the domain accepted into its durable queue (the DATA rounds) and discarded;
* bare:    aiosmtpd with a handler that only answers (bench/_bare.py);
* gateway: `python -m gateway serve` on the built-in configuration with its office split in a
  `reject-at-rcpt` one and a `reject-after-data` one, sender checks off, loopback trusted.

Each round measures every selected row on each server in turn (A B C, then B C A, ...), and
the report prints the medians and the ratios gateway/Postfix and gateway/bare as a Markdown
table, then the notice drain and the big-outbox rows against their own references. Every load
is bounded in count and time; every process and temporary directory is cleaned up on the way
out, Ctrl-C included. Rows (`--only` takes comma-separated shell patterns of these keys):

    rcpt-{10,50}-{new,reused}       refused at RCPT (MAIL, RCPT 550, RSET)
    data2k-{10,50}-{new,reused}     DATA, 2 KB message
    data100k-{10,50}-{new,reused}   DATA, 100 KB message (a quarter of --messages)
    memory                          RSS of all processes with --connections idle connections
    drain                           notice delivery into smtp-sink vs raw aiosmtplib
    outbox                          SMTP throughput with --outbox-jobs waiting vs empty
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fnmatch
import os
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _postfix  # siblings: the bench directory is not a package
import _servers
from _client import Load, Outcome, idle_connections, run_load
from _servers import DATA_ADDRESS, RCPT_ADDRESS, Running

BENCH = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eservice-bench"
SERVER_NAMES = ("postfix", "bare", "gateway")
RAW_CONNECTIONS = 20


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    sessions: int
    is_reused: bool
    size: int | None  # None: refused at RCPT

    def recipient(self) -> str:
        return RCPT_ADDRESS if self.size is None else DATA_ADDRESS


def smtp_rows() -> list[Row]:
    paths: list[tuple[str, str, int | None]] = [
        ("rcpt", "refused at RCPT", None),
        ("data2k", "DATA, 2 KB", 2048),
        ("data100k", "DATA, 100 KB", 100 * 1024),
    ]
    return [
        Row(f"{key}-{sessions}-{'reused' if reused else 'new'}", label, sessions, reused, size)
        for key, label, size in paths
        for sessions in (10, 50)
        for reused in (False, True)
    ]


OUTBOX_ROW = Row("outbox", "DATA, 2 KB", 10, True, 2048)
EXTRA_KEYS = ("memory", "drain", "outbox")


@dataclass(frozen=True, slots=True)
class Measurement:
    key: str
    server: str
    round: int
    value: float  # tx/s, MiB, notices/s
    cpu_seconds: float
    detail: str = ""
    client_share: float = 0.0  # of one core, while the load ran


# ---------------------------------------------------------------------------------------------
# Arguments


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="transactions per measurement")
    parser.add_argument("--connections", type=int, default=1000, help="idle, for the memory row")
    parser.add_argument("--notices", type=int, default=2000, help="backlog for the drain row")
    parser.add_argument("--outbox-jobs", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="small figures: a smoke run")
    parser.add_argument("--only", default="*", help="comma-separated patterns of row keys")
    parser.add_argument(
        "--gateway-python",
        default=sys.executable,
        help="the Python whose `gateway` package is measured (another checkout's .venv)",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one load may take")
    parser.add_argument("--no-postfix", action="store_true", help="measure the other two only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 1)
        args.messages = min(args.messages, 200)
        args.connections = min(args.connections, 100)
        args.notices = min(args.notices, 100)
        args.outbox_jobs = min(args.outbox_jobs, 10_000)
        args.timeout = min(args.timeout, 60.0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def selected(patterns: str, keys: Sequence[str]) -> list[str]:
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in wanted)]


# ---------------------------------------------------------------------------------------------
# Starting the servers


class Bench:
    """The run's servers and work directory; `close()` stops all and removes it."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.servers: dict[str, Running] = {}
        self.postfix: _postfix.Postfix | None = None
        self.notes: list[str] = []
        # Transactions answered as expected, per server and table: what its store must hold.
        self.answered: dict[tuple[str, str], int] = {}
        self.states: dict[str, Path] = {}  # each gateway's state directory
        self.failures: list[str] = []

    def close(self) -> None:
        for running in reversed(list(self.servers.values())):
            status = running.stop()
            # 143/-15: stopped by our SIGTERM. master exits 1 when it has no group to kill.
            if status not in (0, -signal.SIGTERM, 128 + signal.SIGTERM) and not (
                running.name == "postfix" and status == 1
            ):
                self.failures.append(f"{running.name} exited {status}")
        self.servers.clear()

    def count_answered(self, name: str, row: Row, outcome: Outcome) -> None:
        table = "refusals" if row.size is None else "messages"
        self.answered[name, table] = self.answered.get((name, table), 0) + outcome.completed

    def start(self, name: str, running: Running) -> Running:
        self.servers[name] = running
        return running

    def stop(self, name: str) -> int:
        return self.servers.pop(name).stop()

    # -- the three -------------------------------------------------------------------------

    def fetch_postfix(self) -> _postfix.Postfix | None:
        """The unpacked package, or None (and a note saying why) if it cannot be had."""
        if self.postfix is not None or self.args.no_postfix:
            return self.postfix
        try:
            self.postfix = _postfix.fetch(CACHE)
            _postfix.ensure_accounts()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            self.notes.append(f"Postfix: not available: {exc}")
        return self.postfix

    def start_postfix(self) -> None:
        if self.args.no_postfix:
            self.notes.append("Postfix: left out (--no-postfix)")
            return
        if self.fetch_postfix() is None:
            return
        assert self.postfix is not None
        try:
            home = self.work / "postfix"
            home.mkdir()
            process, port = _postfix.start_postfix(
                self.postfix, home, retired=RCPT_ADDRESS, domain=_servers.DOMAIN
            )
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            self.notes.append(f"Postfix: not measured: {exc}")
            return
        self.start("postfix", Running("postfix", process, port, home / "maillog"))

    def start_bare(self, name: str = "bare") -> Running:
        return self.start(
            name,
            _servers.start_logged(
                name,
                [sys.executable, str(BENCH / "_bare.py"), RCPT_ADDRESS],
                ready_event="bare.listening",
                stdout=self.work / f"{name}.log",
            ),
        )

    def start_gateway(
        self,
        name: str,
        *,
        state: Path,
        is_trusted: bool = True,
        poll: float = 3600.0,
        **extra: str,
    ) -> Running:
        config = self.work / "gateway.toml"
        if not config.exists():
            config.write_text(_servers.gateway_config(_base_config(self.args.gateway_python)))
        env = _servers.gateway_env(state, is_trusted=is_trusted, poll=poll, **extra)
        self.states[name] = state
        argv = [self.args.gateway_python, "-m", "gateway", "serve", "--config", str(config)]
        argv += ["--as-of", _servers.AS_OF]
        return self.start(
            name,
            _servers.start_logged(
                name,
                argv,
                ready_event="gateway.listening",
                stdout=self.work / f"{name}.log",
                env=env,
                cwd=self.work,
            ),
        )


def _base_config(python: str) -> str:
    """The built-in config of the checkout whose Python runs the gateway, else this one's."""
    # Not resolve(): a venv's python is a symlink out of the checkout.
    candidate = Path(python).absolute().parent.parent.parent / "config" / "gateway.toml"
    if not candidate.is_file():
        candidate = BENCH.parent / "config" / "gateway.toml"
    return candidate.read_text()


# ---------------------------------------------------------------------------------------------
# Measuring


def load_for(row: Row, port: int, transactions: int, args: argparse.Namespace) -> Load:
    return Load(
        port=port,
        recipient=row.recipient(),
        transactions=transactions,
        sessions=row.sessions,
        is_reused=row.is_reused,
        size=row.size,
        deadline=args.timeout,
    )


def transactions_for(row: Row, args: argparse.Namespace) -> int:
    # 100 KB messages go at a third of the 2 KB rate or less: a quarter keeps rounds even.
    count: int = args.messages // 4 if (row.size or 0) > 50_000 else args.messages
    return max(count, row.sessions)


def measure_smtp(bench: Bench, row: Row, name: str, round_: int) -> Measurement:
    running = bench.servers[name]
    transactions = transactions_for(row, bench.args)
    before = _servers.tree_usage(running.process.pid).cpu_seconds
    client_before = time.process_time()
    try:
        outcome = asyncio.run(run_load(load_for(row, running.port, transactions, bench.args)))
    except TimeoutError:
        bench.failures.append(f"{row.key} on {name}: past {bench.args.timeout:g} s")
        outcome = Outcome(0, transactions, bench.args.timeout, "timed out")
    cpu = _servers.tree_usage(running.process.pid).cpu_seconds - before
    client = (time.process_time() - client_before) / max(outcome.seconds, 1e-9)
    bench.count_answered(name, row, outcome)
    if outcome.unexpected:
        bench.failures.append(
            f"{row.key} on {name}: {outcome.unexpected} unexpected replies,"
            f" the first: {outcome.first_unexpected}"
        )
    # The client's share of a core: near 1.0, the row measures the client as much as the server.
    detail = f"server cpu {1e6 * cpu / max(outcome.completed, 1):5.0f} µs/tx; client {client:4.0%}"
    return Measurement(row.key, name, round_, outcome.rate, cpu, detail, client)


def measure_memory(bench: Bench, name: str, round_: int) -> list[Measurement]:
    running = bench.servers[name]
    idle = _servers.tree_usage(running.process.pid)

    async def hold() -> tuple[int, _servers.TreeUsage]:
        async with idle_connections(
            running.port, bench.args.connections, deadline=bench.args.timeout
        ) as opened:
            await asyncio.sleep(1.0)  # let every smtpd process reach its EHLO wait
            return opened, _servers.tree_usage(running.process.pid)

    opened, busy = asyncio.run(hold())
    if opened < bench.args.connections:
        bench.failures.append(f"memory on {name}: {opened} of {bench.args.connections} opened")
    # The growth while opening: a Python server first reuses the heap its load left behind,
    # and Postfix's idle smtpd processes from the load take connections, so it is a floor.
    growth = (busy.rss_kib - idle.rss_kib) / 1024
    detail = (
        f"{busy.processes} processes, PSS {busy.pss_kib / 1024:6.1f} MiB;"
        f" RSS {idle.rss_kib / 1024:.1f} MiB before opening ({growth:+.1f} MiB)"
    )
    return [
        Measurement("memory", name, round_, busy.rss_kib / 1024, 0.0, detail),
        Measurement("memory-pss", name, round_, busy.pss_kib / 1024, 0.0),
    ]


def rotated(names: Sequence[str], round_: int) -> list[str]:
    shift = (round_ - 1) % max(len(names), 1)
    return list(names[shift:]) + list(names[:shift])


def report_line(m: Measurement, unit: str) -> None:
    print(
        f"  round {m.round} {m.key:<20} {m.server:<14} {m.value:9.1f} {unit:<10} {m.detail}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# The drain row: the gateway's outbox into smtp-sink, against raw aiosmtplib


class Drain:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.template = bench.work / "drain-template"
        self.sink_port = 0
        self.notices: list[tuple[str, bytes]] = []

    def prepare(self) -> None:
        """A sink, and a stopped gateway's state holding --notices notice jobs to copy."""
        bench = self.bench
        if bench.fetch_postfix() is not None:
            assert bench.postfix is not None
            home = bench.work / "sink"
            home.mkdir()
            process, self.sink_port = _postfix.start_sink(bench.postfix, home)
            bench.start(
                "smtp-sink",
                Running("smtp-sink", process, self.sink_port, home / "smtp-sink.stderr"),
            )
        else:
            bench.notes.append("drain: no smtp-sink (no Postfix package): bare aiosmtpd sinks")
            self.sink_port = bench.start_bare("sink").port
        filler = bench.start_gateway("drain-fill", state=self.template)
        row = Row("fill", "fill", 10, True, 2048)
        load = load_for(row, filler.port, bench.args.notices, bench.args)
        load = dataclasses.replace(load, senders=200)
        outcome = asyncio.run(run_load(load))
        bench.stop("drain-fill")
        queued = _servers.pending_jobs(self.template)
        if outcome.unexpected or queued != bench.args.notices:
            raise RuntimeError(
                f"drain fill: {queued} notice jobs queued for {bench.args.notices} filings"
                f" ({outcome.first_unexpected or 'no unexpected reply'})"
            )

    def gateway(self, round_: int) -> Measurement:
        bench = self.bench
        state = bench.work / f"drain-{round_}"
        shutil.copytree(self.template, state)
        total = _servers.pending_jobs(state)
        running = bench.start_gateway(
            "drain",
            state=state,
            poll=0.2,
            GATEWAY_DELIVERY__MODE="smarthost",
            GATEWAY_DELIVERY__SMARTHOST=f"127.0.0.1:{self.sink_port}",
            GATEWAY_DELIVERY__STARTTLS="opportunistic",
            GATEWAY_DELIVERY__CONCURRENCY=str(RAW_CONNECTIONS),
            GATEWAY_DELIVERY__PER_DOMAIN_CONCURRENCY=str(RAW_CONNECTIONS),
        )
        started = time.monotonic()
        try:
            first, left = _watch_drain(state, total, deadline=started + bench.args.timeout)
            seconds = time.monotonic() - first
            cpu = _servers.tree_usage(running.process.pid).cpu_seconds
        finally:
            bench.stop("drain")
        if left:
            bench.failures.append(f"drain: {left} of {total} notices left after the deadline")
        if not self.notices:
            self.notices = _servers.sent_notices(state, bench.args.notices)
        shutil.rmtree(state, ignore_errors=True)
        sent = total - left
        detail = f"{sent} notices in {seconds:.1f} s; gateway cpu {cpu:.1f} s (start-up included)"
        return Measurement("drain", "gateway", round_, sent / seconds, cpu, detail)

    def raw(self, round_: int) -> Measurement:
        if not self.notices:
            raise RuntimeError("no sent notice to replay: the gateway drained none")
        notices = (self.notices * (self.bench.args.notices // len(self.notices) + 1))[
            : self.bench.args.notices
        ]
        seconds = asyncio.run(
            asyncio.wait_for(_send_raw(self.sink_port, notices), self.bench.args.timeout)
        )
        size = statistics.median(len(data) for _, data in notices)
        detail = f"{len(notices)} pre-rendered notices (~{size / 1024:.1f} KiB) in {seconds:.1f} s"
        return Measurement("drain", "raw aiosmtplib", round_, len(notices) / seconds, 0.0, detail)


def _watch_drain(state: Path, total: int, *, deadline: float) -> tuple[float, int]:
    """(when the first notice left, how many are left at the end): polls the store, which
    another process changes, until empty or `deadline` (time.monotonic())."""
    first = 0.0
    left = total
    while time.monotonic() < deadline:
        left = _servers.pending_jobs(state)
        if not first and left < total:
            first = time.monotonic()
        if left == 0:
            break
        time.sleep(0.05)
    return first or time.monotonic(), left


async def _send_raw(port: int, notices: Sequence[tuple[str, bytes]]) -> float:
    """Send the bytes as they are over RAW_CONNECTIONS reused connections; seconds taken."""
    queue = list(reversed(notices))

    async def connection() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port,
            local_hostname="raw.bench.example",
            timeout=30,
            start_tls=False,
        )
        await client.connect()
        while queue:
            recipient, data = queue.pop()
            await client.sendmail("", [recipient], data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(RAW_CONNECTIONS)))
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# The outbox row: the same SMTP load with 100,000 jobs waiting, and with none


def prepare_outbox(bench: Bench) -> tuple[str, str]:
    """Two gateways: one over an empty store, one whose outbox holds --outbox-jobs deferred
    jobs. Neither trusts loopback, so the load adds no job to either: the sizes stay put."""
    full_state = bench.work / "outbox-full"
    filler = bench.start_gateway("outbox-fill", state=full_state)
    load = load_for(Row("fill", "fill", 2, True, 2048), filler.port, 20, bench.args)
    asyncio.run(run_load(load))
    bench.stop("outbox-fill")
    jobs = _servers.grow_outbox(full_state, bench.args.outbox_jobs)
    empty = "gateway, empty outbox"
    full = f"gateway, {jobs:,} jobs"
    bench.start_gateway(empty, state=bench.work / "outbox-empty", is_trusted=False, poll=1.0)
    bench.start_gateway(full, state=full_state, is_trusted=False, poll=1.0)
    return empty, full


# ---------------------------------------------------------------------------------------------
# Report


CLIENT_BOUND = 0.8  # of a core: past it the figure says as much about the client


def _median(results: Sequence[Measurement], key: str, server: str) -> float | None:
    values = [m.value for m in results if m.key == key and m.server == server]
    return statistics.median(values) if values else None


def _is_client_bound(results: Sequence[Measurement], key: str, server: str) -> bool:
    shares = [m.client_share for m in results if m.key == key and m.server == server]
    return bool(shares) and statistics.median(shares) >= CLIENT_BOUND


def _figure(value: float | None, *, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None, *, is_lower_better: bool = False) -> str:
    if a is None or not b:
        return "n/a"
    return f"{(b / a if is_lower_better else a / b):.2f}"


def report(
    args: argparse.Namespace,
    results: Sequence[Measurement],
    keys: Sequence[str],
    outbox_names: tuple[str, str] | None,
) -> None:
    print()
    print(
        f"`python bench/compare.py {shlex.join(args.argv)}`: {args.rounds} round(s),"
        f" medians; {os.cpu_count()} CPUs shared with other work, so compare only within"
        " this run, as ratios."
    )
    print()
    if any(row.key in keys for row in smtp_rows()) or "memory" in keys:
        _smtp_table(args, results, keys)
    _other_table(args, results, keys, outbox_names)


def _smtp_table(
    args: argparse.Namespace, results: Sequence[Measurement], keys: Sequence[str]
) -> None:
    print(
        "| path | sessions | connections | Postfix | bare aiosmtpd | gateway"
        " | gateway/Postfix | gateway/bare |"
    )
    print("|---|---|---|---|---|---|---|---|")
    bound = False
    for row in smtp_rows():
        if row.key not in keys:
            continue
        p, b, g = (_median(results, row.key, n) for n in SERVER_NAMES)
        marks = ["≥ " if _is_client_bound(results, row.key, n) else "" for n in SERVER_NAMES]
        bound = bound or any(marks)
        connections = "reused" if row.is_reused else "one per transaction"
        print(
            f"| {row.label} | {row.sessions} | {connections} | {marks[0]}{_figure(p)} tx/s"
            f" | {marks[1]}{_figure(b)} | {marks[2]}{_figure(g)} | {_ratio(g, p)}"
            f" | {_ratio(g, b)} |"
        )
    if "memory" in keys:
        for key, what in (("memory", "RSS"), ("memory-pss", "PSS")):
            p, b, g = (_median(results, key, n) for n in SERVER_NAMES)
            print(
                f"| idle, {what} of all processes | {args.connections:,} | open, after EHLO"
                f" | {_figure(p)} MiB | {_figure(b)} | {_figure(g)}"
                f" | {_ratio(g, p)} | {_ratio(g, b)} |"
            )
    if bound:
        print(
            f"\n≥: the client used {CLIENT_BOUND:.0%} of a core or more in that median"
            " (a floor: the server may be faster than the one client can show)."
        )


def _other_table(
    args: argparse.Namespace,
    results: Sequence[Measurement],
    keys: Sequence[str],
    outbox_names: tuple[str, str] | None,
) -> None:
    if "drain" in keys or "outbox" in keys:
        print()
        print("| what | reference | gateway | gateway/reference |")
        print("|---|---|---|---|")
    if "drain" in keys:
        ref, g = _median(results, "drain", "raw aiosmtplib"), _median(results, "drain", "gateway")
        print(
            f"| notice drain into smtp-sink, {args.notices:,} notices"
            f" | raw aiosmtplib, the same bytes, {RAW_CONNECTIONS} reused connections:"
            f" {_figure(ref)} notices/s | {_figure(g)} notices/s | {_ratio(g, ref)} |"
        )
    if "outbox" in keys and outbox_names is not None:
        empty, full = outbox_names
        ref, g = _median(results, "outbox", empty), _median(results, "outbox", full)
        print(
            f"| {OUTBOX_ROW.label}, {OUTBOX_ROW.sessions} sessions reused, {full[9:]} waiting"
            f" | empty outbox: {_figure(ref)} tx/s | {_figure(g)} tx/s | {_ratio(g, ref)} |"
        )


# ---------------------------------------------------------------------------------------------
# The run


def run(bench: Bench, keys: Sequence[str]) -> tuple[list[Measurement], tuple[str, str] | None]:
    args = bench.args
    rows = [r for r in smtp_rows() if r.key in keys]
    if rows or "memory" in keys:
        bench.start_postfix()
        bench.start_bare()
        bench.start_gateway("gateway", state=bench.work / "gateway-state")
    names = [n for n in SERVER_NAMES if n in bench.servers]
    drain = Drain(bench) if "drain" in keys else None
    if drain is not None:
        drain.prepare()
    outbox_names = prepare_outbox(bench) if "outbox" in keys else None
    _print_setup(bench)
    _warm_up(bench, names, rows)
    if outbox_names is not None:
        _warm_up(bench, outbox_names, [OUTBOX_ROW])
    results: list[Measurement] = []
    for round_ in range(1, args.rounds + 1):
        for row in rows:
            for name in rotated(names, round_):
                results.append(measure_smtp(bench, row, name, round_))
                report_line(results[-1], "tx/s")
        if "memory" in keys:
            for name in rotated(names, round_):
                results.extend(measure_memory(bench, name, round_))
                report_line(results[-2], "MiB RSS")
        if outbox_names is not None:
            for name in rotated(outbox_names, round_):
                m = measure_smtp(bench, OUTBOX_ROW, name, round_)
                results.append(m)
                report_line(m, "tx/s")
        if drain is not None:
            # The raw reference replays the notices the gateway sent: the gateway goes first.
            for measure in (drain.gateway, drain.raw):
                results.append(measure(round_))
                report_line(results[-1], "notices/s")
    return results, outbox_names


def _warm_up(bench: Bench, names: Sequence[str], rows: Sequence[Row]) -> None:
    """A few hundred transactions of each kind first: Postfix starts its processes, Python
    fills its caches, the store its pages."""
    kinds = {("rcpt" if r.size is None else "data"): r for r in rows}
    for name in names:
        for row in kinds.values():
            warm = Row("warm-up", "warm-up", 10, True, 2048 if row.size else None)
            count = min(300, bench.args.messages)
            outcome = asyncio.run(
                run_load(load_for(warm, bench.servers[name].port, count, bench.args))
            )
            bench.count_answered(name, warm, outcome)
            if outcome.unexpected:
                raise RuntimeError(f"warm-up on {name}: {outcome.first_unexpected}")


def _print_setup(bench: Bench) -> None:
    ports = ", ".join(f"{n} :{r.port}" for n, r in bench.servers.items())
    print(f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; work {bench.work}; {ports}")
    for note in bench.notes:
        print(f"note: {note}")


def _sanity(bench: Bench) -> None:
    """Every transaction a gateway answered was recorded: its 550 (after DATA, or at RCPT in
    `refusals`) promises the record is durable, so the count is read while it still runs."""
    for (name, table), answered in bench.answered.items():
        state = bench.states.get(name)
        if state is None or not _servers.database(state).exists():
            continue
        rows = _servers.count_rows(state, table)
        print(f"{name}: {rows:,} rows in {table} for {answered:,} transactions answered")
        if rows < answered:
            bench.failures.append(f"{name}: {answered} answered, {rows} rows in {table}")


@contextlib.contextmanager
def _interrupts_as_keyboard() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the same `finally` stops the servers."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {
        # SIGINT too: a shell starting us in the background leaves it ignored.
        signum: signal.signal(signum, raise_interrupt)
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    keys = selected(args.only, [r.key for r in smtp_rows()] + list(EXTRA_KEYS))
    if not keys:
        print(f"--only {args.only!r} selects no row", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="eservice-compare-"))
    # Postfix's daemons drop to the postfix user and must reach their queue under it.
    work.chmod(0o755)
    bench = Bench(args, work)
    results: list[Measurement] = []
    outbox_names: tuple[str, str] | None = None
    try:
        with _interrupts_as_keyboard():
            results, outbox_names = run(bench, keys)
    except KeyboardInterrupt:
        bench.failures.append("interrupted")
    except RuntimeError as exc:
        bench.failures.append(str(exc))
    finally:
        _sanity_safely(bench)
        bench.close()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if results:
        report(args, results, keys, outbox_names)
    for failure in bench.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if bench.failures else 0


def _sanity_safely(bench: Bench) -> None:
    with contextlib.suppress(OSError, sqlite3.Error):
        _sanity(bench)


if __name__ == "__main__":
    sys.exit(main())
