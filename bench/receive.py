"""Side-by-side receive benchmark: the gateway's full receive path against bare aiosmtpd.

    python bench/receive.py [--messages N] [--rounds R] [--sessions S] [--size BYTES]
                            [--baseline CHECKOUT] [--before CHECKOUT]
                            [--event-loop L] [--baseline-event-loop L]

Both servers run as child processes on 127.0.0.1 and are driven by Postfix's `smtp-source`
(C, so the client is never the bottleneck) with the same load, in interleaved rounds:

* bare:    a tiny aiosmtpd server (below) whose handler only answers 250, with hostname= set.
* gateway: `python -m gateway serve` with the built-in config, a temporary state_dir and
           --as-of after the cutoff, so every message to the retired address takes the whole
           reject-after-data path: parse, decide, group-committed SQLite record with a notice
           job, audit log lines on stdout, then the 550 5.1.6.

The machine drifts by up to 40 % over an hour (bench/README.md), so only the ratio within one
interleaved run means anything. The script fails (exit 1) when something did not work: a
server that does not start, smtp-source failing or timing out, or a gateway that recorded a
different number of messages than it was sent. A low ratio is a measurement, not a failure.

With `--baseline CHECKOUT` a third server joins the same interleaved rounds: the gateway of
another checkout (an earlier commit, say), run by that checkout's own `.venv/bin/python`, so a
change is measured against the code before it side by side, on the same load and minute.

`--before CHECKOUT` adds a fourth, named `before`, in the same way: a change's parent next to
the baseline, say, so that one run shows both steps.

`--event-loop` sets this checkout's `[server] event_loop` (auto, asyncio, uvloop), and
`--baseline-event-loop` the baseline's: `--baseline . --event-loop uvloop
--baseline-event-loop asyncio` measures the two loops side by side on the same code.

If `smtp-source` is not on PATH nor in the cache, the Debian postfix package is fetched with
`apt-get download postfix` and unpacked (not installed) into the cache directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AS_OF = "2017-09-13T10:00:00-05:00"  # after the founding office's cutoff
RETIRED = "occ-chicago-filings@occ-chicago.example"
SENDER = "attorney@lawfirm.example"
CLIENT_NAME = "bench-client.example"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
TARGET = 0.70
# The gateway with [server] workers = 1 (--single), beside the one with the default workers.
SINGLE = "1-proc"
# Other gateways the gateway's rate is also divided by, and their ratio columns' headings.

# name -> extra smtp-source options. Without -d smtp-source opens one connection per message.
SCENARIOS: dict[str, list[str]] = {
    "reused connections (-d)": ["-d"],
    "one connection per message": [],
}


# ---------------------------------------------------------------------------------------------
# The bare server (runs in a child process: `receive.py --bare-server`)


class _Answer250:
    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 OK"


async def _bare_server() -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = _Answer250()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bare.bench.example", ident="ESMTP", loop=loop),
        host="127.0.0.1",
        port=0,
    )
    stopped: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, stop)
    print(
        json.dumps({"event": "bare.listening", "port": server.sockets[0].getsockname()[1]}),
        flush=True,
    )
    await stopped
    server.close()
    print(json.dumps({"event": "bare.stopped", "messages": handler.messages}), flush=True)


# ---------------------------------------------------------------------------------------------
# smtp-source


def find_smtp_source(cache: Path) -> tuple[Path, dict[str, str]]:
    """The smtp-source binary and the environment it runs in; fetches postfix if needed."""
    env = dict(os.environ)
    on_path = shutil.which("smtp-source") or shutil.which("smtp-source", path="/usr/sbin")
    if on_path:
        return Path(on_path), env
    root = cache / "postfix"
    binary = root / "usr" / "sbin" / "smtp-source"
    if not binary.is_file():
        _fetch_postfix(cache, root)
    libs = root / "usr" / "lib" / "postfix"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    return binary, env


def _fetch_postfix(cache: Path, root: Path) -> None:
    download = cache / "download"
    download.mkdir(parents=True, exist_ok=True)
    print(f"smtp-source not found; fetching the postfix package into {cache}", file=sys.stderr)
    subprocess.run(["apt-get", "download", "postfix"], cwd=download, check=True, timeout=300)
    debs = sorted(download.glob("postfix_*.deb"))
    if not debs:
        raise RuntimeError("apt-get download postfix produced no postfix_*.deb")
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# Server processes


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process and of its live descendants, all threads included
    (a supervisor's workers and their composers: `[server] workers`)."""
    return sum(_own_cpu(p) for p in _tree(pid))


def _stat(pid: int) -> list[str]:
    # After the command name, which may hold spaces and parentheses: state, ppid, ...
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _own_cpu(pid: int) -> float:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        fields = _stat(pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0  # it ended meanwhile


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _copier: threading.Thread | None = None
    final: dict[str, Any] = field(default_factory=dict)

    def cpu(self) -> float:
        return _cpu_seconds(self.process.pid)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait(timeout=STOP_TIMEOUT)
        if self._copier is not None:
            self._copier.join(timeout=STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    ready_event: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Server:
    """Start a server child and return once it has logged `ready_event` with its port.

    Its stdout is then copied, in bulk, to `log_path` by a thread, so that the server never
    blocks on a full pipe and the harness spends next to nothing reading it.
    """
    with log_path.with_suffix(".stderr").open("wb") as stderr:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=cwd,
        )
    stdout = process.stdout
    assert stdout is not None
    log = log_path.open("wb")
    ready: dict[str, Any] = {}

    def read_until_ready() -> None:
        for line in stdout:
            log.write(line)
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == ready_event:
                    ready.update(event)
                    return

    reader = threading.Thread(target=read_until_ready, daemon=True)
    reader.start()
    reader.join(timeout=START_TIMEOUT)
    if not ready:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        log.close()
        raise RuntimeError(
            f"{name} did not log {ready_event} within {START_TIMEOUT:.0f} s"
            f" (exit status {process.returncode}); see {log_path}"
        )

    def copy_rest() -> None:
        with log:
            shutil.copyfileobj(stdout, log)

    copier = threading.Thread(target=copy_rest, daemon=True)
    copier.start()
    return Server(name, process, int(ready["port"]), log_path, copier)


def last_event(path: Path, name: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with path.open("rb") as log:
        for line in log:
            if name.encode() in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == name:
                        found = event
    return found


def count_events(path: Path, name: str) -> int:
    needle = f'"event": "{name}"'.encode()
    with path.open("rb") as log:
        return sum(1 for line in log if needle in line)


# ---------------------------------------------------------------------------------------------
# Running the load


@dataclass(frozen=True, slots=True)
class Measurement:
    scenario: str
    server: str
    round: int
    messages: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass(frozen=True, slots=True)
class Load:
    binary: Path
    env: dict[str, str]
    sessions: int
    size: int
    timeout: float


def drive(load: Load, server: Server, *, messages: int, options: Sequence[str]) -> float:
    """Send `messages` with smtp-source; returns the wall-clock seconds it took.

    Raises:
        RuntimeError: smtp-source failed or ran past the round's timeout.
    """
    argv = [
        str(load.binary),
        "-A",
        "-s",
        str(load.sessions),
        "-l",
        str(load.size),
        "-m",
        str(messages),
        "-M",
        CLIENT_NAME,
        "-f",
        SENDER,
        "-t",
        RETIRED,
        *options,
        f"127.0.0.1:{server.port}",
    ]
    started = time.perf_counter()
    try:
        result = subprocess.run(
            argv, env=load.env, capture_output=True, timeout=load.timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"smtp-source against {server.name} ran past {load.timeout:g} s"
        ) from exc
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise RuntimeError(
            f"smtp-source against {server.name} exited {result.returncode}: {detail}"
        )
    return elapsed


def measure(
    load: Load, server: Server, *, scenario: str, round_: int, messages: int
) -> Measurement:
    cpu_before = server.cpu()
    seconds = drive(load, server, messages=messages, options=SCENARIOS[scenario])
    return Measurement(scenario, server.name, round_, messages, seconds, server.cpu() - cpu_before)


def run_rounds(
    load: Load, servers: Sequence[Server], *, rounds: int, messages: int, scenarios: Sequence[str]
) -> list[Measurement]:
    """Alternate the servers within each round, and who goes first from round to round."""
    results: list[Measurement] = []
    for round_ in range(1, rounds + 1):
        for scenario in scenarios:
            order = servers if round_ % 2 else list(reversed(servers))
            for server in order:
                m = measure(load, server, scenario=scenario, round_=round_, messages=messages)
                results.append(m)
                print(
                    f"  round {round_} {scenario:<28} {server.name:<8}"
                    f" {m.rate:8.0f} msgs/s  cpu {m.cpu_seconds:6.2f} s",
                    flush=True,
                )
    return results


# ---------------------------------------------------------------------------------------------
# Report


def report(
    results: Sequence[Measurement], scenarios: Sequence[str], *, sessions: int, size: int
) -> None:
    names = list(dict.fromkeys(m.server for m in results))
    gateways = [n for n in names if n != "bare"]
    others = [n for n in gateways if n != "gateway"]
    print()
    print(f"{sessions} sessions, {size}-byte messages; msgs/s per round, then the medians;")
    print("µs/msg is each server's CPU time (all threads) per message")
    header = f"{'scenario':<28} {'round':>5}" + "".join(f" {n:>9}" for n in names)
    header += "".join(f" {'gw/' + n[:4]:>7}" for n in ["bare", *others])
    print(header + "".join(f" {n[:4] + ' µs/msg':>11}" for n in gateways))
    for scenario in scenarios:
        by = {
            n: {m.round: m for m in results if m.scenario == scenario and m.server == n}
            for n in names
        }
        for round_ in sorted(by["gateway"]):
            rates = {n: by[n][round_].rate for n in names}
            cpu = {n: _cpu_per_message([by[n][round_]]) for n in gateways}
            print(_row(scenario, str(round_), rates, cpu, others))
        medians = {n: statistics.median(m.rate for m in by[n].values()) for n in names}
        cpu = {n: _cpu_per_message(list(by[n].values())) for n in gateways}
        ratio = medians["gateway"] / medians["bare"]
        line = _row(scenario, "med", medians, cpu, others)
        print(f"{line}   target ≥ {TARGET:.2f}: {'met' if ratio >= TARGET else 'NOT met'}")
        print(f"{'':<28} {'':>5}  {_paired(by, others)}")


def _paired(by: dict[str, dict[int, Measurement]], others: Sequence[str]) -> str:
    """Medians of each round's own ratios: servers measured in the same minute, so the
    machine's drift (other work on it) cancels better than in a ratio of medians."""
    parts = []
    for other in ["bare", *others]:
        rounds = sorted(by["gateway"])
        rate = statistics.median(by["gateway"][r].rate / by[other][r].rate for r in rounds)
        part = f"gw/{other[:4]} {rate:.2f}"
        if other != "bare":
            cpu = statistics.median(
                by["gateway"][r].cpu_seconds / by[other][r].cpu_seconds for r in rounds
            )
            part += f" (CPU per message {cpu:.2f})"
        parts.append(part)
    return "paired by round: " + ", ".join(parts)


def _cpu_per_message(measurements: Sequence[Measurement]) -> float:
    return statistics.median(m.cpu_seconds / m.messages for m in measurements)


def _row(
    scenario: str,
    label: str,
    rates: dict[str, float],
    cpu: dict[str, float],
    others: Sequence[str],
) -> str:
    line = f"{scenario:<28} {label:>5}" + "".join(f" {r:9.0f}" for r in rates.values())
    line += "".join(f" {rates['gateway'] / rates[n]:7.2f}" for n in ["bare", *others])
    return line + "".join(f" {1e6 * c:11.0f}" for c in cpu.values())


def gateway_rows(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM messages").fetchone()
        return int(rows)


# ---------------------------------------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="per server, round, scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2048, help="message payload bytes (-l)")
    parser.add_argument("--warmup", type=int, default=300, help="messages per server first")
    parser.add_argument("--scenario", choices=["all", *SCENARIOS], default="all")
    parser.add_argument(
        "--round-timeout", type=float, default=300.0, help="seconds one smtp-source run may take"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "eservice-gateway-bench",
    )
    parser.add_argument("--keep", action="store_true", help="keep the state and logs directory")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (with its own .venv) whose gateway runs in the same rounds",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a fourth server: another checkout (with its own .venv), this change's parent say",
    )
    loops = ["auto", "asyncio", "uvloop"]
    parser.add_argument(
        "--event-loop", choices=loops, help="[server] event_loop of this checkout's gateway"
    )
    parser.add_argument(
        "--baseline-event-loop",
        choices=loops,
        help="the baseline's [server] event_loop (only for a checkout that has the setting)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="[server] workers of the gateway (default: the built-in config's, one per CPU)",
    )
    parser.add_argument(
        "--single",
        action="store_true",
        help="also run this checkout's gateway with workers = 1 in the same rounds (1-proc)",
    )
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@contextlib.contextmanager
def work_directory(*, keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"state and logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.bare_server:
        asyncio.run(_bare_server())
        return 0
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    binary, env = find_smtp_source(args.cache_dir)
    load = Load(binary, env, args.sessions, args.size, args.round_timeout)
    with work_directory(keep=args.keep) as work:
        return _run(args, load, scenarios, work)


def _run(args: argparse.Namespace, load: Load, scenarios: Sequence[str], work: Path) -> int:
    servers: list[Server] = []
    failures: list[str] = []
    try:
        servers.append(
            start_server(
                "bare",
                [sys.executable, __file__, "--bare-server"],
                ready_event="bare.listening",
                log_path=work / "bare.log",
            )
        )
        for name, checkout, python, loop, workers in _gateways(args):
            servers.append(
                start_server(
                    name,
                    [python, "-m", "gateway", "serve", "--as-of", AS_OF],
                    ready_event="gateway.listening",
                    log_path=work / f"{name}.log",
                    env=_gateway_env(
                        args, work / f"{name}-state", event_loop=loop, workers=workers
                    ),
                    cwd=checkout,
                )
            )
        print(f"smtp-source: {load.binary}")
        ports = ", ".join(f"{s.name} on port {s.port}" for s in servers)
        print(
            f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; {ports};"
            f" warm-up {args.warmup}; gateway: built-in config, --as-of {AS_OF}"
        )
        for server in servers:
            if args.warmup:
                drive(load, server, messages=args.warmup, options=["-d"])
        results = run_rounds(
            load, servers, rounds=args.rounds, messages=args.messages, scenarios=scenarios
        )
    except RuntimeError as exc:
        failures.append(str(exc))
        results = []
    finally:
        statuses = {s.name: s.stop() for s in servers}
    for name, status in statuses.items():
        if status != 0:
            failures.append(f"{name} server exited {status}")
    if results:
        report(results, scenarios, sessions=args.sessions, size=args.size)
        failures += _sanity(args, scenarios, work, [s.name for s in servers])
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _gateways(args: argparse.Namespace) -> list[tuple[str, Path, str, str | None, int | None]]:
    """(name, checkout, python, event loop, workers) of each gateway to measure: this one, then
    the baseline (which may be this checkout again, on another event loop), the one before,
    and this one in a single process (--single)."""
    found = [("gateway", REPO, sys.executable, args.event_loop, args.workers)]
    if args.baseline is not None:
        checkout, python = _checkout(args.baseline, "--baseline")
        found.append(("baseline", checkout, python, args.baseline_event_loop, args.workers))
    if args.before is not None:
        found.append(("before", *_checkout(args.before, "--before"), None, args.workers))
    if args.single:
        found.append((SINGLE, REPO, sys.executable, args.event_loop, 1))
    return found


def _checkout(path: Path, option: str) -> tuple[Path, str]:
    checkout = path.resolve()
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{option} {checkout}: no {python}; make its venv first")
    return checkout, str(python)


def _gateway_env(
    args: argparse.Namespace,
    state: Path,
    *,
    event_loop: str | None = None,
    workers: int | None = None,
) -> dict[str, str]:
    gateway_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    if event_loop is not None:
        gateway_env["GATEWAY_SERVER__EVENT_LOOP"] = event_loop
    if workers is not None:
        gateway_env["GATEWAY_SERVER__WORKERS"] = str(workers)
    # server.max_commands (default 1000 of any one command per session) would cut a reused
    # session after 100 messages with 421 4.7.0; raise it so that each -d session can carry
    # its whole share, as the bare server (no limit) does.
    max_commands = max(100, args.messages + args.warmup)
    gateway_env.update(
        {
            "GATEWAY_SERVER__LISTEN": "127.0.0.1:0",
            "GATEWAY_SERVER__MAX_COMMANDS": str(max_commands),
            "GATEWAY_STORAGE__STATE_DIR": str(state),
            "GATEWAY_DELIVERY__OUTBOX_DIR": str(state / "notices"),
            # smtp-source connects from 127.0.0.1, which the built-in config trusts; an MX
            # mostly hears from the internet, so measure that: no trusted client, so the
            # refusal is recorded and no notice job is queued (senders are not authenticated).
            "GATEWAY_SERVER__TRUSTED_NETWORKS": "",
            # Sender checks need DNS, which this machine has none of; without them no sender
            # outside trusted_networks is authenticated, as above.
            "GATEWAY_SENDER_AUTH__ENABLED": "false",
            "GATEWAY_METRICS__LISTEN": "127.0.0.1:0",
        }
    )
    return gateway_env


def _sanity(
    args: argparse.Namespace, scenarios: Sequence[str], work: Path, names: Sequence[str]
) -> list[str]:
    """Every server really handled every message; each gateway recorded each one."""
    sent = args.warmup + args.rounds * len(scenarios) * args.messages
    problems: list[str] = []
    print()
    for name in names:
        if name == "bare":
            handled = last_event(work / "bare.log", "bare.stopped").get("messages")
            print(f"sent to each server: {sent}; bare answered 250 to: {handled}")
        else:
            handled = gateway_rows(work / f"{name}-state" / "gateway.sqlite3")
            replies = count_events(work / f"{name}.log", "smtp.reply.sent")
            print(f"{name}: rows in messages {handled}; smtp.reply.sent events {replies}")
        if handled != sent:
            problems.append(f"{name} handled {handled} messages, {sent} were sent")
        stderr = (work / f"{name}.stderr").read_text(errors="replace").splitlines()
        if stderr:
            print(f"{name} wrote {len(stderr)} lines to stderr, the first: {stderr[0]}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
