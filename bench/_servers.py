"""The servers bench/compare.py measures, as child processes it starts, watches and stops.

Each runs in a session of its own (so a Ctrl-C at the terminal reaches only the harness,
which then stops them in order) with its stdout going straight to a file: no pipe for the
harness to drain while it measures. Memory and CPU are counted over the whole process tree:
the gateway's composer process, Postfix's master and every smtpd, cleanup and qmgr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AS_OF",
    "DATA_ADDRESS",
    "DOMAIN",
    "RCPT_ADDRESS",
    "Running",
    "TreeUsage",
    "gateway_config",
    "gateway_env",
    "start_logged",
    "tree_usage",
]

REPO = Path(__file__).resolve().parent.parent
AS_OF = "2017-09-13T10:00:00-05:00"  # after the founding office's cutoff
DOMAIN = "occ-chicago.example"
RCPT_ADDRESS = f"occ-chicago-service@{DOMAIN}"  # refused at RCPT by all three
DATA_ADDRESS = f"occ-chicago-filings@{DOMAIN}"  # gateway: refused after DATA; others: 250
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class Running:
    """A server child process: its name, port, and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    is_group: bool = True  # started in a session of its own: signal its whole group
    exit_status: int | None = field(default=None)

    def stop(self) -> int:
        """SIGTERM (to the group), SIGKILL after STOP_TIMEOUT; returns the exit status."""
        if self.exit_status is not None:
            return self.exit_status
        self._signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            status = self.process.wait(timeout=STOP_TIMEOUT)
        self.exit_status = status
        return status

    def _signal(self, signum: int) -> None:
        if self.process.poll() is not None:
            return
        if self.is_group:
            # Its own process group (start_new_session): the group id is its pid.
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)


def start_logged(
    name: str,
    argv: Sequence[str],
    *,
    ready_event: str,
    stdout: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Running:
    """Start a server whose stdout (a file) carries JSON lines; return once it has logged
    `ready_event` with its port.

    Raises:
        RuntimeError: it exited or did not log `ready_event` within START_TIMEOUT seconds.
    """
    with stdout.open("wb") as out, stdout.with_suffix(".stderr").open("wb") as err:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    running = Running(name, process, 0, stdout)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        port = _logged_port(stdout, ready_event)
        if port:
            running.port = port
            return running
        time.sleep(0.05)
    running.stop()
    tail = stdout.with_suffix(".stderr").read_text(errors="replace")[-600:]
    raise RuntimeError(
        f"{name} did not log {ready_event} within {START_TIMEOUT:.0f} s"
        f" (exit status {process.returncode}); stderr ends: {tail}"
    )


def _logged_port(path: Path, event: str) -> int:
    needle = f'"{event}"'.encode()
    with path.open("rb") as log:
        for line in log:
            if needle in line:
                try:
                    found = json.loads(line)
                except ValueError:
                    continue
                if found.get("event") == event:
                    return int(found["port"])
    return 0


def last_event(path: Path, event: str) -> dict[str, object]:
    """The last JSON line of `path` whose event is `event` (empty if none)."""
    found: dict[str, object] = {}
    needle = f'"{event}"'.encode()
    with path.open("rb") as log:
        for line in log:
            if needle in line:
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                if parsed.get("event") == event:
                    found = parsed
    return found


# ---------------------------------------------------------------------------------------------
# Process trees


@dataclass(frozen=True, slots=True)
class TreeUsage:
    processes: int
    rss_kib: int  # summed: shared pages counted in every process, as `ps` would
    pss_kib: int  # proportional: shared pages divided among the processes sharing them
    cpu_seconds: float  # utime+stime of the live ones, plus what they reaped of their children


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(root: int) -> list[int]:
    tree = _children()
    found = [root]
    for pid in found:  # grows as it goes: breadth first
        found.extend(tree.get(pid, []))
    return found


def _kib(text: str, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def tree_usage(root: int) -> TreeUsage:
    """Memory and CPU of `root` and every process under it."""
    ticks = os.sysconf("SC_CLK_TCK")
    rss = pss = count = 0
    cpu = 0.0
    for pid in _descendants(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        count += 1
        rss += _kib(status, "VmRSS")
        pss += _kib(rollup, "Pss")
        cpu += sum(int(f) for f in fields[11:15]) / ticks
    return TreeUsage(count, rss, pss, cpu)


# ---------------------------------------------------------------------------------------------
# The gateway


def gateway_config(base: str) -> str:
    """The built-in configuration with its office split in two: one refusing at RCPT
    (RCPT_ADDRESS), one refusing after DATA with the notice queued (DATA_ADDRESS)."""
    start = base.index("[[offices]]")
    office = base[start:]
    addresses = re.compile(r"^addresses = \[\n(?:.*\n)*?\]\n", re.MULTILINE)
    after_data = addresses.sub(f'addresses = ["{DATA_ADDRESS}"]\n', office, count=1)
    at_rcpt = addresses.sub(f'addresses = ["{RCPT_ADDRESS}"]\n', office, count=1)
    at_rcpt = re.sub(r'^name = ".*"$', 'name = "bench-at-rcpt"', at_rcpt, count=1, flags=re.M)
    at_rcpt = re.sub(
        r'^response = ".*"$', 'response = "reject-at-rcpt"', at_rcpt, count=1, flags=re.M
    )
    after_data = re.sub(
        r'^response = ".*"$', 'response = "reject-after-data"', after_data, count=1, flags=re.M
    )
    return base[:start] + after_data + "\n" + at_rcpt


def gateway_env(state: Path, *, is_trusted: bool, poll: float, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked gateway: sender checks off (no DNS here), loopback
    trusted or not, limits out of the way, audit as JSON on stdout (a file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_SERVER__LISTEN": "127.0.0.1:0",
            # 1,000 idle connections, and reused sessions that carry thousands of
            # transactions (the default max_commands would end them with 421 4.7.0).
            "GATEWAY_SERVER__MAX_CONNECTIONS": "5000",
            "GATEWAY_SERVER__MAX_COMMANDS": "10000000",
            "GATEWAY_STORAGE__STATE_DIR": str(state),
            "GATEWAY_DELIVERY__OUTBOX_DIR": str(state / "notices"),
            "GATEWAY_DELIVERY__POLL_INTERVAL": str(poll),
            "GATEWAY_METRICS__STALL_AFTER": str(max(30.0, 3 * poll)),
            "GATEWAY_SENDER_AUTH__ENABLED": "false",
            "GATEWAY_METRICS__LISTEN": "",
            "GATEWAY_AUDIT__FORMAT": "json",
            # One sender sends thousands of filings an hour here; the hourly notice limits
            # would answer 451 4.7.1 after the first 30.
            "GATEWAY_LIMITS__NOTICES_PER_SENDER": "100000000",
            "GATEWAY_LIMITS__NOTICES_PER_DOMAIN": "100000000",
            "GATEWAY_LIMITS__NOTICES_PER_CLIENT": "100000000",
            "GATEWAY_LIMITS__NOTICES_TOTAL": "100000000",
        }
    )
    if not is_trusted:
        env["GATEWAY_SERVER__TRUSTED_NETWORKS"] = ""
    env.update(extra)
    return env


def database(state: Path) -> Path:
    return state / "gateway.sqlite3"


def count_rows(state: Path, table: str) -> int:
    with sqlite3.connect(f"file:{database(state)}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def pending_jobs(state: Path) -> int:
    """Jobs still to be delivered (read-only, beside the gateway's writer: WAL allows it)."""
    with sqlite3.connect(f"file:{database(state)}?mode=ro", uri=True, timeout=10) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'in-flight', 'deferred')"
            ).fetchone()[0]
        )


def grow_outbox(state: Path, total: int) -> int:
    """Copy the stopped gateway's jobs until `total` wait in its outbox, deferred to a time
    that never comes, so the worker sees them at every poll but sends none. Returns the count.

    The benchmark's own stand-in for weeks of an unreachable smarthost: filling 100,000 jobs
    over SMTP would take minutes of every run.
    """
    with sqlite3.connect(database(state), timeout=30) as conn:
        (have,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
        if not have:
            raise RuntimeError("no job to copy: the fill sent no message that queued a notice")
        conn.execute(
            "UPDATE jobs SET state = 'deferred', attempts = 1,"
            " next_attempt_at = '2999-01-01T00:00:00.000000+00:00'"
        )
        while have < total:
            conn.execute(
                "INSERT INTO jobs (reference, kind, office, mail_from, recipients, destination,"
                " route, state, created_at, next_attempt_at, attempts, updated_at)"
                " SELECT reference, kind, office, mail_from, recipients, destination, route,"
                " state, created_at, next_attempt_at, attempts, updated_at FROM jobs"
                " LIMIT ?",
                (total - have,),
            )
            (have,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
        return int(have)


def sent_notices(state: Path, limit: int) -> list[tuple[str, bytes]]:
    """(recipient, bytes as sent) of up to `limit` notices the gateway delivered."""
    with sqlite3.connect(f"file:{database(state)}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute(
            "SELECT j.recipients, s.data FROM sent_notices s JOIN jobs j ON j.id = s.job_id"
            " LIMIT ?",
            (limit,),
        ).fetchall()
    return [(json.loads(recipients)[0], bytes(data)) for recipients, data in rows]
