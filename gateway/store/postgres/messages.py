"""The record of each attempt as PostgreSQL stores it: the statements and their rows.

What store.py sends for a message (its row, its recipients, its raw copy, its jobs), for a
refusal, and for the notice gate, built from the SQLite store's frozen values
(gateway/store/messages.py). Plain functions of values: no connection, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from psycopg.types.json import Jsonb

from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import NoticeGate, NoticeHistory, Verdict
from gateway.store.messages import MessageRecord, NoticeCheck, RefusalRecord, job_record
from gateway.vocabulary import format_notice_status

__all__ = [
    "GATE",
    "GATE_MET",
    "JOB",
    "MESSAGE",
    "RAW",
    "RECIPIENT",
    "REFUSAL",
    "GateRow",
    "gate_row",
    "history",
    "job_rows",
    "message_row",
    "raw_row",
    "recipient_rows",
    "refusal_row",
    "settled",
]

# The SQLSTATE the strict gate raises (schema.py): a repeat, or a limit reached.
GATE_MET = "GW001"

MESSAGE = (
    "INSERT INTO messages (reference, received_at, session_id, peer_ip, peer_port, helo, tls,"
    " mail_from, recipients, message_id, subject, date_header, from_header, size, sha256,"
    " attachments, a_numbers, mime_truncated, outcome, reply, notice, duplicate_of, auth,"
    " sender_authenticated, refused_for, node)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    " %s, %s, %s, %s, %s, %s)"
)
RECIPIENT = (
    "INSERT INTO message_recipients (reference, recipient, kind, office, phase, action,"
    " reason, decided_at, local_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
RAW = "INSERT INTO raw_messages (reference, raw, keep_until) VALUES (%s, %s, %s)"
JOB = (
    "INSERT INTO jobs (reference, kind, office, mail_from, recipients, destination, route,"
    " created_at, next_attempt_at, updated_at, node)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
REFUSAL = (
    "INSERT INTO refusals (reference, at, session_id, peer_ip, helo, mail_from, recipient,"
    " office, phase, reason, reply, node) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
GATE = (
    "SELECT duplicate_of, counts, counted"
    " FROM gateway_notice_gate(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

Row = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class GateRow:
    """The gate's parameters for one message, its scopes in NoticeScope's fixed order."""

    scopes: tuple[NoticeScope, ...]
    params: Row


def message_row(r: MessageRecord, *, node: str) -> Row:
    facts = r.facts
    attachments = [
        {"filename": a.filename, "content_type": a.content_type, "size": a.size}
        for a in facts.attachments
    ]
    return (
        r.reference, r.received_at, r.session_id, r.peer_ip, r.peer_port, r.helo, r.tls,
        r.mail_from, Jsonb([x.recipient for x in r.recipients]), facts.message_id,
        facts.subject, facts.date, facts.from_header, facts.size, facts.sha256,
        Jsonb(attachments), Jsonb(list(facts.a_numbers)), facts.truncated, r.outcome, r.reply,
        r.notice, r.duplicate_of, r.auth, r.sender_authenticated, r.refused_for, node,
    )  # fmt: skip


def recipient_rows(r: MessageRecord) -> list[Row]:
    return [
        (r.reference, x.recipient, x.kind, x.office, x.phase, x.action, x.reason, x.decided_at,
         x.local_time)
        for x in r.recipients
    ]  # fmt: skip


def raw_row(r: MessageRecord) -> Row | None:
    return None if r.raw is None else (r.reference, r.raw, r.raw_keep_until)


def job_rows(r: MessageRecord, *, node: str) -> list[Row]:
    # Due at once, at the message's arrival (as the SQLite store has it).
    at = r.received_at
    return [
        (r.reference, j.kind, j.office, j.mail_from, Jsonb(list(j.recipients)), j.destination,
         j.route, at, at, at, node)
        for j in r.jobs
    ]  # fmt: skip


def refusal_row(r: RefusalRecord, *, node: str) -> Row:
    return (
        r.reference, r.at, r.session_id, r.peer_ip, r.helo, r.mail_from, r.recipient, r.office,
        r.phase, r.reason, r.reply, node,
    )  # fmt: skip


def gate_row(gate: NoticeGate, reference: str, at: datetime, *, is_strict: bool) -> GateRow:
    """The gate's call for a message: strict in the one-trip transaction, not when settling."""
    scopes = tuple(s for s in NoticeScope if s in gate.counters)
    hour = datetime.strptime(gate.hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    params = (
        gate.dedup_key,
        reference,
        at,
        gate.dedup_since,
        hour,
        [str(s) for s in scopes],
        [gate.counters[s] for s in scopes],
        [gate.limits[s] for s in scopes],
        is_strict,
    )
    return GateRow(scopes, params)


def history(
    scopes: Sequence[NoticeScope], duplicate_of: str | None, counts: object
) -> NoticeHistory:
    """What the gate found, as policy.verdict.settle() reads it."""
    if duplicate_of is not None:
        return NoticeHistory(duplicate_of=duplicate_of)
    if not isinstance(counts, list):
        # Neither a repeat nor counted: the repeat's entry went between two statements
        # (retention). An empty history lets the caller see the gate did not count it.
        return NoticeHistory()
    return NoticeHistory(counts=dict(zip(scopes, (int(c) for c in counts), strict=True)))


def settled(record: MessageRecord, check: NoticeCheck, verdict: Verdict) -> MessageRecord:
    """The record as `verdict` has it (what the SQLite store's insert_gated stores)."""
    return replace(
        record,
        outcome=verdict.outcome,
        reply=check.replies[verdict.reply],
        notice=format_notice_status(verdict.notice),
        jobs=tuple(job_record(j) for j in verdict.jobs),
        duplicate_of=verdict.duplicate_of,
    )
