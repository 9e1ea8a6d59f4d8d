"""The record of attempts: finding what operators ask of the state store.

An attempt is one try to file by e-mail: a message received to the end of DATA (`messages`,
with its recipients' decisions and its jobs) or a recipient refused at RCPT (`refusals`).
The store is the source (indexed, and the evidence); the audit log adds what only it holds,
such as when the session opened and closed, and is read by audit/events.py, not here (the
store knows nothing of the log). One attempt's whole story is story.py's, and the counts
over many are summaries.py's. Queries take an open connection and return values; nothing
here writes, formats for a terminal or decides anything about mail.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Any

from gateway.mail.addresses import parse_address
from gateway.mail.redaction import Redactor
from gateway.vocabulary import (
    JobKind,
    NoticeStatus,
    NoticeStatusKind,
    Outcome,
    parse_notice_status,
)

__all__ = [
    "AttemptRecord",
    "Filters",
    "Kind",
    "find_attempts",
    "matches",
    "parse_bound",
    "reason_for",
    "redacted",
    "refusal_action",
]

# What a refusal at RCPT has: nothing is mailed after it, the reply is the answer.
_NO_NOTICE = NoticeStatus(NoticeStatusKind.NONE)


class Kind(StrEnum):
    MESSAGE = "message"  # received to the end of DATA
    REFUSAL = "refusal"  # refused at RCPT; no content was received


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt as the store records it, flattened for listing."""

    reference: str
    kind: Kind
    at: datetime  # UTC: arrival at the end of DATA, or the refusal
    session_id: str
    peer_ip: str
    helo: str | None
    sender: str  # "" is the null sender
    recipients: tuple[str, ...]
    office: str | None  # None: only postmaster was addressed
    phase: str | None
    action: str  # policy.Action, or "keep" for postmaster
    decision: str  # accepted, rejected, deferred (the end-of-DATA answer), or refused (RCPT)
    reason: str
    notice: NoticeStatus  # none, suppressed for a reason, or the notice job's state
    reply: str
    message_id: str | None = None
    subject: str | None = None
    size: int | None = None
    sha256: str | None = None
    attachments: tuple[str, ...] = ()
    a_numbers: tuple[str, ...] = ()
    node: str | None = None  # the MX node that took it (a shared store); None: this host

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2].lower()

    @property
    def is_refused(self) -> bool:
        return self.decision in ("rejected", "refused")

    @property
    def has_notice(self) -> bool:
        return self.notice.has_notice


@dataclass(frozen=True, slots=True)
class Filters:
    """What to look for; every field left None matches everything."""

    since: datetime | None = None  # inclusive, timezone-aware
    until: datetime | None = None  # exclusive, timezone-aware
    sender: str | None = None  # "" or "<>" for the null sender
    sender_domain: str | None = None
    address: str | None = None  # a retired address, matched as the gateway matches it
    office: str | None = None
    decision: str | None = None  # accepted/rejected/deferred/refused, or an action
    notice: str | None = None  # a state, "suppressed", or "suppressed:<why>"
    message_id: str | None = None  # with or without the angle brackets
    reference: str | None = None


def parse_bound(text: str, zone: tzinfo, *, is_end: bool = False) -> datetime:
    """A time bound from the command line: a date, or a date-time with or without offset.

    Without an offset it is taken in `zone`. A bare date means its midnight, or for the end
    of a range (`is_end`) the midnight after it, so that `--until 2017-09-13` takes that day in.

    Raises:
        ValueError: `text` is neither.
    """
    if len(text) == 10:
        day = date.fromisoformat(text)
        start = datetime.combine(day + timedelta(days=1 if is_end else 0), time(0), zone)
        return start.astimezone(UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Finding attempts

_MESSAGES = """
SELECT m.reference, m.received_at, m.session_id, m.peer_ip, m.helo, m.mail_from, m.message_id,
       m.subject, m.size, m.sha256, m.attachments, m.a_numbers, m.outcome, m.reply, m.notice,
       {refused_for} AS refused_for,
       r.recipient, r.office, r.phase, r.action, r.reason,
       (SELECT j.state FROM jobs j WHERE j.reference = m.reference
        AND j.kind NOT IN (?, ?) ORDER BY j.id DESC LIMIT 1) AS notice_state
FROM {source} m JOIN message_recipients r ON r.reference = m.reference
WHERE {where}
ORDER BY m.received_at, m.reference, r.rowid
"""
_REFUSALS = "SELECT * FROM refusals WHERE {where} ORDER BY at, reference"


def find_attempts(conn: sqlite3.Connection, filters: Filters) -> list[AttemptRecord]:
    """Every attempt matching `filters`, oldest first."""
    messages = _messages(conn, filters)
    refusals = [] if filters.message_id else _refusals(conn, filters)
    merged = sorted([*messages, *refusals], key=lambda a: (a.at, a.reference))
    return [a for a in merged if matches(a, filters)]


def _common_where(
    filters: Filters, *, at: str, sender: str, reference: str
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if filters.since is not None:
        where.append(f"{at} >= ?")
        params.append(filters.since.astimezone(UTC).isoformat(timespec="microseconds"))
    if filters.until is not None:
        where.append(f"{at} < ?")
        params.append(filters.until.astimezone(UTC).isoformat(timespec="microseconds"))
    if filters.sender is not None:
        where.append(f"{sender} = ? COLLATE NOCASE")
        params.append(_null_sender(filters.sender))
    if filters.sender_domain:
        # LIKE ignores ASCII case; the domain is matched exactly, not its subdomains.
        where.append(f"{sender} LIKE ? ESCAPE '\\'")
        params.append("%@" + _like_escape(filters.sender_domain.strip().lower()))
    if filters.reference:
        where.append(f"{reference} = ?")
        params.append(filters.reference.strip().upper())
    return where, params


def _messages(conn: sqlite3.Connection, filters: Filters) -> list[AttemptRecord]:
    where, params = _message_where(filters)
    sql = _MESSAGES.format(
        source="messages", where=" AND ".join(where) or "1", refused_for=_refused_for(conn)
    )
    # The subquery's kinds come first: they are the first placeholders in the statement.
    rows = conn.execute(sql, [JobKind.RELAY, JobKind.FORWARD, *params]).fetchall()
    return [_message(group) for group in _grouped(rows)]


def _message_where(filters: Filters) -> tuple[list[str], list[Any]]:
    """The SQL conditions on `messages m` the filters make (store/browse.py pages by them)."""
    where, params = _common_where(
        filters, at="m.received_at", sender="m.mail_from", reference="m.reference"
    )
    if filters.office:
        where.append(
            "EXISTS (SELECT 1 FROM message_recipients x"
            " WHERE x.reference = m.reference AND x.office = ?)"
        )
        params.append(filters.office)
    if filters.message_id:
        bare = filters.message_id.strip().strip("<>")
        where.append("m.message_id IN (?, ?)")
        params += [f"<{bare}>", bare]
    return where, params


def _refused_for(conn: sqlite3.Connection) -> str:
    # A store an older gateway made has no refused_for until the gateway next opens it.
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    return "m.refused_for" if "refused_for" in columns else "NULL"


def _grouped(rows: Sequence[sqlite3.Row]) -> Iterator[list[sqlite3.Row]]:
    group: list[sqlite3.Row] = []
    for row in rows:
        if group and row["reference"] != group[0]["reference"]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _message(rows: Sequence[sqlite3.Row]) -> AttemptRecord:
    first = rows[0]
    # Recipients of one transaction share one answer (smtp/handler.py defers the others), so the
    # first recipient with an office speaks for all; postmaster-only mail has none.
    lead = next((r for r in rows if r["office"] is not None), first)
    notice = parse_notice_status(first["notice"])
    if notice.kind is NoticeStatusKind.QUEUED and first["notice_state"]:
        notice = NoticeStatus(NoticeStatusKind(first["notice_state"]))
    return AttemptRecord(
        reference=first["reference"],
        kind=Kind.MESSAGE,
        at=datetime.fromisoformat(first["received_at"]),
        session_id=first["session_id"],
        peer_ip=first["peer_ip"],
        helo=first["helo"],
        sender=first["mail_from"],
        recipients=tuple(r["recipient"] for r in rows),
        office=lead["office"],
        phase=lead["phase"],
        action=lead["action"],
        decision=first["outcome"],
        reason=first["refused_for"] or reason_for(first["outcome"], notice, lead["reason"]),
        notice=notice,
        reply=first["reply"],
        message_id=first["message_id"],
        subject=first["subject"],
        size=first["size"],
        sha256=first["sha256"],
        attachments=tuple(a["filename"] for a in json.loads(first["attachments"])),
        a_numbers=tuple(json.loads(first["a_numbers"])),
    )


def reason_for(outcome: str, notice: NoticeStatus, policy_reason: str) -> str:
    """Why the attempt was answered as it was: the policy's reason, unless overridden."""
    # A loop or a rate limit overrides the policy's answer; the record says so in `notice`.
    why = notice.reason or ""
    if why.startswith("loop-") or (outcome == Outcome.DEFERRED and why.startswith("rate-limit-")):
        return why
    return str(policy_reason)


def _refusals(conn: sqlite3.Connection, filters: Filters) -> list[AttemptRecord]:
    where, params = _refusal_where(filters)
    rows = conn.execute(_REFUSALS.format(where=" AND ".join(where) or "1"), params).fetchall()
    return [_refusal(row) for row in rows]


def _refusal_where(filters: Filters) -> tuple[list[str], list[Any]]:
    """The SQL conditions on `refusals` the filters make (store/browse.py pages by them)."""
    where, params = _common_where(filters, at="at", sender="mail_from", reference="reference")
    if filters.office:
        where.append("office = ?")
        params.append(filters.office)
    return where, params


def _refusal(row: sqlite3.Row) -> AttemptRecord:
    return AttemptRecord(
        reference=row["reference"],
        kind=Kind.REFUSAL,
        at=datetime.fromisoformat(row["at"]),
        session_id=row["session_id"],
        peer_ip=row["peer_ip"],
        helo=row["helo"],
        sender=row["mail_from"],
        recipients=(row["recipient"],),
        office=row["office"],
        phase=row["phase"],
        action=refusal_action(row["phase"]),
        decision="refused",
        reason=row["reason"],
        notice=_NO_NOTICE,
        reply=row["reply"],
    )


def refusal_action(phase: str | None) -> str:
    """The action a refusal at RCPT stands for, from the phase the address was in."""
    return "gone" if phase == "decommissioned" else "reject-at-rcpt"


def matches(attempt: AttemptRecord, filters: Filters) -> bool:
    """The filters SQL cannot apply: address folding, decision and notice status."""
    if filters.address and not any(_same_address(r, filters.address) for r in attempt.recipients):
        return False
    if filters.decision and filters.decision not in (attempt.decision, attempt.action):
        return False
    return not filters.notice or _is_notice_wanted(attempt.notice, filters.notice)


def _is_notice_wanted(status: NoticeStatus, wanted: str) -> bool:
    # A bare kind ("suppressed") matches every reason; "suppressed:<why>" only that one.
    return str(status) == wanted or status.kind.value == wanted


def _same_address(recipient: str, wanted: str) -> bool:
    try:
        return parse_address(recipient) == parse_address(wanted)
    except ValueError:
        return recipient.lower() == wanted.lower()


def _null_sender(sender: str) -> str:
    return "" if sender.strip() in ("", "<>") else sender.strip()


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def redacted(attempt: AttemptRecord, redactor: Redactor) -> AttemptRecord:
    """The attempt as reports may show it: subject, file names and A-numbers redacted."""
    if not redactor.is_active:
        return attempt
    return replace(
        attempt,
        subject=redactor.optional(attempt.subject),
        attachments=tuple(redactor.text(a) for a in attempt.attachments),
        a_numbers=tuple(redactor.a_number_list(attempt.a_numbers)),
    )
