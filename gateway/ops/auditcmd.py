"""`gateway audit ...`: the operator's questions about attempts, answered from the record.

list (the default), show REF, notice REF, summary, report --out FILE, senders and verify
[FILES]. Each opens the state store read-only (it may run beside a serving gateway), asks the
store (records, story, summaries), and hands the answer to the module that writes it:
audittables.py (an aligned table for a terminal, JSON lines or CSV for other tools),
auditevidence.py (show, notice), auditreport.py and auditverify.py. The request and what the
actions share are auditrequest.py's. Subjects, file names and A-numbers are redacted as
`[audit]` says unless --unredacted is given (whoever can run this can read the store anyway;
the default keeps them out of what gets pasted into tickets and reports).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO, TextIO

from gateway.config import GatewaySettings
from gateway.errors import StoreError
from gateway.mail.redaction import Redactor
from gateway.ops.auditevidence import show_attempt, write_kept_notice
from gateway.ops.auditreport import write_report
from gateway.ops.auditrequest import (
    ACTIONS,
    EXIT_OK,
    EXIT_USAGE,
    AuditRequest,
    UsageError,
    Zones,
    attempt_filters,
)
from gateway.ops.audittables import write_attempts, write_senders, write_summary
from gateway.ops.auditverify import verify_logs
from gateway.store.backend import StoreLocation
from gateway.store.db import connect
from gateway.store.records import AttemptRecord, Filters, find_attempts, redacted
from gateway.store.summaries import sender_activity, summarize

EXIT_FAILED = 1
# AuditRequest and ACTIONS are re-exported: cli.py and the tests build requests from here.
__all__ = ["ACTIONS", "AuditRequest", "run_audit"]


def run_audit(
    settings: GatewaySettings,
    request: AuditRequest,
    *,
    now: datetime,
    out: TextIO,
    err: TextIO,
    out_bytes: BinaryIO | None = None,
) -> int:
    """Answer one audit command; returns the exit status. `out_bytes` takes what is
    written byte for byte (audit notice) and defaults to `out`'s buffer."""
    try:
        if settings.storage.is_shared:
            return _answer_shared(settings, request, now=now, out=out)
        if request.action == "verify":
            return verify_logs(settings, request, out)
        with _store(settings) as conn:
            if request.action == "notice":
                target = out_bytes if out_bytes is not None else out.buffer
                return write_kept_notice(request, conn, out=out, out_bytes=target, err=err)
            return _answer(settings, request, conn, now=now, out=out, err=err)
    except UsageError as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_USAGE
    except StoreError as exc:  # the shared store is down or refuses us: say which, no trace
        err.write(f"gateway: cannot read the store: {exc}\n")
        return EXIT_FAILED


def _answer(
    settings: GatewaySettings,
    request: AuditRequest,
    conn: sqlite3.Connection,
    *,
    now: datetime,
    out: TextIO,
    err: TextIO,
) -> int:
    zones = Zones.build(settings, request)
    redactor = Redactor() if request.unredacted else Redactor.from_settings(settings.audit)
    if request.action == "show":
        return show_attempt(settings, request, conn, zones, redactor, out, err)
    found = find_attempts(conn, attempt_filters(request, zones))
    return _write(settings, request, found, zones, redactor, now=now, out=out)


def _answer_shared(
    settings: GatewaySettings, request: AuditRequest, *, now: datetime, out: TextIO
) -> int:
    # Every node's attempts from the shared store; show, notice and verify read more than
    # the attempts (evidence, kept bytes, each node's log) and are not on PostgreSQL yet.
    if request.action not in _SHARED_ACTIONS:
        raise UsageError(
            f"`gateway audit {request.action}` reads only the SQLite store so far, and"
            ' [storage] url names PostgreSQL; see docs/postgresql.md, "Next"'
        )
    zones = Zones.build(settings, request)
    redactor = Redactor() if request.unredacted else Redactor.from_settings(settings.audit)
    found = _find_shared(settings, attempt_filters(request, zones))
    return _write(settings, request, found, zones, redactor, now=now, out=out)


_SHARED_ACTIONS = frozenset({"list", "summary", "senders", "report"})


def _find_shared(settings: GatewaySettings, filters: Filters) -> list[AttemptRecord]:
    from gateway.store.postgres.records import find_shared_attempts

    dsn = StoreLocation.from_settings(settings).dsn
    assert dsn is not None  # is_shared
    return find_shared_attempts(dsn, filters)


def _write(
    settings: GatewaySettings,
    request: AuditRequest,
    found: list[AttemptRecord],
    zones: Zones,
    redactor: Redactor,
    *,
    now: datetime,
    out: TextIO,
) -> int:
    attempts = [redacted(a, redactor) for a in found]
    if request.action == "list":
        write_attempts(attempts, request.output, zones, out)
    elif request.action == "summary":
        write_summary(summarize(attempts, zone_of=zones.of), request.output, out)
    elif request.action == "senders":
        write_senders(sender_activity(attempts), request.output, zones, out)
    else:
        return write_report(settings, request, attempts, zones, redactor, now=now, out=out)
    return EXIT_OK


@contextlib.contextmanager
def _store(settings: GatewaySettings) -> Iterator[sqlite3.Connection]:
    path = settings.storage.database
    if not path.is_file():
        raise UsageError(f"no state store at {path} (has the gateway run with this config?)")
    conn = connect(path, readonly=True)
    try:
        yield conn
    finally:
        conn.close()
