"""`gateway audit list|summary|senders`: attempts and their counts as tables, JSON or CSV.

An aligned table for a terminal, JSON lines or CSV for other tools. The attempts come already
found and redacted (auditcmd.py), the counts from store/summaries.py; only text is made here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any, TextIO

from gateway.audit.story import when
from gateway.ops.auditrequest import Zones
from gateway.store.records import AttemptRecord
from gateway.store.summaries import DaySummary, SenderActivity
from gateway.vocabulary import format_notice_status

__all__ = ["write_attempts", "write_senders", "write_summary"]


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
    "node",
)


def _attempt_item(attempt: AttemptRecord, zones: Zones) -> dict[str, Any]:
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
        "notice": format_notice_status(attempt.notice),
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
        "node": attempt.node,  # None from the SQLite store: this host took every attempt
    }


def write_attempts(
    attempts: Sequence[AttemptRecord], output: str, zones: Zones, out: TextIO
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
        # A shared store's attempts came through several nodes: say which took each.
        node = ("NODE",) if any(a.node for a in attempts) else ()
        rows: list[tuple[str, ...]] = [(*header, "NOTICE", "SUBJECT", *node)]
        rows += [(*_attempt_row(a, zones), *(a.node or "-" for _ in node)) for a in attempts]
        _table(rows, out)
        out.write(f"\n{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}\n")


def _attempt_row(attempt: AttemptRecord, zones: Zones) -> tuple[str, ...]:
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
        format_notice_status(attempt.notice),
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


def write_summary(rows: Sequence[DaySummary], output: str, out: TextIO) -> None:
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


def write_senders(
    activities: Sequence[SenderActivity], output: str, zones: Zones, out: TextIO
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
