"""`gateway audit ...`: the operator's questions about attempts, answered from the record.

list (the default), show REF, notice REF, summary, report --out FILE, senders and verify
[FILES]. Each reads the state store through an AuditReader (the SQLite file read-only, beside
a serving gateway, or every node's records in the shared PostgreSQL store), asks the store
(records, story, summaries), and hands the answer to the module that writes it:
audittables.py (an aligned table for a terminal, JSON lines or CSV for other tools),
auditevidence.py (show, notice), auditreport.py and auditverify.py. The request and what the
actions share are auditrequest.py's. Subjects, file names and A-numbers are redacted as
`[audit]` says unless --unredacted is given (whoever can run this can read the store anyway;
the default keeps them out of what gets pasted into tickets and reports).
"""

from __future__ import annotations

import contextlib
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
from gateway.store.backend import StoreLocation, open_audit_reader
from gateway.store.interface import AuditReader
from gateway.store.records import AttemptRecord, redacted
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
        if request.action == "verify":
            return _verify(settings, request, out)
        with _reader(settings) as reader:
            if request.action == "notice":
                target = out_bytes if out_bytes is not None else out.buffer
                return write_kept_notice(request, reader, out=out, out_bytes=target, err=err)
            return _answer(settings, request, reader, now=now, out=out, err=err)
    except UsageError as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_USAGE
    except StoreError as exc:  # the store is down or refuses us: say which, no trace
        err.write(f"gateway: cannot read the store: {exc}\n")
        return EXIT_FAILED


def _answer(
    settings: GatewaySettings,
    request: AuditRequest,
    reader: AuditReader,
    *,
    now: datetime,
    out: TextIO,
    err: TextIO,
) -> int:
    zones = Zones.build(settings, request)
    redactor = Redactor() if request.unredacted else Redactor.from_settings(settings.audit)
    if request.action == "show":
        return show_attempt(settings, request, reader, zones, redactor, out, err)
    found = reader.find_attempts(attempt_filters(request, zones))
    return _write(settings, request, found, zones, redactor, now=now, out=out)


def _verify(settings: GatewaySettings, request: AuditRequest, out: TextIO) -> int:
    # Without a store (none yet, or --no-store) the chains' ends are not checked against one.
    if not request.use_store or not _has_store(settings):
        return verify_logs(settings, request, None, out)
    with _reader(settings) as reader:
        return verify_logs(settings, request, reader, out)


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


def _has_store(settings: GatewaySettings) -> bool:
    return StoreLocation.from_settings(settings).may_exist()


@contextlib.contextmanager
def _reader(settings: GatewaySettings) -> Iterator[AuditReader]:
    if not _has_store(settings):
        path = settings.storage.database
        raise UsageError(f"no state store at {path} (has the gateway run with this config?)")
    reader = open_audit_reader(StoreLocation.from_settings(settings))
    try:
        yield reader
    finally:
        reader.close()
