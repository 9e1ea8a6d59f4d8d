"""The whole DATA path over SMTP with each store, and two nodes on one PostgreSQL against one
node (issue 12), side by side in one interleaved run.

    python bench/nodes.py [--rounds 3] [--messages 2000] [--sessions 10,50] [--size 2048]
                          [--seconds 180]

Four `gateway serve` processes on 127.0.0.1, on the built-in configuration split as
bench/compare.py splits it (the filing address refused after DATA, its notice queued but not
sent: the worker polls once an hour), sender checks off, loopback trusted:

  sqlite      one node, `[server] workers = 2`, its SQLite file
  postgres    one node, `workers = 2`, a database of a PostgreSQL server from tests/postgres.py
              (127.0.0.1, fsync on, synchronous_commit on), on the same 2 cores
  postgres x2 two nodes (`mx1`, `mx2`), `workers = 1` each, so the host runs as many serving
              processes as the one-node rows; one database; the sessions split between them

Every transaction is MAIL, RCPT, DATA and a 2 KB message answered `550 5.1.6 NOT FILED` once
its record is committed. msgs/s is transactions over wall time; p50/p99 are one
transaction's, from MAIL to the reply after the message. Each round runs every row on every
configuration in turn, the order rotating; the medians print. At the end the script counts
each store's messages and fails unless every transaction answered has its record. Every load
is bounded in count and in time; the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import _servers  # noqa: E402  (siblings: the bench directory is not a package)
import psycopg  # noqa: E402
from _client import Load, Outcome, run_load  # noqa: E402
from _servers import DATA_ADDRESS, REPO, Running  # noqa: E402

from tests.postgres import SUPERUSER, PostgresServer, running_postgres  # noqa: E402

CONFIGS = ("sqlite", "postgres", "postgres x2")


@dataclass(frozen=True, slots=True)
class Node:
    running: Running
    state: Path  # its state directory
    database: str  # "" for the SQLite node


@dataclass(frozen=True, slots=True)
class Result:
    config: str
    sessions: int
    outcome: Outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-nodes-") as work,
        running_postgres(databases=("one_node", "two_nodes")) as server,
        _nodes(Path(work), server) as nodes,
    ):
        results = asyncio.run(_rounds(args, nodes))
        answered = _answered(results)
        counted = _records(nodes, server)
    print(_report(args, results))
    missing = {config: answered[config] - counted[config] for config in CONFIGS}
    if any(missing.values()):
        print(f"FAILED: answered without a record: {missing}", file=sys.stderr)
        return 1
    print(f"\nEvery answered transaction has its record: {counted}")
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="transactions per row")
    parser.add_argument("--sessions", default="10,50", help="comma-separated session counts")
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes")
    parser.add_argument("--seconds", type=float, default=180.0, help="bound on each row")
    args = parser.parse_args(argv)
    args.sessions = [int(n) for n in args.sessions.split(",")]
    if args.rounds < 1 or args.messages < 2 or min(args.sessions) < 2:
        parser.error("--rounds >= 1, --messages >= 2 and --sessions >= 2 (two nodes split them)")
    return args


# -- the servers -------------------------------------------------------------------------------


@contextlib.contextmanager
def _nodes(work: Path, server: PostgresServer) -> Iterator[dict[str, list[Node]]]:
    config = work / "gateway.toml"
    config.write_text(_servers.gateway_config((REPO / "config" / "gateway.toml").read_text()))
    started: list[Running] = []

    def start(name: str, *, workers: int, database: str = "") -> Node:
        extra = {"GATEWAY_SERVER__WORKERS": str(workers), "GATEWAY_SERVER__NODE": name}
        if database:
            extra["GATEWAY_STORAGE__URL"] = _url(server, database)
            extra["GATEWAY_STORAGE__PASSWORD"] = server.password
        state = work / name
        env = _servers.gateway_env(state, is_trusted=True, poll=3600.0, **extra)
        argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
        running = _servers.start_logged(
            name,
            [*argv, "--as-of", _servers.AS_OF],
            ready_event="gateway.listening",
            stdout=work / f"{name}.log",
            env=env,
            cwd=work,
        )
        started.append(running)
        return Node(running, state, database)

    try:
        yield {
            "sqlite": [start("sqlite", workers=2)],
            "postgres": [start("pg", workers=2, database="one_node")],
            "postgres x2": [
                start("mx1", workers=1, database="two_nodes"),
                start("mx2", workers=1, database="two_nodes"),
            ],
        }
    finally:
        for running in reversed(started):
            running.stop()


def _url(server: PostgresServer, database: str) -> str:
    # The password goes in the environment, as an operator's does, never in the URL.
    return f"postgresql://{SUPERUSER}@127.0.0.1:{server.port}/{database}"


# -- the load ----------------------------------------------------------------------------------


async def _rounds(args: argparse.Namespace, nodes: dict[str, list[Node]]) -> list[Result]:
    results: list[Result] = []
    for round_ in range(args.rounds):
        order = CONFIGS[round_ % len(CONFIGS) :] + CONFIGS[: round_ % len(CONFIGS)]
        for sessions in args.sessions:
            for config in order:
                outcome = await _drive(nodes[config], args, sessions)
                if outcome.unexpected:
                    raise SystemExit(
                        f"{config}, {sessions} sessions: {outcome.unexpected} unexpected"
                        f" replies, the first: {outcome.first_unexpected}"
                    )
                results.append(Result(config, sessions, outcome))
                print(
                    f"round {round_ + 1} {config:<11} {sessions:>3} sessions:"
                    f" {outcome.rate:7.0f} msgs/s",
                    file=sys.stderr,
                )
    return results


async def _drive(nodes: Sequence[Node], args: argparse.Namespace, sessions: int) -> Outcome:
    """The row's load, split evenly between the configuration's nodes, sent at once."""
    share = len(nodes)
    loads = [
        Load(
            port=node.running.port,
            recipient=DATA_ADDRESS,
            transactions=args.messages // share,
            sessions=sessions // share,
            is_reused=True,
            size=args.size,
            deadline=args.seconds,
        )
        for node in nodes
    ]
    outcomes = await asyncio.gather(*(run_load(load) for load in loads))
    return Outcome(
        completed=sum(o.completed for o in outcomes),
        unexpected=sum(o.unexpected for o in outcomes),
        seconds=max(o.seconds for o in outcomes),
        first_unexpected=next((o.first_unexpected for o in outcomes if o.unexpected), ""),
        latencies=tuple(t for o in outcomes for t in o.latencies),
    )


# -- the records and the report ---------------------------------------------------------------


def _answered(results: Sequence[Result]) -> dict[str, int]:
    return {c: sum(r.outcome.completed for r in results if r.config == c) for c in CONFIGS}


def _records(nodes: dict[str, list[Node]], server: PostgresServer) -> dict[str, int]:
    counted = {"sqlite": _servers.count_rows(nodes["sqlite"][0].state, "messages")}
    for config in ("postgres", "postgres x2"):
        database = nodes[config][0].database
        with psycopg.connect(server.dsn_for(database), connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM messages").fetchone()
        counted[config] = int(row[0]) if row else 0
    return counted


def _report(args: argparse.Namespace, results: Sequence[Result]) -> str:
    lines = [
        f"DATA path over SMTP, {args.size} B messages refused after DATA, reused sessions;"
        f" medians of {args.rounds} rounds of {args.messages} transactions",
        "",
        "| store | sessions | msgs/s | p50 ms | p99 ms | msgs/s vs sqlite |",
        "|---|---|---|---|---|---|",
    ]
    for sessions in args.sessions:
        rates = {c: _median_rate(results, c, sessions) for c in CONFIGS}
        for config in CONFIGS:
            p50, p99 = _percentiles(results, config, sessions)
            lines.append(
                f"| {config} | {sessions} | {rates[config]:,.0f} | {p50:.1f} | {p99:.1f}"
                f" | {rates[config] / rates['sqlite']:.2f} |"
            )
    return "\n".join(lines)


def _median_rate(results: Sequence[Result], config: str, sessions: int) -> float:
    return statistics.median(
        r.outcome.rate for r in results if r.config == config and r.sessions == sessions
    )


def _percentiles(results: Sequence[Result], config: str, sessions: int) -> tuple[float, float]:
    """p50 and p99 in ms over every round's transactions of the row."""
    times = sorted(
        t
        for r in results
        if r.config == config and r.sessions == sessions
        for t in r.outcome.latencies
    )
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


if __name__ == "__main__":
    sys.exit(main())
