"""`gateway audit report --out FILE`: the day-by-day counts as one HTML page.

The counts are store/summaries.py's, the page audit/report.py's; this writes it whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from gateway import __version__
from gateway.audit.report import Report, render_report
from gateway.config import GatewaySettings
from gateway.mail.redaction import Redactor
from gateway.ops.auditrequest import EXIT_OK, AuditRequest, UsageError, Zones, write_atomically
from gateway.store.records import AttemptRecord
from gateway.store.summaries import DaySummary, summarize

__all__ = ["write_report"]


def write_report(
    settings: GatewaySettings,
    request: AuditRequest,
    attempts: Sequence[AttemptRecord],
    zones: Zones,
    redactor: Redactor,
    *,
    now: datetime,
    out: TextIO,
) -> int:
    if request.out_file is None:
        raise UsageError("audit report needs --out FILE.html")
    rows = summarize(attempts, zone_of=zones.of)
    offices = {o.name: o.title for o in settings.offices}
    if request.office:
        offices = {k: v for k, v in offices.items() if k == request.office} or {
            request.office: request.office
        }
    report = Report(
        title="Attempts to file by e-mail at retired addresses",
        period=_period(request, rows, zones),
        generated_at=now,
        version=__version__,
        offices=offices,
        redaction=_redaction_note(redactor),
    )
    write_atomically(request.out_file, render_report(report, rows))
    total, days = sum(r.attempts for r in rows), len({r.day for r in rows})
    out.write(f"wrote {request.out_file}: {total} attempts over {days} day{'s' * (days != 1)}\n")
    return EXIT_OK


def _period(request: AuditRequest, rows: Sequence[DaySummary], zones: Zones) -> str:
    first = request.since or (rows[0].day.isoformat() if rows else "the beginning")
    last = request.until or (rows[-1].day.isoformat() if rows else "today")
    return f"{first} to {last} (days in {zones.label})"


def _redaction_note(redactor: Redactor) -> str:
    if not redactor.is_active:
        return ""
    return (
        "This page shows no subjects or file names; A-numbers are redacted in the audit log and"
        " in what gateway audit prints (the state store keeps them)."
    )
