"""The operator console with a large store: the attempts page, first and deep, with and
without filters, by keyset: requests/s and p50/p99 latency.

    python bench/console.py [--attempts N] [--requests R] [--clients C] [--seconds S]

1. Builds a store of N attempts (default 1,000,000; bench/receipt.py's builder: 90 % messages
   refused after DATA, 10 % refusals at RCPT, one every 20 s over some seven months).
2. Starts the console alone in a process of its own (`start_console`, basic auth, the
   default page of 100), on that store.
3. Per case, C clients ask the same page's JSON export (the page's rows as JSON lines) R
   times in all, bounded by S seconds: the first page, page 5,000 (its key looked up once,
   as a link would carry it), and filtered pages (an office, a sender domain, a decision
   the store's SQL cannot apply). Prints requests/s and p50/p99 per case.

Every load is bounded in count and in time. The machine is shared: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.receipt import SINCE, build_store

PASSWORD = "a console benchmark password"
PAGE = 100


def _key(database: Path, attempts: int, row: int) -> str:
    """The page key ("before") of newest-first row `row`: attempt n arrived at SINCE + 20 n s."""
    at = (SINCE + timedelta(seconds=(attempts - 1 - row) * 20)).isoformat(timespec="microseconds")
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        found = conn.execute(
            "SELECT reference FROM messages WHERE received_at = ?1"
            " UNION ALL SELECT reference FROM refusals WHERE at = ?1",
            (at,),
        ).fetchone()
    finally:
        conn.close()
    return quote(f"{at}~{found[0]}")


async def serve(database: Path, users: Path, port_file: Path) -> None:
    from gateway.clock import make_clock
    from gateway.config import ConsoleSettings, load_settings
    from gateway.http.console import start_console

    settings = load_settings()
    storage = settings.storage.model_copy(update={"state_dir": database.parent})
    console = ConsoleSettings(listen="127.0.0.1:0", users_file=users, page_size=PAGE)
    settings = settings.model_copy(update={"storage": storage, "console": console})
    endpoint = await start_console(settings, make_clock(None))
    assert endpoint is not None
    await asyncio.to_thread(port_file.write_text, str(endpoint.port))
    await asyncio.sleep(3600)


async def measure(
    port: int, path: str, *, requests: int, clients: int, seconds: float
) -> dict[str, float]:
    import aiohttp

    token = base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    latencies: list[float] = []
    rows = 0
    stop_at = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal rows
        while len(latencies) < requests and time.perf_counter() < stop_at:
            began = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as got:
                body = await got.read()
                assert got.status == 200, (got.status, body[:200])
            latencies.append(time.perf_counter() - began)
            rows = body.count(b"\n")

    async with aiohttp.ClientSession() as session:
        # The first request pays the password's scrypt; the rest are remembered.
        async with session.get(f"http://127.0.0.1:{port}/attempts.json", headers=headers) as got:
            await got.read()
        began = time.perf_counter()
        async with asyncio.timeout(seconds + 30):
            await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "per_second": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "rows": rows,
    }


def main(args: argparse.Namespace) -> None:
    from gateway.config import ConsoleSettings
    from gateway.ops.consoleusers import run_console_users

    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        directory = Path(tmp)
        database = directory / "gateway.sqlite3"
        _, took = asyncio.run(build_store(database, args.attempts))
        print(f"store: {args.attempts:,} attempts written in {took:.0f} s")
        users = directory / "users"
        run_console_users(
            ConsoleSettings(users_file=users),
            action="adduser",
            name="bench",
            password_stdin=True,
            stdin=__import__("io").StringIO(PASSWORD + "\n"),
            out=sys.stdout,
            err=sys.stderr,
        )
        port_file = directory / "port"
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(database), str(users), str(port_file)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            stdout=subprocess.DEVNULL,  # its audit events, one per request
        )
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            port = int(port_file.read_text())
            # The end of page 5,000 (or of the middle page of a smaller store).
            deep = _key(database, args.attempts, min(5000 * PAGE, args.attempts // 2) - 1)
            cases = [
                ("first page", "/attempts.json"),
                ("page 5,001 by keyset", f"/attempts.json?before={deep}"),
                ("first page, office", "/attempts.json?office=ice-occ-chicago"),
                ("page 5,001, office", f"/attempts.json?office=ice-occ-chicago&before={deep}"),
                ("first page, sender domain", "/attempts.json?sender_domain=firm7.example"),
                (
                    "page 5,001 on, sender domain",
                    f"/attempts.json?sender_domain=firm7.example&before={deep}",
                ),
                ("first page, decision (Python)", "/attempts.json?decision=refused"),
            ]
            print(f"{'case':<32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'rows':>5} {'n':>5}")
            for name, path in cases:
                got = asyncio.run(
                    measure(
                        port,
                        path,
                        requests=args.requests,
                        clients=args.clients,
                        seconds=args.seconds,
                    )
                )
                print(
                    f"{name:<32} {got['per_second']:>8.1f} {got['p50_ms']:>8.1f}"
                    f" {got['p99_ms']:>8.1f} {got['rows']:>5} {got['requests']:>5}"
                )
        finally:
            server.terminate()
            server.wait(timeout=10)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per case")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="at most, per case")
    parser.add_argument(
        "--serve", nargs=3, metavar=("DB", "USERS", "PORT_FILE"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.serve:
        database, users, port_file = (Path(p) for p in arguments.serve)
        asyncio.run(serve(database, users, port_file))
    else:
        main(arguments)
