"""`gateway audit show` on a host that keeps a year of daily-rotated, gzipped audit logs.

    python bench/story_logs.py [--days 365] [--per-day 3000] [--repeat 3] [--dir DIR] [--http]

1. Writes (once; a DIR already holding the same year is reused) what such a host has: the
   log and two supervisor workers' logs, each one hash chain going on across one file per day
   (`gateway.log-YYYYMMDD.gz` and `gateway.worker-N.log-YYYYMMDD.gz`, logrotate's dateext and
   compress with delaycompress: the newest rotated file plain, today's `gateway.log`). Every
   attempt leaves five lines in a worker's file (its session opened, the message received,
   the decision, the reply, the session closed) and one in four a delivery line in the log;
   the lines are linked exactly as chain.py's writer links them. Three attempts (old: day 10,
   middle, recent: two days before the end) also get a delivery retry two days later, a
   receipt-page lookup and a console view a month later (where the year reaches), and a
   record in a SQLite store beside the logs.
2. Times `gateway audit show REF` of each, in this process (run_audit, as the CLI and the
   console's story page call it), --repeat times, and prints the best and median seconds, the
   lines listed and a digest of them (the same digest before and after a change means the
   same lines). With --http, also the console's story page (GET /attempts/REF, basic auth)
   from a console serving the same store and log in a child process, --repeat times each,
   one request at a time, each bounded to 300 s.

The machine is shared: compare figures within one run or between runs close in time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit.chain import GENESIS, line_hash, link

START = datetime(2026, 1, 1, tzinfo=UTC)
WORKERS = 2
OFFICE = "ice-occ-chicago"
RETIRED = "occ-chicago-filings@occ-chicago.example"


@dataclass
class _Chain:
    """One writer's chain, going on from file to file as a writer following rotation does."""

    chain: str
    seq: int = 0
    prev: str = GENESIS

    def line(self, fields: dict[str, object]) -> bytes:
        self.seq += 1
        text = link(json.dumps(fields), chain=self.chain, seq=self.seq, prev=self.prev).encode()
        self.prev = line_hash(text)
        return text + b"\n"


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _attempt_lines(
    n: int, at: datetime, reference: str
) -> list[tuple[datetime, dict[str, object]]]:
    session = f"{n:012x}"
    sender = f"attorney{n % 5000}@firm{n % 700}.example"
    peer = f"192.0.2.{n % 250 + 1}"
    sent = at + timedelta(seconds=2)
    return [
        (
            at,
            {
                "session_id": session,
                "peer_ip": peer,
                "peer_port": 40000 + n % 20000,
                "event": "smtp.session.opened",
                "level": "info",
            },
        ),
        (
            sent,
            {
                "session_id": session,
                "reference": reference,
                "sender": sender,
                "recipients": [RETIRED],
                "size": 2048,
                "message_id": f"<m{n}@firm.example>",
                "sha256": f"{n:064x}",
                "event": "smtp.message.received",
                "level": "info",
            },
        ),
        (
            sent,
            {
                "session_id": session,
                "reference": reference,
                "recipient": RETIRED,
                "office": OFFICE,
                "phase": "retired",
                "action": "reject-after-data",
                "reason": "address retired; refused after DATA",
                "event": "policy.decided",
                "level": "info",
            },
        ),
        (
            sent,
            {
                "session_id": session,
                "reference": reference,
                "reply_code": 550,
                "reply": f"550 5.1.6 NOT FILED: use the portal (ref {reference})",
                "office": OFFICE,
                "reason": "retired",
                "event": "smtp.reply.sent",
                "level": "info",
            },
        ),
        (
            sent + timedelta(seconds=1),
            {
                "session_id": session,
                "peer_ip": peer,
                "messages": 1,
                "duration_s": 3.1,
                "event": "smtp.session.closed",
                "level": "info",
            },
        ),
    ]


def _delivery(at: datetime, reference: str, job: int, outcome: str) -> dict[str, object]:
    return {
        "job_id": job,
        "reference": reference,
        "job_kind": "notice",
        "attempt": 1,
        "recipients": ["clerk@firm.example"],
        "host": "mx.firm.example",
        "reply_code": 250,
        "event": f"delivery.{outcome}",
        "level": "info",
        "timestamp": _stamp(at),
    }


def _reference(day: int, n: int) -> str:
    return f"{(START + timedelta(days=day)):%Y%m%d}-{n:013d}"


def _targets(days: int) -> dict[str, int]:
    return {"old": min(10, days - 1), "middle": days // 2, "recent": max(0, days - 3)}


def _name(base: str, day: int, days: int) -> str:
    """Day `day`'s file: today's is the log itself, yesterday's plain (delaycompress)."""
    if day == days - 1:
        return base
    stamp = f"{START + timedelta(days=day + 1):%Y%m%d}"
    return f"{base}-{stamp}" + ("" if day == days - 2 else ".gz")


def write_year(folder: Path, days: int, per_day: int) -> dict[str, tuple[str, datetime]]:
    """The year's log files in `folder`; returns each target attempt's reference and arrival."""
    folder.mkdir(parents=True, exist_ok=True)
    chains = [_Chain(f"{index:016x}") for index in range(WORKERS + 1)]  # 0: the log itself
    targets = {
        name: (
            _reference(day, per_day // 2),
            START + timedelta(days=day, seconds=per_day // 2 * 86400 / per_day),
        )
        for name, day in _targets(days).items()
    }
    later: dict[int, list[dict[str, object]]] = {}  # day -> the targets' later lines in the log
    for reference, at in targets.values():
        day = (at - START).days
        later.setdefault(day + 2, []).append(
            _delivery(at + timedelta(days=2), reference, 9, "succeeded")
        )
        for event, extra in (
            ("receipt.looked_up", {"found": True, "format": "html", "lang": "en"}),
            ("console.viewed", {"user": "clerk", "view": "attempt", "format": "html"}),
        ):
            when = at + timedelta(days=30)
            later.setdefault(day + 30, []).append(
                {
                    "reference": reference,
                    **extra,
                    "client": "198.51.100.7",
                    "event": event,
                    "level": "info",
                    "timestamp": _stamp(when),
                }
            )
    for day in range(days):
        files: list[list[tuple[str, dict[str, object]]]] = [[] for _ in chains]
        for n in range(per_day):
            at = START + timedelta(days=day, seconds=n * 86400 / per_day)
            reference = _reference(day, n)
            worker = 1 + n % WORKERS
            for when, fields in _attempt_lines(day * per_day + n, at, reference):
                files[worker].append((_stamp(when), fields))
            if n % 4 == 0:
                files[0].append(
                    (
                        _stamp(at + timedelta(minutes=1)),
                        _delivery(
                            at + timedelta(minutes=1), reference, day * per_day + n, "succeeded"
                        ),
                    )
                )
        for fields in later.get(day, []):
            files[0].append((str(fields["timestamp"]), fields))
        for index, entries in enumerate(files):
            entries.sort(key=lambda e: e[0])
            base = "gateway.log" if index == 0 else f"gateway.worker-{index}.log"
            data = b"".join(chains[index].line({**f, "timestamp": stamp}) for stamp, f in entries)
            path = folder / _name(base, day, days)
            if path.suffix == ".gz":
                with gzip.open(path, "wb", compresslevel=6) as out:
                    out.write(data)
            else:
                path.write_bytes(data)
    return targets


async def _store(database: Path, targets: dict[str, tuple[str, datetime]], per_day: int) -> None:
    from gateway.mail.evidence import MessageFacts
    from gateway.store.db import Store
    from gateway.store.messages import MessageRecord, RecipientRecord, insert_gated

    store = Store(database)
    await store.open()
    try:
        for reference, at in targets.values():
            n = ((at - START).days) * per_day + per_day // 2
            record = MessageRecord(
                reference=reference,
                received_at=at,
                session_id=f"{n:012x}",
                peer_ip=f"192.0.2.{n % 250 + 1}",
                peer_port=40000 + n % 20000,
                helo="mail.firm.example",
                tls=None,
                mail_from=f"attorney{n % 5000}@firm{n % 700}.example",
                facts=MessageFacts(2048, f"{n:064x}", f"<m{n}@firm.example>", "Motion", None, None),
                recipients=(
                    RecipientRecord(
                        RETIRED,
                        "retired",
                        "reject-after-data",
                        "address retired; refused after DATA",
                        at,
                        office=OFFICE,
                        phase="retired",
                        local_time=at.isoformat(),
                    ),
                ),
                outcome="rejected",
                reply=f"550 5.1.6 NOT FILED: use the portal (ref {reference})",
                notice="suppressed:duplicate",
                auth=None,
            )
            await store.write(lambda conn, r=record: insert_gated(conn, r, None))  # type: ignore[misc]
    finally:
        await store.close()


def _settings(folder: Path):  # type: ignore[no-untyped-def]
    from gateway.config import GatewaySettings

    return GatewaySettings.model_validate(
        {
            "server": {"listen": ["127.0.0.1:0"], "hostname": "mx.bench.example"},
            "storage": {"state_dir": str(folder / "state")},
            "audit": {"log": str(folder / "gateway.log")},
            "sender_auth": {"enabled": False},
            "offices": [
                {
                    "name": OFFICE,
                    "display_name": "ICE Office of the Chief Counsel, Chicago",
                    "short_name": "ICE OCC Chicago",
                    "timezone": "America/Chicago",
                    "portal_opens": "2017-09-11",
                    "retires": "2017-09-12",
                    "portal_url": "https://eservice.ice.gov/",
                    "registration_url": "https://eserviceregistration.ice.gov/",
                    "paper_service": ["By mail"],
                    "addresses": [RETIRED],
                    "legacy_host": "legacy.occ-chicago.example:25",
                }
            ],
        }
    )


def show(folder: Path, reference: str) -> tuple[float, str]:
    from gateway.ops.auditcmd import AuditRequest, run_audit

    out, err = io.StringIO(), io.StringIO()
    began = time.perf_counter()
    status = run_audit(
        _settings(folder),
        AuditRequest(action="show", targets=(reference,)),
        now=datetime.now(UTC),
        out=out,
        err=err,
    )
    took = time.perf_counter() - began
    if status != 0:
        raise SystemExit(f"audit show {reference}: {status} {err.getvalue()}")
    return took, out.getvalue()


PASSWORD = "a story benchmark password"


async def serve_console(folder: Path, users: Path, port_file: Path) -> None:
    """The console alone, on the year's store and log (run in a process of its own)."""
    from gateway.clock import make_clock
    from gateway.config import ConsoleSettings
    from gateway.http.console import start_console

    settings = _settings(folder)
    console = ConsoleSettings(listen="127.0.0.1:0", users_file=users)
    endpoint = await start_console(
        settings.model_copy(update={"console": console}), make_clock(None)
    )
    assert endpoint is not None
    await asyncio.to_thread(port_file.write_text, str(endpoint.port))
    await asyncio.sleep(3600)


async def _get_story(port: int, reference: str, *, within_s: float) -> tuple[float, int]:
    import aiohttp

    token = base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession() as session, asyncio.timeout(within_s):
        began = time.perf_counter()
        url = f"http://127.0.0.1:{port}/attempts/{reference}"
        async with session.get(url, headers={"Authorization": f"Basic {token}"}) as got:
            body = await got.read()
        return time.perf_counter() - began, got.status if body else 0


def over_http(folder: Path, targets: dict[str, tuple[str, datetime]], repeat: int) -> None:
    """Each target's story page from the console in a child process, `repeat` times."""
    from gateway.config import ConsoleSettings
    from gateway.ops.consoleusers import run_console_users

    users, port_file = folder / "console-users", folder / "console-port"
    port_file.unlink(missing_ok=True)
    if not users.exists():
        run_console_users(
            ConsoleSettings(users_file=users),
            action="adduser",
            name="bench",
            password_stdin=True,
            stdin=io.StringIO(PASSWORD + "\n"),
            out=sys.stdout,
            err=sys.stderr,
        )
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-console", str(folder), str(users), str(port_file)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        stdout=subprocess.DEVNULL,  # its audit events: the year's log stays as written
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text())
        asyncio.run(_get_story(port, "20000101-WARMUPWARMUP1", within_s=300))  # the scrypt
        for name, (reference, _) in targets.items():
            times = []
            for _ in range(repeat):
                took, status = asyncio.run(_get_story(port, reference, within_s=300))
                if status != 200:
                    raise SystemExit(f"GET /attempts/{reference}: {status}")
                times.append(took)
            print(f"{name + ' http':<12} {reference:<23} {min(times):>8.2f}"
                  f" {statistics.median(times):>9.2f}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)


def _listed(text: str) -> list[str]:
    """The story's audit log lines, without the header naming the files read."""
    part = text[text.index("\naudit log") :].splitlines()[2:]
    return [line for line in part if line.startswith("  ") and " (seq " in line]


def main(args: argparse.Namespace) -> None:
    folder = Path(args.dir or tempfile.mkdtemp(prefix="story-logs-"))
    marker = folder / "year.json"
    wanted = {"days": args.days, "per_day": args.per_day}
    if marker.exists() and json.loads(marker.read_text())["size"] == wanted:
        targets = {
            k: (r, datetime.fromisoformat(a))
            for k, (r, a) in json.loads(marker.read_text())["targets"].items()
        }
        print(f"reusing the year in {folder}")
    else:
        began = time.perf_counter()
        targets = write_year(folder, args.days, args.per_day)
        asyncio.run(_store(folder / "state" / "gateway.sqlite3", targets, args.per_day))
        marker.write_text(
            json.dumps(
                {
                    "size": wanted,
                    "targets": {k: (r, a.isoformat()) for k, (r, a) in targets.items()},
                }
            )
        )
        print(f"wrote the year in {folder} in {time.perf_counter() - began:.0f} s")
    files = sorted(p for p in folder.iterdir() if p.name.startswith("gateway."))
    size = sum(p.stat().st_size for p in files)
    print(
        f"{len(files)} log files, {size / 2**20:,.0f} MiB on disk"
        f" ({args.days} days x {args.per_day:,} attempts, {WORKERS} workers)"
    )
    print(f"{'attempt':<12} {'reference':<23} {'best s':>8} {'median s':>9} {'lines':>6}  digest")
    for name, (reference, _) in targets.items():
        times, text = [], ""
        for _ in range(args.repeat):
            took, text = show(folder, reference)
            times.append(took)
        listed = _listed(text)
        digest = hashlib.sha256("\n".join(listed).encode()).hexdigest()[:12]
        print(
            f"{name:<12} {reference:<23} {min(times):>8.2f} {statistics.median(times):>9.2f}"
            f" {len(listed):>6}  {digest}"
        )
    if args.http:
        over_http(folder, targets, args.repeat)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", action="store_true", help="also the console's story page")
    parser.add_argument("--serve-console", nargs=3, metavar=("DIR", "USERS", "PORT_FILE"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", help="where the year is written (kept; reused when it matches)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.serve_console:
        asyncio.run(serve_console(*(Path(p) for p in arguments.serve_console)))
    else:
        main(arguments)
