"""The record of each attempt as written: messages, their recipients and jobs, refusals.

The values a session hands the store (MessageRecord, RefusalRecord and their parts), the
references that name them, and the SQL that writes them. A message's notice is settled here,
in its own transaction: the dedup entry and the hourly counts are read, the pure
`policy.verdict.settle` decides, and what it decided is written, so two sessions can never
both pass one limit. Reads are in queries.py and records.py.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from gateway.mail.evidence import MessageFacts
from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import Job, NoticeGate, NoticeHistory, Reply, Verdict, settle
from gateway.vocabulary import NOTICE_KINDS, format_notice_status

__all__ = [
    "REFERENCE_BITS",
    "JobRecord",
    "MessageRecord",
    "NoticeCheck",
    "RecipientRecord",
    "RefusalRecord",
    "insert_gated",
    "insert_refusal",
    "iso",
    "job_record",
    "new_reference",
]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Random bits in a reference: 13 characters of Crockford's base 32. The reference is the key
# to a public receipt page, so it must not be guessable: 65 bits (the date adds nothing a
# guesser does not know). References made before were 10 characters (50 bits); they still
# resolve, and the page's rate limit covers them.
REFERENCE_BITS = 65


def new_reference(at: datetime) -> str:
    """A reference id: the UTC date and 65 random bits, e.g. "20170912-7K3QM9XD0AB4C"."""
    bits = secrets.randbits(REFERENCE_BITS)
    tail = "".join(_ALPHABET[(bits >> shift) & 31] for shift in range(REFERENCE_BITS - 5, -1, -5))
    return f"{at:%Y%m%d}-{tail}"


def iso(at: datetime) -> str:
    """UTC ISO-8601 with microseconds, the one time format of the store."""
    return at.isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    recipient: str
    kind: str  # addresses.AddressKind
    action: str
    reason: str
    decided_at: datetime
    office: str | None = None
    phase: str | None = None
    local_time: str | None = None  # decided_at in the office's zone, as the office reads it


@dataclass(frozen=True, slots=True)
class JobRecord:
    kind: str  # a vocabulary.JobKind: relay, forward (postmaster mail), notice, advisory
    mail_from: str
    recipients: tuple[str, ...]
    office: str | None = None
    destination: str | None = None  # host:port for relays; None: by the delivery mode

    @property
    def is_notice(self) -> bool:
        """Whether this job answers the sender, so that the notice limits apply to it."""
        return self.kind in NOTICE_KINDS

    @property
    def route(self) -> str:
        """What limits concurrency: the fixed destination, else the recipients' domain."""
        if self.destination:
            return self.destination.lower()
        return self.recipients[0].rpartition("@")[2].lower() if self.recipients else ""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    reference: str
    received_at: datetime
    session_id: str
    peer_ip: str
    peer_port: int | None
    helo: str | None
    tls: str | None
    mail_from: str
    facts: MessageFacts
    recipients: tuple[RecipientRecord, ...]
    outcome: str  # "accepted" or "rejected"
    reply: str
    notice: str  # "queued", "suppressed:<reason>" or "none"
    jobs: tuple[JobRecord, ...] = ()
    raw: bytes | None = None
    raw_keep_until: datetime | None = None
    duplicate_of: str | None = None  # the earlier message whose notice this one repeats
    auth: str | None = None  # Authentication-Results value of the sender checks
    # Whether mail may be sent to the envelope sender: a notice, or a bounce if a relay fails.
    sender_authenticated: bool = False
    # What about the message itself refused it ("message-too-big", "line-too-long"), if so.
    refused_for: str | None = None


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    reference: str
    at: datetime
    session_id: str
    peer_ip: str
    helo: str | None
    mail_from: str
    recipient: str
    reason: str
    reply: str
    office: str | None = None
    phase: str | None = None


@dataclass(frozen=True, slots=True)
class NoticeCheck:
    """A message's verdict whose notice is to meet the limits as its record is written."""

    verdict: Verdict
    # The wording of each reply the verdict may settle on (Verdict.possible_replies): the
    # store looks up the one it settles on and words none itself. The sender's mapping may
    # word each only when looked up (smtp/message.py ReplyWords): a lookup must be cheap,
    # pure and safe from the store's writer thread.
    replies: Mapping[Reply, str]


def job_record(job: Job) -> JobRecord:
    """The store's record of a job the verdict queues."""
    return JobRecord(job.kind, job.mail_from, job.recipients, job.office, job.destination)


def insert_gated(
    conn: sqlite3.Connection, record: MessageRecord, check: NoticeCheck | None
) -> MessageRecord:
    if check is not None and check.verdict.gate is not None:
        record = _gated(conn, record, check, check.verdict.gate)
    _insert_message(conn, record)
    return record


def _gated(
    conn: sqlite3.Connection, record: MessageRecord, check: NoticeCheck, gate: NoticeGate
) -> MessageRecord:
    verdict = settle(check.verdict, _history(conn, gate))
    if verdict.counts_notice:
        _count_notice(conn, gate)
        conn.execute(
            "INSERT OR REPLACE INTO notice_dedup VALUES (?,?,?)",
            (gate.dedup_key, record.reference, iso(record.received_at)),
        )
    return replace(
        record,
        outcome=verdict.outcome,
        reply=check.replies[verdict.reply],
        notice=format_notice_status(verdict.notice),
        jobs=tuple(job_record(j) for j in verdict.jobs),
        duplicate_of=verdict.duplicate_of,
    )


def _history(conn: sqlite3.Connection, gate: NoticeGate) -> NoticeHistory:
    """What earlier notices say about this one; the counts are read only if it is new."""
    earlier = conn.execute(
        "SELECT reference FROM notice_dedup WHERE key = ? AND at >= ?",
        (gate.dedup_key, iso(gate.dedup_since)),
    ).fetchone()
    if earlier is not None:
        return NoticeHistory(duplicate_of=earlier[0])
    counts = {scope: _count(conn, scope, key, gate.hour) for scope, key in gate.counters.items()}
    return NoticeHistory(counts=counts)


def _count(conn: sqlite3.Connection, scope: str, key: str, hour: str) -> int:
    row = conn.execute(
        "SELECT count FROM notice_counts WHERE scope = ? AND key = ? AND hour = ?",
        (scope, key, hour),
    ).fetchone()
    return int(row[0]) if row else 0


def _count_notice(conn: sqlite3.Connection, gate: NoticeGate) -> None:
    if not _count(conn, NoticeScope.TOTAL, "*", gate.hour):
        # The first notice of the hour tidies up: older windows no longer limit anything.
        conn.execute("DELETE FROM notice_counts WHERE hour < ?", (gate.hour,))
        conn.execute("DELETE FROM notice_dedup WHERE at < ?", (iso(gate.dedup_since),))
    conn.executemany(
        "INSERT INTO notice_counts VALUES (?,?,?,1)"
        " ON CONFLICT (scope, key, hour) DO UPDATE SET count = count + 1",
        [(scope, key, gate.hour) for scope, key in gate.counters.items()],
    )


_MESSAGE_COLUMNS = (
    "reference, received_at, session_id, peer_ip, peer_port, helo, tls, mail_from, recipients,"
    " message_id, subject, date_header, from_header, size, sha256, attachments, a_numbers,"
    " mime_truncated, outcome, reply, notice, duplicate_of, auth, sender_authenticated,"
    " refused_for"
)


def _insert_message(conn: sqlite3.Connection, r: MessageRecord) -> None:
    facts = r.facts
    conn.execute(
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ({','.join('?' * 25)})",
        (
            r.reference,
            iso(r.received_at),
            r.session_id,
            r.peer_ip,
            r.peer_port,
            r.helo,
            r.tls,
            r.mail_from,
            json.dumps([x.recipient for x in r.recipients]),
            facts.message_id,
            facts.subject,
            facts.date,
            facts.from_header,
            facts.size,
            facts.sha256,
            _attachments_json(facts),
            json.dumps(list(facts.a_numbers)),
            int(facts.truncated),
            r.outcome,
            r.reply,
            r.notice,
            r.duplicate_of,
            r.auth,
            int(r.sender_authenticated),
            r.refused_for,
        ),
    )
    conn.executemany(
        "INSERT INTO message_recipients VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                r.reference,
                x.recipient,
                x.kind,
                x.office,
                x.phase,
                x.action,
                x.reason,
                iso(x.decided_at),
                x.local_time,
            )
            for x in r.recipients
        ],
    )
    if r.raw is not None:
        keep = None if r.raw_keep_until is None else iso(r.raw_keep_until)
        conn.execute("INSERT INTO raw_messages VALUES (?,?,?)", (r.reference, r.raw, keep))
    created = iso(r.received_at)
    conn.executemany(
        "INSERT INTO jobs (reference, kind, office, mail_from, recipients, destination, route,"
        " created_at, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                r.reference,
                j.kind,
                j.office,
                j.mail_from,
                json.dumps(list(j.recipients)),
                j.destination,
                j.route,
                created,
                created,
                created,
            )
            for j in r.jobs
        ],
    )


def _attachments_json(facts: MessageFacts) -> str:
    return json.dumps(
        [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in facts.attachments
        ]
    )


def insert_refusal(conn: sqlite3.Connection, r: RefusalRecord) -> None:
    conn.execute(
        "INSERT INTO refusals VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            r.reference,
            iso(r.at),
            r.session_id,
            r.peer_ip,
            r.helo,
            r.mail_from,
            r.recipient,
            r.office,
            r.phase,
            r.reason,
            r.reply,
        ),
    )
