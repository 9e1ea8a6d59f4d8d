"""The SMTP conversation's decisions: the aiosmtpd handler hooks.

Per recipient it asks policy/ what to do; at the end of DATA it asks mail/evidence.py what the
message is and senderauth.py who sent it, hands the record to the store and answers only once
the record is durable. It must not send mail, render notices or write reply text itself
(replies.py does); the protocol and connection limits live in server.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.clock import Clock
from gateway.config import GatewaySettings, OfficeSettings
from gateway.errors import StoreError
from gateway.mail.addresses import AddressKind, normalize_sender, parse_address
from gateway.mail.dmarc import header_from_domain
from gateway.mail.evidence import MessageFacts, extract_facts
from gateway.notices.render import notice_from_address
from gateway.policy.decision import (
    Action,
    Decision,
    NoticeScope,
    decide,
    loop_reason,
    notice_suppression,
    replies_to_own_notice,
)
from gateway.smtp.dataread import ReceivedData
from gateway.smtp.postmaster import forward_jobs
from gateway.smtp.replies import (
    REPLY_BAD_RECIPIENT,
    REPLY_BAD_SENDER,
    REPLY_CHANGED,
    REPLY_GONE,
    REPLY_INTERNAL,
    REPLY_LOOP,
    REPLY_RECIPIENT_OK,
    REPLY_RELAY_DENIED,
    REPLY_SENDER_OK,
    REPLY_SEPARATE_TRANSACTION,
    REPLY_SIZE_EXCEEDED,
    REPLY_STORE_FAILED,
    REPLY_TOO_MANY_RECIPIENTS,
    REPLY_VRFY,
    accepted_reply,
    line_too_long_reply,
    oversize_reply,
    rate_limited_reply,
    reply_code,
    retired_reply,
    sender_check_failed_reply,
    unknown_mailbox_reply,
)
from gateway.smtp.senderauth import AuthResults, SenderAuthenticator, Verdict
from gateway.store.db import (
    JobRecord,
    MessageRecord,
    NoticeGate,
    RecipientRecord,
    RefusalRecord,
    Store,
    new_reference,
)

__all__ = ["GatewayEnvelope", "GatewaySession", "InboundHandler"]

log = structlog.get_logger()
# ---------------------------------------------------------------------------------------------
# Per-session and per-transaction state


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A recipient accepted at RCPT: the address as given and what was decided for it."""

    given: str
    address: str
    kind: AddressKind
    decision: Decision | None  # None for postmaster


class GatewaySession(Session):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.session_id = secrets.token_hex(6)
        self.opened = time.monotonic()
        self.messages = 0
        self.peer_ip = ""
        self.peer_port: int | None = None
        self.trusted = False  # connected from [server] trusted_networks


class GatewayEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.sender = ""
        self.sender_authenticated = False
        self.declared_size: int | None = None  # MAIL FROM's SIZE= (RFC 1870)
        self.accepted: list[_Accepted] = []
        self.answer: tuple[str, ...] | None = None
        self.received: ReceivedData | None = None  # set by the server at the end of DATA


def _answer_key(kind: AddressKind, decision: Decision | None) -> tuple[str, ...]:
    """Recipients with equal keys get the same reply at the end of DATA."""
    if decision is None or decision.action in (Action.RELAY, Action.RELAY_AND_ADVISE):
        return ("accept", "relay") if kind is AddressKind.RETIRED else ("accept", "postmaster")
    if decision.action is Action.ACCEPT_AND_NOTIFY:
        return ("accept", "not-filed", decision.office)
    if decision.action is Action.GONE:
        return ("gone",)
    return ("retired", decision.office)


def _group_key(key: tuple[str, ...]) -> tuple[str, ...]:
    # Relayed mail and mail to postmaster both simply get "250 Queued".
    return ("accept",) if key[:2] in (("accept", "relay"), ("accept", "postmaster")) else key


class InboundHandler:
    """aiosmtpd hooks: decide per recipient, record at the end of DATA, then answer."""

    def __init__(self, settings: GatewaySettings, store: Store, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.book = settings.address_book
        self.offices = {o.name: o for o in settings.offices}
        # Mail from these comes back to us: answering it would start a loop.
        self.own_domains = self.book.served_domains | {settings.server.hostname.lower()}
        self.own_addresses = frozenset({notice_from_address(settings).lower()})
        self.notice_domain = notice_from_address(settings).rpartition("@")[2]
        checks = settings.sender_auth
        self.authenticator = (
            SenderAuthenticator(settings.dns, timeout=checks.timeout) if checks.enabled else None
        )
        self.authserv_id = checks.authserv_id or settings.server.hostname
        self._tempfail_on_dns = checks.on_temperror == "tempfail"
        limits = settings.limits
        self.notice_limits = {
            NoticeScope.SENDER: limits.notices_per_sender,
            NoticeScope.DOMAIN: limits.notices_per_domain,
            NoticeScope.CLIENT: limits.notices_per_client,
            NoticeScope.TOTAL: limits.notices_total,
        }

    # -- EHLO: advertise what we do, and only that -------------------------------------------

    async def handle_EHLO(
        self,
        server: SMTP,
        session: GatewaySession,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # An MX takes no AUTH; aiosmtpd would offer it after STARTTLS.
        lines = [r[4:] for r in responses if r[4:] != "HELP" and not r[4:].startswith("AUTH")]
        lines += ["PIPELINING", "ENHANCEDSTATUSCODES"]
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_PROXY(
        self, server: SMTP, session: GatewaySession, envelope: Envelope, proxy_data: ProxyData
    ) -> bool:
        """Accept a PROXY header only from a trusted load balancer; then the client it names
        is the peer for trust, limits and the record."""
        if not self.settings.server.may_send_proxy(session.peer_ip) or not proxy_data.valid:
            log.warning("smtp.session.refused", reason="proxy-not-allowed", reply="")
            return False
        if proxy_data.src_addr is not None:  # None: a LOCAL/UNKNOWN health check of the balancer
            session.peer_ip = str(proxy_data.src_addr)
            session.peer_port = proxy_data.src_port
            session.trusted = self.settings.server.is_trusted(session.peer_ip)
            structlog.contextvars.bind_contextvars(peer_ip=session.peer_ip)
            log.info("smtp.session.proxied", peer_port=session.peer_port, trusted=session.trusted)
        return True

    async def handle_VRFY(
        self, server: SMTP, session: GatewaySession, envelope: Envelope, address: str
    ) -> str:
        return REPLY_VRFY

    # -- MAIL and RCPT --------------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        try:
            envelope.sender = normalize_sender(address)
        except ValueError:
            return REPLY_BAD_SENDER
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.sender_authenticated = session.trusted
        envelope.declared_size = _declared_size(mail_options)
        return REPLY_SENDER_OK

    async def handle_RCPT(
        self,
        server: SMTP,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            parsed = parse_address(address)
        except ValueError:
            return REPLY_BAD_RECIPIENT
        if len(envelope.rcpt_tos) >= self.settings.server.max_recipients:
            return _turned_away(
                "smtp.recipient.deferred",
                envelope,
                address,
                "too-many-recipients",
                REPLY_TOO_MANY_RECIPIENTS,
            )
        if any(a.address == str(parsed) for a in envelope.accepted):
            # The same mailbox twice: one recipient, one record (RFC 5321 §3.3 lets the
            # server treat duplicates as one); a second row would fail the transaction.
            return REPLY_RECIPIENT_OK
        lookup = self.book.lookup(parsed)
        if lookup.kind is AddressKind.FOREIGN:
            return _turned_away(
                "smtp.recipient.refused", envelope, address, "relay-denied", REPLY_RELAY_DENIED
            )
        if lookup.kind is AddressKind.UNKNOWN_LOCAL:
            return await self._refuse_unknown(session, envelope, address, parsed.domain)
        decision = None
        if lookup.kind is AddressKind.RETIRED:
            assert lookup.office is not None
            decision = decide(
                self.offices[lookup.office],
                self.clock(),
                sender_authenticated=envelope.sender_authenticated,
            )
            if decision.action.is_refused_at_rcpt:
                return await self._refuse_retired(session, envelope, address, decision)
            if self._is_declared_oversize(envelope):
                return await self._refuse_oversize(session, envelope, address, decision)
        elif self._is_declared_oversize(envelope):
            return _turned_away(
                "smtp.recipient.refused", envelope, address, "message-too-big", REPLY_SIZE_EXCEEDED
            )
        key = _group_key(_answer_key(lookup.kind, decision))
        if envelope.answer is not None and key != envelope.answer:
            return _turned_away(
                "smtp.recipient.deferred",
                envelope,
                address,
                "answer-differs",
                REPLY_SEPARATE_TRANSACTION,
            )
        envelope.answer = key
        envelope.accepted.append(_Accepted(address, str(parsed), lookup.kind, decision))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return REPLY_RECIPIENT_OK

    async def _refuse_retired(
        self, session: GatewaySession, envelope: GatewayEnvelope, recipient: str, decision: Decision
    ) -> str:
        office = self.offices[decision.office]

        def reply(reference: str) -> str:
            if decision.action is Action.GONE:
                return REPLY_GONE
            return retired_reply(office, reference)

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
            lambda ref: oversize_reply(office, ref),
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
            lambda ref: unknown_mailbox_reply(office, ref),
            reason="no-such-mailbox",
            office=office,
            phase=None,
        )

    def _is_declared_oversize(self, envelope: GatewayEnvelope) -> bool:
        declared = envelope.declared_size
        return declared is not None and declared > self.settings.server.max_message_size

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

    # -- DATA: the record first, then the answer ----------------------------------------------

    async def handle_DATA(
        self, server: SMTP, session: GatewaySession, envelope: GatewayEnvelope
    ) -> str:
        received_at = self.clock()
        data = envelope.received or _whole(envelope.original_content or b"")
        facts = _facts_of(data)
        raw = data.content
        reference = new_reference(received_at)
        session.messages += 1
        automatic = self._automatic(envelope, facts)
        loop = self._loop(facts, is_automatic=automatic is not None)
        automatic = None if loop else automatic
        auth = (
            None
            if loop or automatic
            else await self._authenticate(session, envelope, facts, raw, complete=data.is_complete)
        )
        authenticated = envelope.sender_authenticated or (
            auth is not None and auth.verdict is Verdict.PASS
        )
        recipients = self._redecide(envelope, received_at, authenticated=authenticated)
        keys = {
            _group_key(_answer_key(a.kind, d))
            for a, d in zip(envelope.accepted, recipients, strict=True)
        }
        key = keys.pop() if len(keys) == 1 else None
        problem = None if key is None else _problem(data, key)
        # Nothing is ever mailed to a sender we could not authenticate: a forged sender
        # would turn the notice into backscatter. The SMTP reply is their answer. A person
        # answering our notice gets the refusal, but not a second notice.
        suppressed = automatic or (None if authenticated else "sender-not-authenticated")
        if suppressed is None and replies_to_own_notice(
            facts.headers, own_domain=self.notice_domain
        ):
            suppressed = "reply-to-notice"
        if loop is not None:
            reply, outcome, suppressed = REPLY_LOOP, "rejected", f"loop-{loop}"
        elif auth is not None and auth.verdict is Verdict.TEMPERROR and self._tempfail_on_dns:
            office = None if key is None else self._office_of(key)
            reply, outcome = sender_check_failed_reply(reference, office), "deferred"
            suppressed = "sender-check-temperror"
        elif key is None:
            reply, outcome, suppressed = REPLY_CHANGED, "deferred", None
        elif problem is not None:
            reply, outcome = self._problem_reply(problem, key, reference), "rejected"
        else:
            reply, outcome = self._final_reply(key, reference, notice_follows=suppressed is None)
        answered = loop is None and outcome != "deferred"
        jobs = (
            self._jobs(envelope, recipients, suppressed, with_relays=problem is None)
            if answered
            else ()
        )
        record = self._record(
            session,
            envelope,
            reference,
            received_at,
            facts,
            recipients,
            outcome=outcome,
            reply=reply,
            jobs=jobs,
            suppressed=suppressed,
            raw=raw,
        )
        record = replace(
            record,
            auth=self._auth_text(envelope, auth),
            sender_authenticated=authenticated,
            refused_for=problem,
        )
        gate = self._gate(session, envelope, record, key) if loop is None else None
        try:
            record = await self.store.record_message(record, gate)
        except StoreError as exc:
            log.error("store.write_failed", reference=reference, error=str(exc))
            return REPLY_STORE_FAILED
        self._log_message(record)
        return record.reply

    def _problem_reply(self, problem: str, key: tuple[str, ...], reference: str) -> str:
        if problem == _LINE_TOO_LONG:
            return line_too_long_reply(reference)
        return oversize_reply(self._office_of(key), reference)

    def _office_of(self, key: tuple[str, ...]) -> OfficeSettings | None:
        """The office whose filings a transaction's answer is about; None for mail that is
        relayed or kept for postmaster (not refused as a filing)."""
        if key[0] == "gone" or key == ("accept",):
            return None
        return self.offices[key[-1]]

    def _loop(self, facts: MessageFacts, *, is_automatic: bool) -> str | None:
        return loop_reason(
            facts.headers,
            message_id=facts.message_id,
            received_count=facts.received_count,
            own_domain=self.notice_domain,
            max_received=self.settings.limits.max_received_headers,
            is_automatic=is_automatic,
        )

    def _gate(
        self,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        record: MessageRecord,
        key: tuple[str, ...] | None,
    ) -> NoticeGate | None:
        """The limits on this message's notice; they are applied as the record is written."""
        if not any(job.is_notice for job in record.jobs):
            return None
        limits = self.settings.limits
        facts = record.facts
        # The same message: its Message-ID from the same sender, else the very same bytes.
        identity = facts.message_id or f"sha256:{facts.sha256}"
        dedup_key = hashlib.sha256(f"{envelope.sender.lower()}\n{identity}".encode()).hexdigest()
        at = record.received_at.astimezone(UTC)
        sender = envelope.sender.lower()
        counters = {
            NoticeScope.SENDER: sender,
            NoticeScope.DOMAIN: sender.rpartition("@")[2],
            NoticeScope.CLIENT: session.peer_ip,
            NoticeScope.TOTAL: "*",
        }
        # A relayed message keeps its 250 when only its advisory is over a limit; a refusal
        # or an accept-and-notify answer depends on the notice, so it becomes a 451.
        depends = key is not None and key != ("accept",)
        office = None if key is None else self._office_of(key)
        reference = record.reference
        return NoticeGate(
            dedup_key=dedup_key,
            dedup_since=record.received_at - timedelta(seconds=limits.dedup_window),
            hour=f"{at:%Y-%m-%dT%H}",
            counters=counters,
            limits=self.notice_limits,
            limited_reply=(lambda scope: (rate_limited_reply(scope, reference, office), "deferred"))
            if depends
            else None,
        )

    def _redecide(
        self, envelope: GatewayEnvelope, at: datetime, *, authenticated: bool
    ) -> list[Decision | None]:
        # The decision on record is the one at arrival (end of DATA), not at RCPT time.
        return [
            None
            if a.decision is None
            else decide(self.offices[a.decision.office], at, sender_authenticated=authenticated)
            for a in envelope.accepted
        ]

    async def _authenticate(
        self,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        facts: MessageFacts,
        raw: bytes,
        *,
        complete: bool,
    ) -> AuthResults | None:
        """SPF, DKIM and DMARC for a sender who could be sent a notice, else None."""
        if self.authenticator is None or envelope.sender_authenticated or not envelope.sender:
            return None
        if all(a.decision is None for a in envelope.accepted):
            return None  # mail for postmaster only: nobody will be answered
        return await self.authenticator.check(
            client_ip=session.peer_ip,
            helo=session.host_name,
            mail_from=envelope.sender,
            raw=raw,
            from_header_domain=header_from_domain(facts.from_header),
            has_body=complete,
        )

    def _auth_text(self, envelope: GatewayEnvelope, auth: AuthResults | None) -> str | None:
        if auth is not None:
            return auth.header_value(self.authserv_id)
        return "trusted-network" if envelope.sender_authenticated else None

    def _automatic(self, envelope: GatewayEnvelope, facts: MessageFacts) -> str | None:
        """The RFC 3834 reason no notice may answer this message, or None."""
        return notice_suppression(
            envelope.sender,
            facts.headers,
            own_domains=self.own_domains,
            own_addresses=self.own_addresses,
        )

    def _final_reply(
        self, key: tuple[str, ...], reference: str, *, notice_follows: bool
    ) -> tuple[str, str]:
        if key[0] == "accept":
            office = self.offices[key[2]] if len(key) > 2 else None
            return accepted_reply(reference, office, notice_follows=notice_follows), "accepted"
        if key[0] == "gone":
            return REPLY_GONE, "rejected"
        return retired_reply(self.offices[key[1]], reference), "rejected"

    def _jobs(
        self,
        envelope: GatewayEnvelope,
        decisions: Sequence[Decision | None],
        suppressed: str | None,
        *,
        with_relays: bool,
    ) -> tuple[JobRecord, ...]:
        relay: dict[str, list[str]] = {}
        notices: dict[str, str] = {}
        for accepted, decision in zip(envelope.accepted, decisions, strict=True):
            if decision is None:
                continue
            if decision.action in _RELAYING and with_relays:
                relay.setdefault(decision.office, []).append(accepted.given)
            kind = _NOTICE_FOR.get(decision.action)
            if kind is not None:
                notices.setdefault(decision.office, kind)
        jobs = [
            JobRecord(
                "relay", envelope.sender, tuple(rcpts), office, self.offices[office].legacy_host
            )
            for office, rcpts in relay.items()
        ]
        if suppressed is None:
            jobs += [
                JobRecord(kind, "", (envelope.sender,), office) for office, kind in notices.items()
            ]
        # Mail to postmaster goes on to the people who read it ([postmaster] forward_to),
        # unless the message itself was refused (only its head was kept).
        if with_relays and any(a.kind is AddressKind.POSTMASTER for a in envelope.accepted):
            jobs += forward_jobs(self.settings.postmaster.forward_to)
        return tuple(jobs)

    def _record(
        self,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        reference: str,
        received_at: datetime,
        facts: MessageFacts,
        decisions: Sequence[Decision | None],
        *,
        outcome: str,
        reply: str,
        jobs: tuple[JobRecord, ...],
        suppressed: str | None,
        raw: bytes,
    ) -> MessageRecord:
        recipients = tuple(
            self._recipient_record(a, d, received_at)
            for a, d in zip(envelope.accepted, decisions, strict=True)
        )
        has_notice = any(j.is_notice for j in jobs)
        notice = "queued" if has_notice else (f"suppressed:{suppressed}" if suppressed else "none")
        keep_raw, keep_until = self._retention(jobs, envelope, received_at)
        return MessageRecord(
            reference=reference,
            received_at=received_at,
            session_id=session.session_id,
            peer_ip=session.peer_ip,
            peer_port=session.peer_port,
            helo=session.host_name,
            tls=_tls_summary(session),
            mail_from=envelope.sender,
            facts=facts,
            recipients=recipients,
            outcome=outcome,
            reply=reply,
            notice=notice,
            jobs=jobs,
            raw=raw if keep_raw else None,
            raw_keep_until=keep_until,
        )

    def _retention(
        self, jobs: Sequence[JobRecord], envelope: GatewayEnvelope, received_at: datetime
    ) -> tuple[bool, datetime | None]:
        # Mail still to be relayed, and mail for postmaster, is kept until dealt with.
        if any(j.kind == "relay" for j in jobs) or any(
            a.decision is None for a in envelope.accepted
        ):
            return True, None
        storage = self.settings.storage
        if storage.keep_raw:
            return True, received_at + timedelta(days=storage.raw_retention_days)
        return False, None

    def _recipient_record(
        self, accepted: _Accepted, decision: Decision | None, at: datetime
    ) -> RecipientRecord:
        if decision is None:
            return RecipientRecord(accepted.given, accepted.kind, "keep", "mail for postmaster", at)
        office = self.offices[decision.office]
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

    def _log_message(self, record: MessageRecord) -> None:
        facts = record.facts
        ref = record.reference
        log.info(
            "smtp.message.received",
            reference=ref,
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
        for r in record.recipients:
            log.info(
                "policy.decided",
                reference=ref,
                recipient=r.recipient,
                office=r.office,
                phase=r.phase,
                action=r.action,
                reason=r.reason,
                arrival_utc=record.received_at.isoformat(),
                arrival_local=r.local_time,
            )
        if record.notice.startswith("suppressed:"):
            log.info(
                "notice.suppressed",
                reference=ref,
                sender=record.mail_from,
                reason=record.notice.partition(":")[2],
                duplicate_of=record.duplicate_of,
            )
        for job in record.jobs:
            log.info(
                "outbox.enqueued",
                reference=ref,
                job_kind=job.kind,
                office=job.office,
                recipients=list(job.recipients),
                destination=job.destination,
            )
        log.info(
            "smtp.reply.sent",
            reference=ref,
            outcome=record.outcome,
            reply_code=reply_code(record.reply),
            reply=record.reply,
            **({} if record.outcome == "accepted" else {"reason": _refusal_reason(record)}),
        )

    # -- our own failures -----------------------------------------------------------------------

    async def handle_exception(self, error: Exception) -> str:
        # Our bug is never a 5xx, and its text never reaches the peer.
        log.error("smtp.session.failed", reply=REPLY_INTERNAL, exc_info=error)
        return REPLY_INTERNAL


def _turned_away(
    event: str, envelope: GatewayEnvelope, recipient: str, reason: str, reply: str
) -> str:
    log.info(
        event,
        sender=envelope.sender,
        recipient=recipient,
        reason=reason,
        reply_code=reply_code(reply),
        reply=reply,
    )
    return reply


_RELAYING = frozenset({Action.RELAY, Action.RELAY_AND_ADVISE})
_TOO_BIG = "message-too-big"
_LINE_TOO_LONG = "line-too-long"


def _declared_size(mail_options: Sequence[str]) -> int | None:
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def _whole(raw: bytes) -> ReceivedData:
    return ReceivedData(
        content=raw,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        is_complete=True,
        has_long_line=False,
    )


def _facts_of(data: ReceivedData) -> MessageFacts:
    facts = extract_facts(data.content)
    if data.is_complete:
        return facts
    # Only the header block was kept: the record has the size and hash of all that came.
    return replace(facts, size=data.size, sha256=data.sha256, truncated=True)


def _refusal_reason(record: MessageRecord) -> str:
    """Why a message was rejected or deferred, in the words of the records and metrics."""
    if record.refused_for:
        return record.refused_for
    why = record.notice.partition(":")[2]
    if why.startswith(("loop-", "rate-limit-")) or why == "sender-check-temperror":
        return why
    if record.outcome == "deferred":
        return "recipients-changed"
    gone = all(r.action == Action.GONE for r in record.recipients)
    return "address-decommissioned" if gone else "address-retired"


def _problem(data: ReceivedData, key: tuple[str, ...]) -> str | None:
    """What about the message itself refuses it, whatever the addresses say, or None."""
    if not data.is_complete:
        return _TOO_BIG
    # A long line harms only a message we pass on (RFC 5321 §4.5.3.1.6); a filing that is
    # refused or kept for postmaster is answered as any other.
    if data.has_long_line and key == ("accept",):
        return _LINE_TOO_LONG
    return None


_NOTICE_FOR = {
    Action.RELAY_AND_ADVISE: "advisory",
    Action.REJECT_AFTER_DATA: "notice",
    Action.ACCEPT_AND_NOTIFY: "notice",
}


def _tls_summary(session: GatewaySession) -> str | None:
    info: dict[str, Any] | None = session.ssl
    if not info:
        return None
    ssl_object = info.get("ssl_object")
    if ssl_object is None:
        return "tls"
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()} {cipher[0]}" if cipher else str(ssl_object.version())
