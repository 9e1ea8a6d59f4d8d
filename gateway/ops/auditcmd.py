"""`gateway audit ...`: the operator's questions about attempts, answered from the record.

list (the default), show REF, notice REF, summary, report --out FILE, senders and verify
[FILES]. Each
opens the state store read-only (it may run beside a serving gateway), asks records.py,
chain.py or report.py, and formats the answer: an aligned table for a terminal, JSON lines or
CSV for other tools. Subjects, file names and A-numbers are redacted as `[audit]` says unless
--unredacted is given (whoever can run this can read the store anyway; the default keeps
them out of what gets pasted into tickets and reports).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import __version__
from gateway.audit.chain import Anchor, Checkpoint, load_anchors, load_checkpoints
from gateway.audit.events import logged_events
from gateway.audit.report import Report, render_report
from gateway.audit.story import when, write_events, write_story
from gateway.audit.verify import (
    ChainSpan,
    LogLine,
    Verification,
    log_files,
    order_files,
    read_lines,
    verify,
)
from gateway.config import GatewaySettings
from gateway.errors import UsageError
from gateway.mail.redaction import Redactor
from gateway.store.db import connect
from gateway.store.outbox import JobState, find_jobs
from gateway.store.queries import read_message
from gateway.store.records import (
    AttemptRecord,
    DaySummary,
    Filters,
    SenderActivity,
    find_attempts,
    parse_bound,
    redacted,
    sender_activity,
    summarize,
    tell_story,
)
from gateway.store.sentmail import SentNotice, read_sent, sent_data

__all__ = ["ACTIONS", "AuditRequest", "run_audit"]

EXIT_OK, EXIT_FOUND_PROBLEMS, EXIT_USAGE = 0, 1, 2
ACTIONS = ("list", "show", "notice", "summary", "report", "senders", "verify")


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """One `gateway audit` command line, parsed."""

    action: str = "list"
    targets: tuple[str, ...] = ()  # show: the reference; verify: log files
    since: str | None = None
    until: str | None = None
    tz: str = "UTC"  # "UTC", "office" (each office's own zone) or an IANA name
    sender: str | None = None
    sender_domain: str | None = None
    address: str | None = None
    office: str | None = None
    decision: str | None = None
    notice: str | None = None
    message_id: str | None = None
    reference: str | None = None
    output: str = "table"
    out_file: Path | None = None
    logs: tuple[Path, ...] = ()
    unredacted: bool = False
    use_store: bool = True
    job: int | None = None  # notice: which of the reference's notices, when it has several
    notice_file: Path | None = None  # notice: where to write it (None: out_bytes)


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
        with _store(settings) as conn:
            if request.action == "notice":
                target = out_bytes if out_bytes is not None else out.buffer
                return _notice(request, conn, out=out, out_bytes=target, err=err)
            return _answer(settings, request, conn, now=now, out=out, err=err)
    except UsageError as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_USAGE


def _answer(
    settings: GatewaySettings,
    request: AuditRequest,
    conn: sqlite3.Connection,
    *,
    now: datetime,
    out: TextIO,
    err: TextIO,
) -> int:
    zones = _Zones.build(settings, request)
    redactor = Redactor() if request.unredacted else Redactor.from_settings(settings.audit)
    if request.action == "show":
        return _show(settings, request, conn, zones, redactor, out, err)
    attempts = [redacted(a, redactor) for a in find_attempts(conn, _filters(request, zones))]
    if request.action == "list":
        _write_attempts(attempts, request.output, zones, out)
    elif request.action == "summary":
        _write_summary(summarize(attempts, zone_of=zones.of), request.output, out)
    elif request.action == "senders":
        _write_senders(sender_activity(attempts), request.output, zones, out)
    else:
        return _report(settings, request, attempts, zones, redactor, now=now, out=out)
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


# ---------------------------------------------------------------------------------------------
# Time zones and filters


@dataclass(frozen=True, slots=True)
class _Zones:
    """How times are read from the command line and shown: one zone, or each office's."""

    bounds: tzinfo  # for --since/--until without an offset
    by_office: dict[str, tzinfo] = field(default_factory=dict)  # per office; else `bounds`
    label: str = "UTC"

    @classmethod
    def build(cls, settings: GatewaySettings, request: AuditRequest) -> _Zones:
        if request.tz.lower() != "office":
            return cls(_zone(request.tz), label=request.tz)
        offices = {o.name: o.zone for o in settings.offices}
        chosen = request.office or (settings.offices[0].name if len(offices) == 1 else None)
        if chosen is None:
            # Each office's rows are shown in its own zone; the bounds need one zone.
            if request.since or request.until:
                raise UsageError("--tz office with --since/--until needs --office NAME")
            return cls(UTC, dict(offices), "each office's zone")
        if chosen not in offices:
            raise UsageError(f"--tz office: no office {chosen!r} in the configuration")
        return cls(offices[chosen], dict(offices), str(offices[chosen]))

    def of(self, office: str | None) -> tzinfo:
        return self.by_office.get(office or "", self.bounds)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(
            f"--tz: unknown time zone {name!r} (UTC, office, or an IANA name)"
        ) from exc


def _filters(request: AuditRequest, zones: _Zones) -> Filters:
    return Filters(
        since=_bound("--since", request.since, zones.bounds, is_end=False),
        until=_bound("--until", request.until, zones.bounds, is_end=True),
        sender=request.sender,
        sender_domain=request.sender_domain,
        address=request.address,
        office=request.office,
        decision=request.decision,
        notice=request.notice,
        message_id=request.message_id,
        reference=request.reference,
    )


def _bound(option: str, text: str | None, zone: tzinfo, *, is_end: bool) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_bound(text, zone, is_end=is_end)
    except ValueError as exc:
        raise UsageError(
            f"{option}: {text!r} is not a date (2017-09-13) or date-time (2017-09-13T10:00)"
        ) from exc


# ---------------------------------------------------------------------------------------------
# Output: tables, JSON lines, CSV


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; the last one is left ragged."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


def _json_lines(items: Iterable[dict[str, Any]], out: TextIO) -> None:
    for item in items:
        out.write(json.dumps(item, ensure_ascii=False) + "\n")


def _csv(items: Sequence[dict[str, Any]], out: TextIO, *, columns: Sequence[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerow({k: _csv_cell(v) for k, v in item.items()})


def _csv_cell(value: Any) -> Any:
    # One cell per value: lists become "a; b", a spreadsheet's usual way.
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    return "" if value is None else value


_ATTEMPT_COLUMNS = (
    "reference",
    "kind",
    "at",
    "local_time",
    "sender",
    "sender_domain",
    "recipients",
    "office",
    "phase",
    "action",
    "decision",
    "reason",
    "notice",
    "reply",
    "message_id",
    "subject",
    "size",
    "sha256",
    "attachments",
    "a_numbers",
    "peer_ip",
    "helo",
    "session_id",
)


def _attempt_item(attempt: AttemptRecord, zones: _Zones) -> dict[str, Any]:
    return {
        "reference": attempt.reference,
        "kind": str(attempt.kind),
        "at": attempt.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "local_time": attempt.at.astimezone(zones.of(attempt.office)).isoformat(),
        "sender": attempt.sender,
        "sender_domain": attempt.sender_domain,
        "recipients": list(attempt.recipients),
        "office": attempt.office,
        "phase": attempt.phase,
        "action": attempt.action,
        "decision": attempt.decision,
        "reason": attempt.reason,
        "notice": attempt.notice,
        "reply": attempt.reply,
        "message_id": attempt.message_id,
        "subject": attempt.subject,
        "size": attempt.size,
        "sha256": attempt.sha256,
        "attachments": list(attempt.attachments),
        "a_numbers": list(attempt.a_numbers),
        "peer_ip": attempt.peer_ip,
        "helo": attempt.helo,
        "session_id": attempt.session_id,
    }


def _write_attempts(
    attempts: Sequence[AttemptRecord], output: str, zones: _Zones, out: TextIO
) -> None:
    items = [_attempt_item(a, zones) for a in attempts]
    if output == "json":
        _json_lines(items, out)
    elif output == "csv":
        _csv(items, out, columns=_ATTEMPT_COLUMNS)
    elif not attempts:
        out.write("no attempts match\n")
    else:
        header = (f"TIME ({zones.label})", "REFERENCE", "SENDER", "TO", "OFFICE", "DECISION")
        rows: list[tuple[str, ...]] = [(*header, "NOTICE", "SUBJECT")]
        rows += [_attempt_row(a, zones) for a in attempts]
        _table(rows, out)
        out.write(f"\n{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}\n")


def _attempt_row(attempt: AttemptRecord, zones: _Zones) -> tuple[str, ...]:
    to = attempt.recipients[0] + (
        f" +{len(attempt.recipients) - 1}" if len(attempt.recipients) > 1 else ""
    )
    subject = attempt.subject or ("-" if attempt.kind == "message" else "(refused at RCPT)")
    return (
        when(attempt.at, zones.of(attempt.office)),
        attempt.reference,
        f"<{attempt.sender}>",
        to,
        attempt.office or "-",
        attempt.decision
        if attempt.decision == attempt.action
        else f"{attempt.decision} ({attempt.action})",
        attempt.notice,
        subject[:60],
    )


_SUMMARY_COLUMNS = (
    "day",
    "office",
    "attempts",
    "received",
    "refused",
    "noticed",
    "suppressed",
    "delivered",
    "deferred",
    "failed",
)


def _summary_item(row: DaySummary) -> dict[str, Any]:
    item: dict[str, Any] = {name: getattr(row, name) for name in _SUMMARY_COLUMNS}
    item["day"] = row.day.isoformat()
    return item


def _write_summary(rows: Sequence[DaySummary], output: str, out: TextIO) -> None:
    if output == "json":
        _json_lines(
            ({**_summary_item(r), "refused_by_reason": dict(r.refused_by_reason)} for r in rows),
            out,
        )
        return
    if output == "csv":
        # One column per reason seen, so that a spreadsheet can sum them.
        reasons = sorted({reason for r in rows for reason, _ in r.refused_by_reason})
        items = [
            {
                **_summary_item(r),
                **{f"refused: {k}": dict(r.refused_by_reason).get(k, 0) for k in reasons},
            }
            for r in rows
        ]
        _csv(items, out, columns=[*_SUMMARY_COLUMNS, *(f"refused: {k}" for k in reasons)])
        return
    if not rows:
        out.write("no attempts match\n")
        return
    table: list[tuple[str, ...]] = [tuple(c.upper() for c in _SUMMARY_COLUMNS)]
    table += [tuple(str(v) for v in _summary_item(r).values()) for r in rows]
    _table([(*row, "") for row in table], out)
    by_reason: list[tuple[str, ...]] = [
        (f"  {r.day.isoformat()}", r.office or "-", str(n), reason)
        for r in rows
        for reason, n in r.refused_by_reason
    ]
    out.write("\nrefused, by reason:\n")
    if by_reason:
        _table(by_reason, out)
    else:
        out.write("  none\n")


_SENDER_COLUMNS = (
    "domain",
    "sender",
    "attempts",
    "first",
    "last",
    "notices_delivered",
    "senders",
    "senders_reached",
)


def _sender_item(activity: SenderActivity) -> dict[str, Any]:
    return {
        "domain": activity.domain,
        "sender": activity.sender,
        "attempts": activity.attempts,
        "first": activity.first.astimezone(UTC).isoformat(timespec="seconds"),
        "last": activity.last.astimezone(UTC).isoformat(timespec="seconds"),
        "notices_delivered": activity.notices_delivered,
        "senders": activity.senders,
        "senders_reached": activity.senders_reached,
    }


def _write_senders(
    activities: Sequence[SenderActivity], output: str, zones: _Zones, out: TextIO
) -> None:
    if output == "json":
        _json_lines((_sender_item(a) for a in activities), out)
        return
    if output == "csv":
        _csv([_sender_item(a) for a in activities], out, columns=_SENDER_COLUMNS)
        return
    if not activities:
        out.write("no attempts match\n")
        return
    rows: list[tuple[str, ...]] = [
        (
            "DOMAIN / SENDER",
            "ATTEMPTS",
            f"FIRST ({zones.bounds})",
            "LAST",
            "NOTICES DELIVERED",
            "REACHED",
        )
    ]
    for a in activities:
        name = (a.domain or "(null sender)") if a.is_domain else f"  {a.sender}"
        reached = (
            f"{a.senders_reached} of {a.senders} sender{'s' if a.senders != 1 else ''}"
            if a.is_domain
            else ("yes" if a.senders_reached else "no")
        )
        zone = zones.bounds
        rows.append(
            (
                name,
                str(a.attempts),
                when(a.first, zone),
                when(a.last, zone),
                str(a.notices_delivered),
                reached,
            )
        )
    _table(rows, out)


# ---------------------------------------------------------------------------------------------
# show: the whole story of one attempt


def _show(
    settings: GatewaySettings,
    request: AuditRequest,
    conn: sqlite3.Connection,
    zones: _Zones,
    redactor: Redactor,
    out: TextIO,
    err: TextIO,
) -> int:
    if len(request.targets) != 1:
        raise UsageError("audit show needs one reference (see gateway audit list)")
    reference = request.targets[0].strip().upper()
    story = tell_story(conn, reference)
    files, note = _logs_for_show(settings, request)
    events = logged_events(lambda: _lines(files), reference) if files else []
    if story is None:
        err.write(f"gateway: no attempt {reference} in the store\n")
        if events:  # purged by retention, or recorded in another store: the log still tells
            write_events(events, files, note, out)
        return EXIT_FOUND_PROBLEMS
    story = replace(
        story,
        attempt=redacted(story.attempt, redactor),
        attachments=tuple(
            replace(a, filename=redactor.text(a.filename)) for a in story.attachments
        ),
    )
    write_story(story, zones.of(story.attempt.office), out)
    write_events(events, files, note, out)
    return EXIT_OK


def _logs_for_show(settings: GatewaySettings, request: AuditRequest) -> tuple[list[Path], str]:
    if request.logs:
        return order_files(request.logs), ""
    if settings.audit.log == "-":
        return [], "the log goes to standard output; give --log FILE to include a saved copy"
    return log_files(Path(settings.audit.log)), ""


def _lines(files: Sequence[Path]) -> Iterator[LogLine]:
    for path in files:
        yield from read_lines(path)


# ---------------------------------------------------------------------------------------------
# notice: the exact bytes the sender was sent


def _notice(
    request: AuditRequest,
    conn: sqlite3.Connection,
    *,
    out: TextIO,
    out_bytes: BinaryIO,
    err: TextIO,
) -> int:
    """Write one kept notice as sent: to --output FILE, or to standard output.

    Not redacted: it is the evidence, and a redacted copy would not match its SHA-256.
    """
    if len(request.targets) != 1:
        raise UsageError("audit notice needs one reference (see gateway audit list)")
    reference = request.targets[0].strip().upper()
    kept = _chosen_notice(read_sent(conn, reference), request.job)
    if kept is None:
        err.write(f"gateway: {_why_no_notice(conn, reference, request.job)}\n")
        return EXIT_FOUND_PROBLEMS
    data = sent_data(conn, reference, kept.job_id) or b""
    if hashlib.sha256(data).hexdigest() != kept.sha256:
        err.write(f"gateway: the notice kept for {reference} does not match its SHA-256\n")
        return EXIT_FOUND_PROBLEMS
    if request.notice_file is None:
        out_bytes.write(data)
        out_bytes.flush()
        return EXIT_OK
    _write_atomically(request.notice_file, data)
    out.write(
        f"wrote {request.notice_file}: {kept.kind} of job {kept.job_id}, {kept.size:,} bytes,"
        f" Message-ID {kept.message_id or '(none)'}, SHA-256 {kept.sha256}\n"
    )
    return EXIT_OK


def _chosen_notice(kept: Sequence[SentNotice], job: int | None) -> SentNotice | None:
    """The notice asked for: the one with --job, or the only one.

    Raises:
        UsageError: there are several and no --job says which.
    """
    if job is not None:
        return next((k for k in kept if k.job_id == job), None)
    if len(kept) > 1:
        which = ", ".join(f"job {k.job_id} ({k.kind})" for k in kept)
        raise UsageError(f"{kept[0].reference} has {len(kept)} notices kept, {which}: give --job")
    return kept[0] if kept else None


def _why_no_notice(conn: sqlite3.Connection, reference: str, job: int | None) -> str:
    if read_message(conn, reference) is None:
        return f"no attempt {reference} in the store (or its record and notice were purged)"
    if job is not None:
        return f"no notice of job {job} is kept for {reference}"
    delivered = find_jobs(conn, reference=reference, state=JobState.DELIVERED)
    if any(job.kind != "relay" for job in delivered):
        return (
            f"the notice sent for {reference} is no longer kept (purged after"
            " [storage] notice_retention_days, or sent before notices were kept)"
        )
    return f"no notice has been sent for {reference} (see gateway audit show {reference})"


# ---------------------------------------------------------------------------------------------
# report: the HTML page


def _report(
    settings: GatewaySettings,
    request: AuditRequest,
    attempts: Sequence[AttemptRecord],
    zones: _Zones,
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
    _write_atomically(request.out_file, render_report(report, rows))
    total, days = sum(r.attempts for r in rows), len({r.day for r in rows})
    out.write(f"wrote {request.out_file}: {total} attempts over {days} day{'s' * (days != 1)}\n")
    return EXIT_OK


def _period(request: AuditRequest, rows: Sequence[DaySummary], zones: _Zones) -> str:
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


def _write_atomically(path: Path, content: str | bytes) -> None:
    """Write the whole file or nothing: a report or notice half written would mislead."""
    handle, temporary = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# verify: the hash chain


def _verify(settings: GatewaySettings, request: AuditRequest, out: TextIO) -> int:
    files = _files_to_verify(settings, request)
    anchors, checkpoints = _chain_records(settings) if request.use_store else (None, None)
    try:
        result = verify(_lines(files), anchors=anchors, checkpoints=checkpoints)
    except (OSError, EOFError) as exc:
        raise UsageError(f"cannot read the log: {exc}") from exc
    _write_verification(result, files, has_store=anchors is not None, out=out)
    return EXIT_OK if result.is_intact else EXIT_FOUND_PROBLEMS


def _files_to_verify(settings: GatewaySettings, request: AuditRequest) -> list[Path]:
    if request.targets:
        paths = [Path(t) for t in request.targets]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UsageError(f"no such file: {', '.join(missing)}")
        return order_files(paths)
    if settings.audit.log == "-":
        raise UsageError(
            "the log goes to standard output: save it (docker logs gateway > saved.log)"
            " and give the file: gateway audit verify saved.log"
        )
    files = log_files(Path(settings.audit.log))
    if not files:
        raise UsageError(f"no audit log at {settings.audit.log}")
    return files


def _chain_records(
    settings: GatewaySettings,
) -> tuple[dict[str, Anchor] | None, dict[str, list[Checkpoint]] | None]:
    path = settings.storage.database
    if not path.is_file():
        return None, None
    with contextlib.closing(connect(path, readonly=True)) as conn:
        try:
            return load_anchors(conn), load_checkpoints(conn)
        except sqlite3.OperationalError:
            return {}, {}  # a store from before the chain: nothing is anchored in it


def _write_verification(
    result: Verification, files: Sequence[Path], *, has_store: bool, out: TextIO
) -> None:
    out.write(f"checked, oldest first: {', '.join(str(f) for f in files)}\n")
    for span in result.chains:
        out.write(f"  {_span_text(span)}\n")
    if result.unchained:
        lines = "1 line carries" if result.unchained == 1 else f"{result.unchained} lines carry"
        out.write(
            f"  note: {lines} no chain, before the first one (written before the gateway"
            " chained its log)\n"
        )
    if not has_store:
        out.write("  note: no state store; the chains' beginnings and ends were not checked\n")
    if result.is_intact:
        out.write(f"OK: {result.records} records, chain intact\n")
        return
    first, *rest = result.findings
    out.write(f"FAILED: {first}\n")
    for finding in rest[:_MAX_FINDINGS]:
        out.write(f"  and {finding}\n")
    if len(rest) > _MAX_FINDINGS:
        out.write(f"  and {len(rest) - _MAX_FINDINGS} more problems\n")


_MAX_FINDINGS = 50


def _span_text(span: ChainSpan) -> str:
    text = f"chain {span.chain}: seq {span.first_seq}-{span.last_seq} ({span.records} records)"
    if span.first_seq > 1:
        text += f"; seq 1-{span.first_seq - 1} are in earlier files, not given"
    elif span.anchored:
        text += "; its first record matches its anchor in the store"
    if span.last_checkpoint is not None:
        after = span.last_seq - span.last_checkpoint
        text += f"; {span.checkpoints_matched} store checkpoints match, the last at seq"
        text += f" {span.last_checkpoint}"
        if after:
            text += f" ({after} later record{'s' if after != 1 else ''} not yet checkpointed)"
    return text
