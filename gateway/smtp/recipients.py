"""RCPT: per recipient, what policy decides and what to answer at once.

A retired address refused at RCPT, an oversize declaration and an unknown mailbox in an
office's domain are recorded (a refusal row) before their 5xx is sent; a recipient that must
wait for a transaction of its own gets a 452 that, for a retired address, says it was not
filed yet and where filings go. It must not word replies (replies.py does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import structlog

from gateway.clock import Clock
from gateway.config import OfficeSettings, ServerSettings
from gateway.errors import StoreError
from gateway.mail.addresses import AddressBook, AddressKind, parse_address
from gateway.policy.decision import Action, Decision, decide
from gateway.policy.verdict import answer_group
from gateway.smtp.replies import (
    REPLY_BAD_RECIPIENT,
    REPLY_GONE,
    REPLY_RECIPIENT_OK,
    REPLY_RELAY_DENIED,
    REPLY_SEPARATE_TRANSACTION,
    REPLY_SIZE_EXCEEDED,
    REPLY_STORE_FAILED,
    REPLY_TOO_MANY_RECIPIENTS,
    oversize_reply,
    reply_code,
    retired_reply,
    retired_separate_transaction_reply,
    retired_too_many_recipients_reply,
    unknown_mailbox_reply,
)
from gateway.smtp.session import Accepted, GatewayEnvelope, GatewaySession
from gateway.store.interface import RecordStore
from gateway.store.messages import RefusalRecord, new_reference

__all__ = ["RecipientDesk"]

log = structlog.get_logger()

_RELAYING = frozenset({Action.RELAY, Action.RELAY_AND_ADVISE})


class RecipientDesk:
    """Answers RCPT: accepts a recipient into the transaction, or refuses or defers it."""

    def __init__(
        self,
        book: AddressBook,
        offices: Mapping[str, OfficeSettings],
        *,
        server: ServerSettings,
        store: RecordStore,
        clock: Clock,
        public_url: str | None = None,
    ) -> None:
        self.public_url = public_url  # [lookup]'s: refusals name their receipt page
        self.store = store
        self.clock = clock
        self.book = book
        self.offices = offices
        self.max_recipients = server.max_recipients
        self.max_message_size = server.max_message_size

    async def admit(
        self,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        address: str,
        rcpt_options: Sequence[str],
    ) -> str:
        """The reply to RCPT TO:<address>; an accepted recipient joins `envelope`."""
        try:
            parsed = parse_address(address)
        except ValueError:
            return REPLY_BAD_RECIPIENT
        lookup = self.book.lookup(parsed)
        retired = None  # the office of a retired address: its 452s name the portal
        if lookup.kind is AddressKind.RETIRED and lookup.office is not None:
            retired = self.offices[lookup.office]
        if len(envelope.rcpt_tos) >= self.max_recipients:
            reply = REPLY_TOO_MANY_RECIPIENTS
            if retired is not None:
                reply = retired_too_many_recipients_reply(retired)
            return _deferred(envelope, address, "too-many-recipients", reply, retired)
        if any(a.address == str(parsed) for a in envelope.accepted):
            # The same mailbox twice: one recipient, one record (RFC 5321 §3.3 lets the
            # server treat duplicates as one); a second row would fail the transaction.
            return REPLY_RECIPIENT_OK
        if lookup.kind is AddressKind.FOREIGN:
            return _turned_away(envelope, address, "relay-denied", REPLY_RELAY_DENIED)
        if lookup.kind is AddressKind.UNKNOWN_LOCAL:
            return await self._refuse_unknown(session, envelope, address, parsed.domain)
        decision = None
        if retired is not None:
            decision = decide(
                retired, self.clock(), sender_authenticated=envelope.sender_authenticated
            )
            if decision.action.is_refused_at_rcpt:
                return await self._refuse_retired(session, envelope, address, decision)
            if self._is_declared_oversize(envelope):
                return await self._refuse_oversize(session, envelope, address, decision)
        elif self._is_declared_oversize(envelope):
            return _turned_away(envelope, address, "message-too-big", REPLY_SIZE_EXCEEDED)
        accepted = Accepted(address, str(parsed), lookup.kind, decision)
        return _join(envelope, accepted, rcpt_options=rcpt_options, retired=retired)

    async def _refuse_retired(
        self, session: GatewaySession, envelope: GatewayEnvelope, recipient: str, decision: Decision
    ) -> str:
        office = self.offices[decision.office]

        def reply(reference: str) -> str:
            if decision.action is Action.GONE:
                return REPLY_GONE
            return retired_reply(office, reference, public_url=self.public_url)

        return await self._refuse(
            session,
            envelope,
            recipient,
            reply,
            reason=decision.reason,
            office=office,
            phase=decision.phase,
        )

    async def _refuse_oversize(
        self, session: GatewaySession, envelope: GatewayEnvelope, recipient: str, decision: Decision
    ) -> str:
        # Before the cutoff the address still works: the size is the only news.
        office = None if decision.action in _RELAYING else self.offices[decision.office]
        return await self._refuse(
            session,
            envelope,
            recipient,
            lambda ref: oversize_reply(office, ref, public_url=self.public_url),
            reason="message-too-big",
            office=self.offices[decision.office],
            phase=decision.phase,
        )

    async def _refuse_unknown(
        self, session: GatewaySession, envelope: GatewayEnvelope, recipient: str, domain: str
    ) -> str:
        # A typo in a retired address, or a reply to the notices' no-reply address: in an
        # office's domain the refusal says where filings go now, and it is on record.
        name = self.book.office_of_domain(domain)
        office = None if name is None else self.offices[name]
        return await self._refuse(
            session,
            envelope,
            recipient,
            lambda ref: unknown_mailbox_reply(office, ref, public_url=self.public_url),
            reason="no-such-mailbox",
            office=office,
            phase=None,
        )

    def _is_declared_oversize(self, envelope: GatewayEnvelope) -> bool:
        declared = envelope.declared_size
        return declared is not None and declared > self.max_message_size

    async def _refuse(
        self,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        recipient: str,
        reply_for: Callable[[str], str],
        *,
        reason: str,
        office: OfficeSettings | None,
        phase: str | None,
    ) -> str:
        """Record a refusal at RCPT, then answer it; 451 if the record cannot be made."""
        now = self.clock()
        reference = new_reference(now)
        reply = reply_for(reference)
        record = RefusalRecord(
            reference=reference,
            at=now,
            session_id=session.session_id,
            peer_ip=session.peer_ip,
            helo=session.host_name,
            mail_from=envelope.sender,
            recipient=recipient,
            reason=reason,
            reply=reply,
            office=None if office is None else office.name,
            phase=phase,
        )
        try:
            await self.store.record_refusal(record)
        except StoreError as exc:
            log.error("store.write_failed", reference=reference, error=str(exc))
            return REPLY_STORE_FAILED
        log.info(
            "smtp.recipient.refused",
            reference=reference,
            sender=envelope.sender,
            recipient=recipient,
            office=record.office,
            phase=phase,
            reason=reason,
            reply_code=reply_code(reply),
            reply=reply,
        )
        return reply


def _join(
    envelope: GatewayEnvelope,
    accepted: Accepted,
    *,
    rcpt_options: Sequence[str],
    retired: OfficeSettings | None,
) -> str:
    """Add `accepted` to the transaction, unless the end of DATA would answer it otherwise
    than the recipients already in it (one transaction, one reply)."""
    group = answer_group(accepted.decision)
    if envelope.answer is not None and group != envelope.answer:
        reply = REPLY_SEPARATE_TRANSACTION
        if retired is not None:
            reply = retired_separate_transaction_reply(retired)
        return _deferred(envelope, accepted.given, "answer-differs", reply, retired)
    envelope.answer = group
    envelope.accepted.append(accepted)
    envelope.rcpt_tos.append(accepted.given)
    envelope.rcpt_options.extend(rcpt_options)
    return REPLY_RECIPIENT_OK


def _turned_away(envelope: GatewayEnvelope, recipient: str, reason: str, reply: str) -> str:
    """A refusal at RCPT of an address that is no filing's: logged, not recorded."""
    log.info(
        "smtp.recipient.refused",
        sender=envelope.sender,
        recipient=recipient,
        reason=reason,
        reply_code=reply_code(reply),
        reply=reply,
    )
    return reply


def _deferred(
    envelope: GatewayEnvelope,
    recipient: str,
    reason: str,
    reply: str,
    office: OfficeSettings | None,
) -> str:
    # A 452 is no refusal: the sender's MTA sends this recipient again, and that attempt is
    # answered and recorded. The event names the office when the address was a filing one.
    log.info(
        "smtp.recipient.deferred",
        sender=envelope.sender,
        recipient=recipient,
        reason=reason,
        reply_code=reply_code(reply),
        reply=reply,
        **({} if office is None else {"office": office.name}),
    )
    return reply
