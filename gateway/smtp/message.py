"""The end of DATA: gather the facts, ask the verdict, make the record durable, then answer.

The thin driver around policy/verdict.py: it turns the session and the message into the
verdict's input, hands the record to the store (which settles the notice limits in the same
transaction) with the words of the replies it may settle on (replies.py, each worded only
when the store or the record asks for it) and returns the reply of the record as stored. It
decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta

import structlog

from gateway.clock import Clock
from gateway.config import OfficeSettings, StorageSettings
from gateway.errors import StoreError
from gateway.policy.decision import Decision
from gateway.policy.verdict import Reply, Verdict, VerdictRules, judge, screen
from gateway.smtp.arrival import (
    SenderChecks,
    arrival_of,
    facts_of,
    received_data,
    sender_check,
    tls_summary,
)
from gateway.smtp.events import log_message
from gateway.smtp.replies import REPLY_STORE_FAILED, reply_for
from gateway.smtp.session import Accepted, GatewayEnvelope, GatewaySession
from gateway.store.interface import RecordStore
from gateway.store.messages import (
    MessageRecord,
    NoticeCheck,
    RecipientRecord,
    job_record,
    new_reference,
)
from gateway.vocabulary import JobKind, format_notice_status

__all__ = ["MessageDesk", "ReplyWords"]

log = structlog.get_logger()


class ReplyWords(Mapping[Reply, str]):
    """The words of each reply a verdict may end on (`Verdict.possible_replies()`), each
    worded when first looked up: the record takes the verdict's own reply and the store the
    one it settles on, nearly always the same, so one reply is worded per message, not the
    five a notice's limits could lead to."""

    def __init__(
        self,
        verdict: Verdict,
        reference: str,
        offices: Mapping[str, OfficeSettings],
        *,
        public_url: str | None = None,
    ) -> None:
        self._public_url = public_url
        self._replies = verdict.possible_replies()
        self._reference = reference
        self._offices = offices
        self._words: dict[Reply, str] = {}

    def __getitem__(self, reply: Reply) -> str:
        if reply not in self._words:
            if reply not in self._replies:
                raise KeyError(reply)
            office = None if not reply.office else self._offices[reply.office]
            url = self._public_url
            self._words[reply] = reply_for(reply, self._reference, office, public_url=url)
        return self._words[reply]

    def __iter__(self) -> Iterator[Reply]:
        return iter(self._replies)

    def __len__(self) -> int:
        return len(self._replies)


class MessageDesk:
    """Answers the end of DATA, once the message's record is durable."""

    def __init__(
        self,
        rules: VerdictRules,
        sender_checks: SenderChecks,
        *,
        storage: StorageSettings,
        store: RecordStore,
        clock: Clock,
        public_url: str | None = None,
    ) -> None:
        self.public_url = public_url
        self.store = store
        self.clock = clock
        self.rules = rules
        self.storage = storage
        self.sender_checks = sender_checks

    async def receive(self, session: GatewaySession, envelope: GatewayEnvelope) -> str:
        """The reply to the end of DATA; 451 if the record cannot be made."""
        received_at = self.clock()
        data = received_data(envelope)
        facts = facts_of(data)
        reference = new_reference(received_at)
        session.messages += 1
        arrival = arrival_of(session, envelope, facts, data)
        screening = screen(arrival, self.rules)
        auth = (
            await self.sender_checks.check(session, envelope, facts, data)
            if screening.should_check_sender
            else None
        )
        verdict = judge(
            arrival,
            screening=screening,
            sender_check=sender_check(auth),
            rules=self.rules,
            at=received_at,
        )
        replies = ReplyWords(verdict, reference, self.rules.offices, public_url=self.public_url)
        keep_raw, keep_until = self._retention(verdict, envelope, received_at)
        record = MessageRecord(
            reference=reference,
            received_at=received_at,
            session_id=session.session_id,
            peer_ip=session.peer_ip,
            peer_port=session.peer_port,
            helo=session.host_name,
            tls=tls_summary(session),
            mail_from=envelope.sender,
            facts=facts,
            recipients=self._recipients(envelope, verdict, received_at),
            outcome=verdict.outcome,
            reply=replies[verdict.reply],
            notice=format_notice_status(verdict.notice),
            jobs=tuple(job_record(j) for j in verdict.jobs),
            raw=data.content if keep_raw else None,
            raw_keep_until=keep_until,
            auth=self.sender_checks.header_value(envelope, auth),
            sender_authenticated=verdict.is_sender_authenticated,
            refused_for=verdict.problem,
        )
        try:
            record = await self.store.record_message(record, NoticeCheck(verdict, replies))
        except StoreError as exc:
            log.error("store.write_failed", reference=reference, error=str(exc))
            return REPLY_STORE_FAILED
        log_message(record)
        return record.reply

    def _retention(
        self, verdict: Verdict, envelope: GatewayEnvelope, received_at: datetime
    ) -> tuple[bool, datetime | None]:
        """Whether the raw message is kept, and until when (None: until dealt with)."""
        # Mail still to be relayed, and mail for postmaster, is kept until dealt with.
        if any(j.kind is JobKind.RELAY for j in verdict.jobs) or any(
            a.decision is None for a in envelope.accepted
        ):
            return True, None
        if self.storage.keep_raw:
            return True, received_at + timedelta(days=self.storage.raw_retention_days)
        return False, None

    def _recipients(
        self, envelope: GatewayEnvelope, verdict: Verdict, at: datetime
    ) -> tuple[RecipientRecord, ...]:
        return tuple(
            self._recipient_record(a, d, at)
            for a, d in zip(envelope.accepted, verdict.decisions, strict=True)
        )

    def _recipient_record(
        self, accepted: Accepted, decision: Decision | None, at: datetime
    ) -> RecipientRecord:
        if decision is None:
            return RecipientRecord(accepted.given, accepted.kind, "keep", "mail for postmaster", at)
        office = self.rules.offices[decision.office]
        return RecipientRecord(
            accepted.given,
            accepted.kind,
            decision.action,
            decision.reason,
            at,
            office=office.name,
            phase=decision.phase,
            local_time=at.astimezone(office.zone).isoformat(timespec="seconds"),
        )
