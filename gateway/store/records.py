"""The record of attempts: what operators ask of the state store.

An attempt is one try to file by e-mail: a message received to the end of DATA (`messages`,
with its recipients' decisions and its jobs) or a recipient refused at RCPT (`refusals`).
The store is the source (indexed, and the evidence); the audit log adds what only it holds,
such as when the session opened and closed, and is read by audit/events.py, not here (the
store knows nothing of the log). Queries take an open connection and return values;
summaries are pure functions of the attempts. Nothing here writes, formats for a terminal or
decides anything about mail.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Any

from gateway.mail.addresses import parse_address
from gateway.mail.redaction import Redactor
from gateway.store.outbox import Attempt, Job, JobState, job_attempts
from gateway.store.sentmail import SentNotice, read_sent

__all__ = [
    "Attachment",
    "AttemptRecord",
    "DaySummary",
    "Filters",
    "Kind",
    "RecipientDecision",
    "SenderActivity",
    "Story",
    "find_attempts",
    "parse_bound",
    "redacted",
    "sender_activity",
    "summarize",
    "tell_story",
]

# A notice status that is a job state means a notice (or advisory) was queued.
_NOTICE_JOB_STATES = frozenset(state.value for state in JobState)


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
    notice: str  # none, suppressed:<why>, or the notice job's state (queued ... delivered)
    reply: str
    message_id: str | None = None
    subject: str | None = None
    size: int | None = None
    sha256: str | None = None
    attachments: tuple[str, ...] = ()
    a_numbers: tuple[str, ...] = ()

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2].lower()

    @property
    def is_refused(self) -> bool:
        return self.decision in ("rejected", "refused")

    @property
    def has_notice(self) -> bool:
        return self.notice in _NOTICE_JOB_STATES


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
        AND j.kind NOT IN ('relay', 'forward') ORDER BY j.id DESC LIMIT 1) AS notice_state
FROM messages m JOIN message_recipients r ON r.reference = m.reference
WHERE {where}
ORDER BY m.received_at, m.reference, r.rowid
"""
_REFUSALS = "SELECT * FROM refusals WHERE {where} ORDER BY at, reference"


def find_attempts(conn: sqlite3.Connection, filters: Filters) -> list[AttemptRecord]:
    """Every attempt matching `filters`, oldest first."""
    messages = _messages(conn, filters)
    refusals = [] if filters.message_id else _refusals(conn, filters)
    merged = sorted([*messages, *refusals], key=lambda a: (a.at, a.reference))
    return [a for a in merged if _matches(a, filters)]


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
    # A store an older gateway made has no refused_for until the gateway next opens it.
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    refused_for = "m.refused_for" if "refused_for" in columns else "NULL"
    sql = _MESSAGES.format(where=" AND ".join(where) or "1", refused_for=refused_for)
    rows = conn.execute(sql, params).fetchall()
    return [_message(group) for group in _grouped(rows)]


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
    notice = first["notice"]
    if notice == "queued" and first["notice_state"]:
        notice = first["notice_state"]
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
        reason=first["refused_for"] or _reason(first["outcome"], first["notice"], lead["reason"]),
        notice=notice,
        reply=first["reply"],
        message_id=first["message_id"],
        subject=first["subject"],
        size=first["size"],
        sha256=first["sha256"],
        attachments=tuple(a["filename"] for a in json.loads(first["attachments"])),
        a_numbers=tuple(json.loads(first["a_numbers"])),
    )


def _reason(outcome: str, notice: str, policy_reason: str) -> str:
    # A loop or a rate limit overrides the policy's answer; the record says so in `notice`.
    why = notice.partition(":")[2]
    if why.startswith("loop-") or (outcome == "deferred" and why.startswith("rate-limit-")):
        return why
    return str(policy_reason)


def _refusals(conn: sqlite3.Connection, filters: Filters) -> list[AttemptRecord]:
    where, params = _common_where(filters, at="at", sender="mail_from", reference="reference")
    if filters.office:
        where.append("office = ?")
        params.append(filters.office)
    rows = conn.execute(_REFUSALS.format(where=" AND ".join(where) or "1"), params).fetchall()
    return [_refusal(row) for row in rows]


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
        action="gone" if row["phase"] == "decommissioned" else "reject-at-rcpt",
        decision="refused",
        reason=row["reason"],
        notice="none",  # nothing is mailed after a refusal at RCPT: the reply is the answer
        reply=row["reply"],
    )


def _matches(attempt: AttemptRecord, filters: Filters) -> bool:
    """The filters SQL cannot apply: address folding, decision and notice status."""
    if filters.address and not any(_same_address(r, filters.address) for r in attempt.recipients):
        return False
    if filters.decision and filters.decision not in (attempt.decision, attempt.action):
        return False
    wanted = filters.notice
    return not wanted or attempt.notice == wanted or attempt.notice.startswith(wanted + ":")


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


# ---------------------------------------------------------------------------------------------
# The whole story of one message


@dataclass(frozen=True, slots=True)
class RecipientDecision:
    recipient: str
    kind: str  # addresses.AddressKind
    office: str | None
    phase: str | None
    action: str
    reason: str
    decided_at: datetime
    local_time: str | None  # as the office reads it


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Story:
    """Everything the store holds about one attempt (the log's lines are audit/events.py's)."""

    attempt: AttemptRecord
    peer_port: int | None = None
    tls: str | None = None
    date_header: str | None = None
    from_header: str | None = None
    attachments: tuple[Attachment, ...] = ()
    duplicate_of: str | None = None
    auth: str | None = None  # how the sender was authenticated (Authentication-Results)
    raw_kept: bool = False
    recipients: tuple[RecipientDecision, ...] = ()
    jobs: tuple[tuple[Job, tuple[Attempt, ...]], ...] = ()
    sent: tuple[SentNotice, ...] = ()  # the notices kept as sent (sentmail.py)


def tell_story(conn: sqlite3.Connection, reference: str) -> Story | None:
    """The story of the attempt with this reference, or None if the store has none."""
    found = find_attempts(conn, Filters(reference=reference))
    if not found:
        return None
    attempt = found[0]
    if attempt.kind is Kind.REFUSAL:
        return Story(attempt)
    ref = attempt.reference
    row = conn.execute("SELECT * FROM messages WHERE reference = ?", (ref,)).fetchone()
    decisions = conn.execute(
        "SELECT * FROM message_recipients WHERE reference = ? ORDER BY rowid", (ref,)
    ).fetchall()
    jobs = conn.execute("SELECT * FROM jobs WHERE reference = ? ORDER BY id", (ref,)).fetchall()
    raw = conn.execute("SELECT 1 FROM raw_messages WHERE reference = ?", (ref,)).fetchone()
    return Story(
        attempt,
        peer_port=row["peer_port"],
        tls=row["tls"],
        date_header=row["date_header"],
        from_header=row["from_header"],
        attachments=tuple(
            Attachment(a["filename"], a["content_type"], a["size"])
            for a in json.loads(row["attachments"])
        ),
        duplicate_of=row["duplicate_of"],
        auth=row["auth"],
        raw_kept=raw is not None,
        recipients=tuple(_decision(d) for d in decisions),
        jobs=tuple(
            (job, tuple(job_attempts(conn, job.id))) for job in (Job.from_row(j) for j in jobs)
        ),
        sent=tuple(read_sent(conn, ref)),
    )


def _decision(row: sqlite3.Row) -> RecipientDecision:
    return RecipientDecision(
        recipient=row["recipient"],
        kind=row["kind"],
        office=row["office"],
        phase=row["phase"],
        action=row["action"],
        reason=row["reason"],
        decided_at=datetime.fromisoformat(row["decided_at"]),
        local_time=row["local_time"],
    )


# ---------------------------------------------------------------------------------------------
# Summaries: pure


@dataclass(frozen=True, slots=True)
class DaySummary:
    """One office's day: what arrived, what was refused and what became of the notices."""

    day: date
    office: str  # "" when no office was addressed (postmaster)
    attempts: int  # messages and refusals at RCPT
    received: int  # messages received to the end of DATA
    refused: int  # refused after DATA or at RCPT
    noticed: int  # a notice (or advisory) was queued
    suppressed: int  # no notice, for the reason on record
    delivered: int  # notices delivered
    deferred: int  # notices waiting for another try
    failed: int  # notices given up on
    refused_by_reason: tuple[tuple[str, int], ...] = ()


def summarize(
    attempts: Iterable[AttemptRecord], *, zone_of: Callable[[str | None], tzinfo]
) -> list[DaySummary]:
    """Per day (in the zone `zone_of(office)` gives) and office, oldest day first."""
    groups: dict[tuple[date, str], list[AttemptRecord]] = {}
    for attempt in attempts:
        day = attempt.at.astimezone(zone_of(attempt.office)).date()
        groups.setdefault((day, attempt.office or ""), []).append(attempt)
    return [_day(day, office, group) for (day, office), group in sorted(groups.items())]


def _day(day: date, office: str, attempts: Sequence[AttemptRecord]) -> DaySummary:
    notices = Counter(a.notice for a in attempts)
    reasons = Counter(a.reason for a in attempts if a.is_refused)
    return DaySummary(
        day=day,
        office=office,
        attempts=len(attempts),
        received=sum(1 for a in attempts if a.kind is Kind.MESSAGE),
        refused=sum(reasons.values()),
        noticed=sum(1 for a in attempts if a.has_notice),
        suppressed=sum(1 for a in attempts if a.notice.startswith("suppressed:")),
        delivered=notices["delivered"],
        deferred=notices["deferred"],
        failed=notices["failed"],
        refused_by_reason=tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


@dataclass(frozen=True, slots=True)
class SenderActivity:
    """A sender domain (sender "") or one sender in it: who still files by e-mail."""

    domain: str
    sender: str  # "" on the domain's own line
    attempts: int
    first: datetime
    last: datetime
    notices_delivered: int  # attempts whose notice reached the sender
    senders: int  # 1 on a sender's line
    senders_reached: int  # how many of them were reached by at least one notice

    @property
    def is_domain(self) -> bool:
        return not self.sender


def sender_activity(attempts: Iterable[AttemptRecord]) -> list[SenderActivity]:
    """Each sender domain, busiest first, followed by its senders, busiest first."""
    by_sender: dict[tuple[str, str], list[AttemptRecord]] = {}
    for attempt in attempts:
        sender = attempt.sender.lower() or "<>"
        by_sender.setdefault((attempt.sender_domain, sender), []).append(attempt)
    senders = [_activity(domain, sender, group) for (domain, sender), group in by_sender.items()]
    by_domain: dict[str, list[SenderActivity]] = {}
    for activity in senders:
        by_domain.setdefault(activity.domain, []).append(activity)
    result: list[SenderActivity] = []
    for domain, members in sorted(by_domain.items(), key=lambda kv: _busiest(kv[1], kv[0])):
        members.sort(key=lambda m: (-m.attempts, m.sender))
        result.append(_domain_total(domain, members))
        result.extend(members)
    return result


def _busiest(members: Sequence[SenderActivity], domain: str) -> tuple[int, str]:
    return -sum(m.attempts for m in members), domain


def _activity(domain: str, sender: str, attempts: Sequence[AttemptRecord]) -> SenderActivity:
    delivered = sum(1 for a in attempts if a.notice == "delivered")
    return SenderActivity(
        domain=domain,
        sender=sender,
        attempts=len(attempts),
        first=min(a.at for a in attempts),
        last=max(a.at for a in attempts),
        notices_delivered=delivered,
        senders=1,
        senders_reached=1 if delivered else 0,
    )


def _domain_total(domain: str, members: Sequence[SenderActivity]) -> SenderActivity:
    return SenderActivity(
        domain=domain,
        sender="",
        attempts=sum(m.attempts for m in members),
        first=min(m.first for m in members),
        last=max(m.last for m in members),
        notices_delivered=sum(m.notices_delivered for m in members),
        senders=len(members),
        senders_reached=sum(m.senders_reached for m in members),
    )
