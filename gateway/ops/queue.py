"""`gateway queue ...`: the outbox as an operator sees it, with Postfix's queue tools as model.

list (mailq: what is still to be sent, or filtered), show ID (postqueue -i's view of one job),
show-message ID (postcat -q: the mail as it was or would be sent), flush (postqueue -f),
hold and release (postsuper -h/-H), retry and delete (postsuper -r/-d), by ID or by filter.
Works on the store directly (the SQLite file, or the PostgreSQL every node shares), so it
runs beside serving gateways; every change is one transaction that also journals the action,
which a serving gateway logs as an audit event (store/queueactions.py). On a shared store the
listing names the node that queued each job and the one whose attempt is out. This module
words the output through interface.OperatorQueue; it decides nothing about delivery.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import BinaryIO, TextIO

from gateway.clock import Clock
from gateway.config import GatewaySettings
from gateway.errors import StoreError
from gateway.store.backend import StoreLocation, open_queue
from gateway.store.interface import OperatorQueue
from gateway.store.outbox import PENDING_STATES
from gateway.store.queueactions import JobFilter, QueueAction, QueuedJob, lease_node
from gateway.store.schema import SchemaVersionError
from gateway.vocabulary import JobState

__all__ = ["QueueRequest", "add_queue_arguments", "queue_request", "run_queue"]

# Jobs due for a try (an in-flight one is being tried; a held one waits for its release).
_DUE = (JobState.QUEUED, JobState.DEFERRED)

EXIT_OK, EXIT_NOT_FOUND, EXIT_NO_STORE, EXIT_USAGE = 0, 1, 2, 2
EXIT_OTHER_SCHEMA = 1  # the store is at another schema version than this code
EXIT_STORE = 1  # the store could not be read or written (a shared store away, say)

_READING = ("list", "show", "show-message")
# What each action did, as the line printed for each job it changed.
_DONE = {
    QueueAction.HOLD: "held (not sent until released)",
    QueueAction.RELEASE: "released",
    QueueAction.FLUSH: "due now",
    QueueAction.RETRY: "queued for delivery now",
    QueueAction.DELETE: "deleted (kept as evidence)",
}
_PAST = {
    QueueAction.HOLD: "held",
    QueueAction.RELEASE: "released",
    QueueAction.FLUSH: "flushed",
    QueueAction.RETRY: "retried",
    QueueAction.DELETE: "deleted",
}
_APPLIES_TO = {
    QueueAction.HOLD: "queued, deferred or in flight",
    QueueAction.RELEASE: "held",
    QueueAction.FLUSH: "deferred",
    QueueAction.RETRY: "queued, deferred or failed",
    QueueAction.DELETE: "queued, deferred, failed or held (and not in flight)",
}


class UsageError(Exception):
    """The command line asks for something that cannot be done as asked."""


@dataclass(frozen=True, slots=True)
class QueueRequest:
    """One `gateway queue` command, as parsed."""

    action: str
    job_ids: tuple[int, ...] = ()
    states: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    since: str | None = None
    recipient: str | None = None
    every: bool = False  # --all
    yes: bool = False
    message: bool = False  # show --message


def add_queue_arguments(queue: argparse.ArgumentParser) -> None:
    """The `gateway queue` arguments (cli.py owns the parser; the queue's words live here)."""
    queue.add_argument(
        "action",
        choices=["list", "show", "show-message", "flush", "hold", "release", "retry", "delete"],
    )
    queue.add_argument(
        "job_ids", nargs="*", type=int, metavar="ID", help="job numbers (from queue list)"
    )
    which = queue.add_argument_group("which jobs (list: default what is still to be sent)")
    which.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="S[,S]",
        help="queued, in-flight, deferred, held, failed, delivered, deleted",
    )
    which.add_argument(
        "--kind", action="append", default=[], metavar="K[,K]", help="notice, advisory, relay, ..."
    )
    which.add_argument("--since", metavar="DATE", help="created on or after (UTC date or time)")
    which.add_argument("--recipient", metavar="ADDRESS", help="one of the envelope recipients")
    which.add_argument(
        "--all",
        action="store_true",
        dest="every",
        help="list: every job ever; hold, release, retry, delete: every job it applies to",
    )
    queue.add_argument("--yes", action="store_true", help="delete: really delete by filter")
    queue.add_argument(
        "--message", action="store_true", help="show: print the mail itself (as show-message)"
    )


def queue_request(args: argparse.Namespace) -> QueueRequest:
    """The request from cli.py's parsed arguments."""
    return QueueRequest(
        action=args.action,
        job_ids=tuple(args.job_ids),
        states=_split(args.state),
        kinds=_split(args.kind),
        since=args.since,
        recipient=args.recipient,
        every=args.every,
        yes=args.yes,
        message=args.message,
    )


def run_queue(
    settings: GatewaySettings,
    request: QueueRequest,
    *,
    clock: Clock,
    out: TextIO,
    err: TextIO,
    out_bytes: BinaryIO | None = None,
) -> int:
    """Carry out one queue command; returns the exit status."""
    location = StoreLocation.from_settings(settings)
    if not location.may_exist():
        err.write(
            f"gateway: no state store at {location.database} (has the gateway run with this"
            " config?)\n"
        )
        return EXIT_NO_STORE
    try:
        which = _filter(request)
        queue = open_queue(location, writable=request.action not in _READING)
    except UsageError as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_USAGE
    except StoreError as exc:
        err.write(f"gateway: cannot open the store: {exc}\n")
        return EXIT_STORE
    try:
        return _dispatch(
            settings,
            queue,
            request,
            which,
            clock=clock,
            out=out,
            err=err,
            out_bytes=out_bytes or sys.stdout.buffer,
        )
    except UsageError as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_USAGE
    except SchemaVersionError as exc:
        err.write(f"gateway: cannot change the queue in {location.describe()}: {exc}\n")
        return EXIT_OTHER_SCHEMA
    except StoreError as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_STORE
    finally:
        queue.close()


def _dispatch(
    settings: GatewaySettings,
    queue: OperatorQueue,
    request: QueueRequest,
    which: JobFilter,
    *,
    clock: Clock,
    out: TextIO,
    err: TextIO,
    out_bytes: BinaryIO,
) -> int:
    if request.action == "list":
        return _list(queue, request, which, out)
    if request.action in ("show", "show-message"):
        job_id = _one_id(request)
        if request.action == "show-message" or request.message:
            from gateway.ops.queuemail import write_job_message

            return write_job_message(settings, queue, job_id, now=clock(), out=out_bytes, err=err)
        return _show(queue, job_id, out, err)
    action = QueueAction(request.action)
    if not (
        request.job_ids or request.every or _has_filter(request) or action is QueueAction.FLUSH
    ):
        raise UsageError(
            f"queue {action} needs job IDs, a filter (--state, --kind, --since, --recipient)"
            " or --all"
        )
    if action is QueueAction.DELETE and not request.job_ids and not request.yes:
        return _confirm_delete(queue, which, err)
    changed = queue.change_jobs(action, which, now=clock(), operator=_operator())
    return _report(queue, action, request, changed, out, err)


def _filter(request: QueueRequest) -> JobFilter:
    known = {str(s) for s in JobState}
    unknown = [s for s in request.states if s not in known]
    if unknown:
        raise UsageError(f"unknown state {unknown[0]!r} (one of {', '.join(sorted(known))})")
    return JobFilter(
        ids=request.job_ids,
        states=request.states,
        kinds=request.kinds,
        since=None if request.since is None else _since(request.since),
        recipient=request.recipient,
    )


def _since(text: str) -> datetime:
    """A date (its midnight) or a date-time; UTC unless it says otherwise."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--since {text!r} is not a date (2026-05-01) or time") from exc
    if len(text) <= 10:
        at = datetime.combine(at.date(), time())
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _has_filter(request: QueueRequest) -> bool:
    return bool(request.states or request.kinds or request.since or request.recipient)


def _one_id(request: QueueRequest) -> int:
    if len(request.job_ids) != 1:
        raise UsageError(f"queue {request.action} needs one job ID (see gateway queue list)")
    return request.job_ids[0]


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name nor passwd entry (a bare container uid)
        return "unknown"


def _split(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


# ---------------------------------------------------------------------------------------------
# Changes


def _confirm_delete(queue: OperatorQueue, which: JobFilter, err: TextIO) -> int:
    jobs = queue.matching_jobs(QueueAction.DELETE, which)
    ids = ", ".join(str(job.id) for job in jobs) or "none"
    err.write(
        f"gateway: {len(jobs)} jobs match ({ids}); nothing deleted."
        " Run again with --yes to delete them.\n"
    )
    return EXIT_NOT_FOUND


def _report(
    queue: OperatorQueue,
    action: QueueAction,
    request: QueueRequest,
    changed: list[int],
    out: TextIO,
    err: TextIO,
) -> int:
    for job_id in changed:
        out.write(f"job {job_id}: {_DONE[action]}\n")
    missed = [i for i in request.job_ids if i not in changed]
    for job_id in missed:
        err.write(f"gateway: {_missed(queue.read_job(job_id), job_id, action)}\n")
    if not request.job_ids:
        out.write(f"{len(changed)} jobs {_PAST[action]} (of those {_APPLIES_TO[action]})\n")
    return EXIT_NOT_FOUND if missed else EXIT_OK


def _missed(found: QueuedJob | None, job_id: int, action: QueueAction) -> str:
    """Why a job named by ID was not changed; an attempt under way is named, with its node."""
    if found is not None and found.lease_owner is not None and action is QueueAction.DELETE:
        return (
            f"job {job_id} not deleted: its attempt is under way on"
            f" {lease_node(found.lease_owner)} (lease until {_when(found.lease_until)} UTC);"
            " delete it once that attempt is over, or hold it now"
        )
    return f"job {job_id} not found, or not {_APPLIES_TO[action]}"


# ---------------------------------------------------------------------------------------------
# Reading


def _list(queue: OperatorQueue, request: QueueRequest, which: JobFilter, out: TextIO) -> int:
    pending = not (request.every or request.states)
    jobs = queue.list_jobs(
        JobFilter(
            ids=which.ids,
            states=PENDING_STATES if pending else which.states,
            kinds=which.kinds,
            since=which.since,
            recipient=which.recipient,
        ),
    )
    if not jobs:
        out.write("queue is empty\n" if pending and not _has_filter(request) else "no jobs match\n")
        return EXIT_OK
    # A shared store's jobs come from several nodes: say which queued each, and whose
    # attempt is out (the SQLite file has one node, and no node column).
    is_shared = any(queued.node is not None for queued in jobs)
    head: tuple[str, ...] = ("ID", "STATE", "KIND", "REFERENCE", "TRIES", "NEXT (UTC)")
    head += ("NODE", "LEASE") if is_shared else ()
    rows: list[tuple[str, ...]] = [(*head, "TO", "LAST REPLY")]
    rows += [_row(queued, is_shared=is_shared) for queued in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    waiting = sum(1 for queued in jobs if queued.job.state in PENDING_STATES)
    out.write(f"\n{len(jobs)} jobs, {waiting} waiting\n")
    return EXIT_OK


def _row(queued: QueuedJob, *, is_shared: bool) -> tuple[str, ...]:
    job = queued.job
    cells: tuple[str, ...] = (
        str(job.id),
        job.state,
        job.kind,
        job.reference,
        str(job.attempts),
        _when(job.next_attempt_at) if job.state in _DUE else "-",
    )
    if is_shared:
        owner = queued.lease_owner
        cells += (queued.node or "-", "-" if owner is None else lease_node(owner))
    return (*cells, ", ".join(job.recipients), (job.last_reply or "")[:80])


def _show(queue: OperatorQueue, job_id: int, out: TextIO, err: TextIO) -> int:
    queued = queue.read_job(job_id)
    if queued is None:
        err.write(f"gateway: no job {job_id}\n")
        return EXIT_NOT_FOUND
    job = queued.job
    fields = [
        ("job", str(job.id)),
        ("state", job.state),
        ("kind", job.kind),
        ("reference", job.reference),
        *([] if queued.node is None else [("queued on", queued.node)]),
        ("office", job.office or "-"),
        ("envelope from", f"<{job.mail_from}>"),
        ("envelope to", ", ".join(f"<{r}>" for r in job.recipients)),
        ("destination", job.destination or f"by delivery mode (route {job.route})"),
        ("queued at", _when(job.created_at)),
        ("next attempt", _when(job.next_attempt_at)),
        ("attempts", str(job.attempts)),
    ]
    if queued.lease_owner is not None:
        until = _when(queued.lease_until)
        fields.append(("attempt out", f"{queued.lease_owner} (lease until {until} UTC)"))
    for name, value in fields:
        out.write(f"{name:>14}: {value}\n")
    for number, attempt in enumerate(queue.job_attempts(job_id), start=1):
        by = "" if attempt.node is None else f"by {attempt.node}  "
        out.write(
            f"  attempt {number}: {_when(attempt.started_at)}  {attempt.outcome:<9}  {by}"
            f"{attempt.host or '-'}  {attempt.code or '-'}  {attempt.reply}\n"
        )
    return EXIT_OK


def _when(at: datetime | None) -> str:
    # A shared store's times come in the server's time zone: shown in UTC, as the file's are.
    if at is None:
        return "-"
    return (at.astimezone(UTC) if at.tzinfo else at).strftime("%Y-%m-%d %H:%M:%S")
