"""The DATA path's record with each store backend, side by side (issue 12).

    python bench/store_backends.py [--rounds R] [--messages N] [--sessions 1,10,50] [--seconds S]

Each of N concurrent sessions records distinct filings the way the gateway's DATA path does:
`record_message(record, check)` with a real NoticeCheck, so the dedup entry, the four hourly
counters (the `total` row every notice shares included) and the notice job are all written,
and the call returns once the record is durable. Backends, in interleaved rounds (the order
rotates every round):

  sqlite        gateway.store.db.Store: the writer thread, group commit, synchronous=FULL
  postgres      gateway.store.postgres.store.PgStore: one pipelined transaction a message,
                the gate last; a fresh database of a PostgreSQL server from tests/postgres.py
                (127.0.0.1, fsync=on, synchronous_commit=on), on the same cores
  postgres x2   two PgStores ("two nodes", each its own pool) on one database, the sessions
                split between them

msgs/s is messages over wall time; p50/p99 are one record_message's latency. Every run is
bounded by its message count and by --seconds (a run that hits the bound says so); the script
fails if a filing did not get its notice. The machine is shared and noisy (bench/README.md):
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.mail.evidence import MessageFacts  # noqa: E402
from gateway.policy.answer import AnswerGroup, AnswerKind, Reply, ReplyKind  # noqa: E402
from gateway.policy.decision import NoticeScope  # noqa: E402
from gateway.policy.verdict import Job, NoticeGate, Verdict  # noqa: E402
from gateway.store.db import Store  # noqa: E402
from gateway.store.messages import (  # noqa: E402
    MessageRecord,
    NoticeCheck,
    RecipientRecord,
)
from gateway.store.postgres.store import PgStore  # noqa: E402
from gateway.vocabulary import JobKind, NoticeStatus, NoticeStatusKind, Outcome  # noqa: E402
from tests.postgres import PostgresServer, running_postgres  # noqa: E402

OFFICE = "occ-chicago"
RETIRED = (
    "occ-chicago-filings@occ-chicago.example",
    "occ-chicago-service@occ-chicago.example",
    "occ-chicago-clerk@occ-chicago.example",
)
NEVER = 10**9  # hourly limits no run reaches: the common path is measured


def filing(number: int, run: str) -> tuple[MessageRecord, NoticeCheck]:
    """Filing `number` of a run: 997 senders in 89 domains from 250 clients, all distinct."""
    at = datetime.now(UTC)
    domain = f"firm{number % 89}.example"
    sender = f"attorney{number % 997}@{domain}"
    client = f"192.0.2.{number % 250}"
    reference = f"{run}-{number:08d}"
    message_id = f"<{run}.{number}@{domain}>"
    gate = NoticeGate(
        dedup_key=f"{sender}\n{message_id}",
        dedup_since=at - timedelta(days=1),
        hour=f"{at:%Y-%m-%dT%H}",
        counters={
            NoticeScope.SENDER: sender,
            NoticeScope.DOMAIN: domain,
            NoticeScope.CLIENT: client,
            NoticeScope.TOTAL: "*",
        },
        limits=dict.fromkeys(NoticeScope, NEVER),
    )
    verdict = Verdict(
        decisions=(),
        group=AnswerGroup(AnswerKind.RETIRED, OFFICE),
        reply=Reply(ReplyKind.RETIRED, OFFICE),
        outcome=Outcome.REJECTED,
        notice=NoticeStatus(NoticeStatusKind.QUEUED),
        jobs=(Job(JobKind.NOTICE, "", (sender,), OFFICE),),
        is_sender_authenticated=True,
        gate=gate,
    )
    reply = f"550 5.1.6 NOT FILED: this address was retired on 2017-09-12 (ref {reference})"
    facts = MessageFacts(
        size=2048, sha256="ab" * 32, message_id=message_id,
        subject="Motion to continue A123456789", date="Thu, 3 Dec 2026", from_header=sender,
        a_numbers=("A123456789",),
    )  # fmt: skip
    record = MessageRecord(
        reference=reference, received_at=at, session_id="s-" + reference, peer_ip=client,
        peer_port=40000, helo="mail." + domain, tls="TLSv1.3", mail_from=sender, facts=facts,
        recipients=tuple(
            RecipientRecord(r, "retired", "reject-after-data", "retired", at, OFFICE, "retired")
            for r in RETIRED
        ),
        outcome="rejected", reply=reply, notice="queued", auth="dkim=pass",
        sender_authenticated=True,
    )  # fmt: skip
    return record, NoticeCheck(verdict, dict.fromkeys(verdict.possible_replies(), reply))


@dataclass(frozen=True, slots=True)
class Run:
    backend: str
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


AnyStore = Store | PgStore


class Backend:
    """Opens the stores of one run (fresh: an empty file or database) and closes them."""

    def __init__(self, name: str, server: PostgresServer | None, *, nodes: int = 1) -> None:
        self.name = name
        self.server = server
        self.nodes = nodes
        self.dir = tempfile.TemporaryDirectory(prefix="store-backends-")
        self.runs = itertools.count(1)

    async def open(self, sessions: int) -> list[AnyStore]:
        run = next(self.runs)
        stores: list[AnyStore]
        if self.server is None:
            stores = [Store(Path(self.dir.name) / f"run{run}.sqlite3")]
        else:
            name = f"bench_{self.name.replace(' ', '')}_{run}"
            dsn = await asyncio.to_thread(self.server.create_database, name)
            per_node = max(1, -(-sessions // self.nodes))
            stores = [
                PgStore(dsn, node=f"mx{n + 1}", max_connections=per_node, wait_s=30)
                for n in range(self.nodes)
            ]
        for store in stores:
            await store.open()
        return stores


async def measure(
    backend: Backend, *, sessions: int, messages: int, seconds: float, run: str
) -> Run:
    """`messages` filings over `sessions` concurrent sessions, within `seconds`."""
    stores = await backend.open(sessions)
    latencies: list[float] = []
    numbers = iter(range(messages))
    deadline = time.monotonic() + seconds

    async def session(store: AnyStore) -> None:
        for number in numbers:
            if time.monotonic() > deadline:
                return
            record, check = filing(number, run)
            began = time.perf_counter()
            stored = await store.record_message(record, check)
            latencies.append(time.perf_counter() - began)
            if stored.notice != "queued":
                raise RuntimeError(f"{record.reference}: notice {stored.notice}, not queued")

    try:
        began = time.perf_counter()
        async with asyncio.timeout(seconds + 30):
            await asyncio.gather(*(session(stores[n % len(stores)]) for n in range(sessions)))
        elapsed = time.perf_counter() - began
    finally:
        for store in stores:
            await store.close()
    done = len(latencies)
    return Run(backend.name, sessions, done, elapsed, latencies, done < messages)


async def rounds(server: PostgresServer, args: argparse.Namespace) -> list[Run]:
    backends = [
        Backend("sqlite", None),
        Backend("postgres", server),
        Backend("postgres x2", server, nodes=2),
    ]
    runs: list[Run] = []
    for round_no, sessions in itertools.product(range(args.rounds), args.sessions):
        shift = (round_no + sessions) % len(backends)
        for backend in backends[shift:] + backends[:shift]:
            result = await measure(
                backend,
                sessions=sessions,
                messages=args.messages,
                seconds=args.seconds,
                run=f"r{round_no}s{sessions}",
            )
            runs.append(result)
            cut = " (time bound hit)" if result.is_cut_short else ""
            print(
                f"round {round_no + 1} sessions {sessions:>2} {result.backend:<12}"
                f" {result.rate:7.0f} msgs/s  p50 {result.quantile(0.5):7.2f} ms"
                f"  p99 {result.quantile(0.99):7.2f} ms{cut}",
                flush=True,
            )
    return runs


def summary(runs: list[Run], sessions: Sequence[int]) -> None:
    """Medians over the rounds, as a Markdown table; msgs/s also as a ratio to sqlite's."""
    names = list(dict.fromkeys(r.backend for r in runs))
    print("\n| sessions | " + " | ".join(f"`{n}`" for n in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for n in sessions:
        cells = []
        same = [r for r in runs if r.sessions == n]
        base = statistics.median(r.rate for r in same if r.backend == "sqlite")
        for name in names:
            mine = [r for r in same if r.backend == name]
            rate = statistics.median(r.rate for r in mine)
            p50 = statistics.median(r.quantile(0.5) for r in mine)
            p99 = statistics.median(r.quantile(0.99) for r in mine)
            ratio = "" if name == "sqlite" else f" x{rate / base:.2f}"
            cells.append(f"{rate:,.0f} ({p50:.1f} / {p99:.0f}){ratio}")
        print(f"| {n} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument(
        "--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="bound on each run")
    args = parser.parse_args()
    with running_postgres() as server:
        print(f"PostgreSQL on 127.0.0.1:{server.port}; {args.messages} messages a run", flush=True)
        runs = asyncio.run(rounds(server, args))
    summary(runs, args.sessions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
