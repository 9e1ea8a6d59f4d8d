"""The audit events of a message answered at the end of DATA, from its record as stored.

One event per fact (audit/log.py EVENTS): the message, each recipient's decision, a
suppressed notice, each job queued, and the reply. It must not decide or word anything.
"""

from __future__ import annotations

import structlog

from gateway.policy.decision import Action
from gateway.smtp.replies import reply_code
from gateway.store.messages import MessageRecord
from gateway.vocabulary import Outcome, parse_notice_status

__all__ = ["log_message", "message_office", "refusal_reason"]

log = structlog.get_logger()


def log_message(record: MessageRecord) -> None:
    """Log the events of a message whose record is durable."""
    _log_received(record)
    for r in record.recipients:
        log.info(
            "policy.decided",
            reference=record.reference,
            recipient=r.recipient,
            office=r.office,
            phase=r.phase,
            action=r.action,
            reason=r.reason,
            arrival_utc=record.received_at.isoformat(),
            arrival_local=r.local_time,
        )
    notice = parse_notice_status(record.notice)
    if notice.is_suppressed:
        log.info(
            "notice.suppressed",
            reference=record.reference,
            sender=record.mail_from,
            reason=notice.reason,
            duplicate_of=record.duplicate_of,
        )
    for job in record.jobs:
        log.info(
            "outbox.enqueued",
            reference=record.reference,
            job_kind=job.kind,
            office=job.office,
            recipients=list(job.recipients),
            destination=job.destination,
        )
    log.info(
        "smtp.reply.sent",
        reference=record.reference,
        outcome=record.outcome,
        office=message_office(record),
        reply_code=reply_code(record.reply),
        reply=record.reply,
        **({} if record.outcome == "accepted" else {"reason": refusal_reason(record)}),
    )


def _log_received(record: MessageRecord) -> None:
    facts = record.facts
    log.info(
        "smtp.message.received",
        reference=record.reference,
        helo=record.helo,
        tls=record.tls,
        sender=record.mail_from,
        recipients=[r.recipient for r in record.recipients],
        message_id=facts.message_id,
        subject=facts.subject,
        date_header=facts.date,
        size=facts.size,
        sha256=facts.sha256,
        attachments=[{"filename": a.filename, "size": a.size} for a in facts.attachments],
        a_numbers=list(facts.a_numbers),
        auth=record.auth,
    )


def message_office(record: MessageRecord) -> str | None:
    """The office a message was written to (its recipients' offices, comma-joined in the rare
    case of several), or None when no recipient belongs to an office."""
    offices = sorted({r.office for r in record.recipients if r.office})
    return ",".join(offices) or None


def refusal_reason(record: MessageRecord) -> str:
    """Why a message was rejected or deferred, in the words of the records and metrics."""
    if record.refused_for:
        return record.refused_for
    why = record.notice.partition(":")[2]
    if why.startswith(("loop-", "rate-limit-")) or why == "sender-check-temperror":
        return why
    if record.outcome == Outcome.DEFERRED:
        return "recipients-changed"
    gone = all(r.action == Action.GONE for r in record.recipients)
    return "address-decommissioned" if gone else "address-retired"
