"""`gateway queue list|show|retry|delete`: the outbox as an operator sees it.

Like Postfix's mailq, postqueue -i and postsuper -d. Works on the store file directly, so it
runs beside a serving gateway; it only reads, except retry and delete, which change one row.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TextIO

from gateway.clock import Clock
from gateway.config import GatewaySettings
from gateway.store.db import connect
from gateway.store.outbox import Job, delete_job, job_attempts, list_jobs, read_job, retry_job
from gateway.vocabulary import JobState

__all__ = ["run_queue"]

# Jobs still to be sent, and those of them due for a try (an in-flight one is being tried).
_DUE = (JobState.QUEUED, JobState.DEFERRED)
_WAITING = (*_DUE, JobState.IN_FLIGHT)

EXIT_OK, EXIT_NOT_FOUND, EXIT_NO_STORE = 0, 1, 2


def run_queue(
    settings: GatewaySettings,
    action: str,
    job_id: int | None,
    *,
    clock: Clock,
    out: TextIO,
    err: TextIO,
) -> int:
    """Carry out one queue command; returns the exit status."""
    path = settings.storage.database
    if not path.is_file():
        err.write(f"gateway: no state store at {path} (has the gateway run with this config?)\n")
        return EXIT_NO_STORE
    conn = connect(path, readonly=action in ("list", "show"))
    try:
        if action == "list":
            return _list(conn, out)
        assert job_id is not None, "argparse requires an id for show, retry and delete"
        if action == "show":
            return _show(conn, job_id, out, err)
        change = retry_job if action == "retry" else delete_job
        if not change(conn, job_id, clock()):
            err.write(f"gateway: job {job_id} not found, or in flight or finished\n")
            return EXIT_NOT_FOUND
        done = "queued for delivery now" if action == "retry" else "deleted (kept as evidence)"
        out.write(f"job {job_id}: {done}\n")
        return EXIT_OK
    finally:
        conn.close()


def _list(conn: sqlite3.Connection, out: TextIO) -> int:
    jobs = list_jobs(conn)
    if not jobs:
        out.write("queue is empty\n")
        return EXIT_OK
    rows: list[tuple[str, ...]] = [
        ("ID", "STATE", "KIND", "REFERENCE", "TRIES", "NEXT (UTC)", "TO", "LAST REPLY")
    ]
    rows += [_row(job) for job in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    waiting = sum(1 for j in jobs if j.state in _WAITING)
    out.write(f"\n{len(jobs)} jobs, {waiting} waiting\n")
    return EXIT_OK


def _row(job: Job) -> tuple[str, ...]:
    waiting = job.state in _DUE
    return (
        str(job.id),
        job.state,
        job.kind,
        job.reference,
        str(job.attempts),
        _when(job.next_attempt_at) if waiting else "-",
        ", ".join(job.recipients),
        (job.last_reply or "")[:80],
    )


def _show(conn: sqlite3.Connection, job_id: int, out: TextIO, err: TextIO) -> int:
    job = read_job(conn, job_id)
    if job is None:
        err.write(f"gateway: no job {job_id}\n")
        return EXIT_NOT_FOUND
    fields = [
        ("job", str(job.id)),
        ("state", job.state),
        ("kind", job.kind),
        ("reference", job.reference),
        ("office", job.office or "-"),
        ("envelope from", f"<{job.mail_from}>"),
        ("envelope to", ", ".join(f"<{r}>" for r in job.recipients)),
        ("destination", job.destination or f"by delivery mode (route {job.route})"),
        ("queued at", _when(job.created_at)),
        ("next attempt", _when(job.next_attempt_at)),
        ("attempts", str(job.attempts)),
    ]
    for name, value in fields:
        out.write(f"{name:>14}: {value}\n")
    for number, attempt in enumerate(job_attempts(conn, job_id), start=1):
        code = attempt.code or "-"
        out.write(
            f"  attempt {number}: {_when(attempt.started_at)}  {attempt.outcome:<9}  "
            f"{attempt.host or '-'}  {code}  {attempt.reply}\n"
        )
    return EXIT_OK


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")
