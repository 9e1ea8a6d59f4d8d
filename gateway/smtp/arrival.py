"""Facts gathering at the end of DATA: what the message and its envelope say, and who sent it.

It reads the message (evidence.py), asks the sender checks (senderauth.py, DNS) and states the
result as the pure verdict's input (policy/verdict.py `Arrival`). It decides nothing and
answers nobody.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from gateway.config import DnsSettings, SenderAuthSettings
from gateway.mail.dmarc import header_from_domain
from gateway.mail.evidence import MessageFacts, extract_facts
from gateway.policy.verdict import Addressee, Arrival, SenderCheck
from gateway.smtp.dataread import ReceivedData
from gateway.smtp.senderauth import AuthResults, SenderAuthenticator
from gateway.smtp.session import GatewayEnvelope, GatewaySession

__all__ = [
    "SenderChecks",
    "arrival_of",
    "declared_size",
    "facts_of",
    "received_data",
    "sender_check",
    "tls_summary",
]


def received_data(envelope: GatewayEnvelope) -> ReceivedData:
    """What DATA brought: as the server read it, else the whole content (aiosmtpd's path)."""
    if envelope.received is not None:
        return envelope.received
    raw = envelope.original_content or b""
    return ReceivedData(
        content=raw,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        is_complete=True,
        has_long_line=False,
    )


def facts_of(data: ReceivedData) -> MessageFacts:
    """The message's facts; of an oversize one, what its kept head says."""
    facts = extract_facts(data.content, sha256=data.sha256)
    if data.is_complete:
        return facts
    # Only the header block was kept: the record has the size and hash of all that came.
    return replace(facts, size=data.size, sha256=data.sha256, truncated=True)


def arrival_of(
    session: GatewaySession, envelope: GatewayEnvelope, facts: MessageFacts, data: ReceivedData
) -> Arrival:
    """The message as the verdict sees it."""
    recipients = tuple(
        Addressee(a.given, None if a.decision is None else a.decision.office)
        for a in envelope.accepted
    )
    return Arrival(
        sender=envelope.sender,
        recipients=recipients,
        peer_ip=session.peer_ip,
        is_trusted=envelope.sender_authenticated,
        headers=facts.headers,
        message_id=facts.message_id,
        sha256=facts.sha256,
        received_count=facts.received_count,
        is_complete=data.is_complete,
        has_long_line=data.has_long_line,
    )


class SenderChecks:
    """SPF, DKIM and DMARC of a message's sender, when they are configured."""

    def __init__(self, checks: SenderAuthSettings, dns: DnsSettings, *, hostname: str) -> None:
        self.authenticator = (
            SenderAuthenticator(dns, timeout=checks.timeout) if checks.enabled else None
        )
        # [server] hostname names us in Authentication-Results unless authserv_id does.
        self.authserv_id = checks.authserv_id or hostname

    async def check(
        self,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        facts: MessageFacts,
        data: ReceivedData,
    ) -> AuthResults | None:
        """The checks' results for a sender who could be sent a notice, else None."""
        if self.authenticator is None or envelope.sender_authenticated or not envelope.sender:
            return None
        if all(a.decision is None for a in envelope.accepted):
            return None  # mail for postmaster only: nobody will be answered
        return await self.authenticator.check(
            client_ip=session.peer_ip,
            helo=session.host_name,
            mail_from=envelope.sender,
            raw=data.content,
            from_header_domain=header_from_domain(facts.from_header),
            has_body=data.is_complete,
        )

    def header_value(self, envelope: GatewayEnvelope, auth: AuthResults | None) -> str | None:
        """The Authentication-Results value on record, if any."""
        if auth is not None:
            return auth.header_value(self.authserv_id)
        return "trusted-network" if envelope.sender_authenticated else None


def sender_check(auth: AuthResults | None) -> SenderCheck:
    """The checks' verdict in the words of the pure core."""
    return SenderCheck.UNCHECKED if auth is None else SenderCheck(auth.verdict.value)


def declared_size(mail_options: Sequence[str]) -> int | None:
    """MAIL FROM's SIZE= (RFC 1870), if given."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def tls_summary(session: GatewaySession) -> str | None:
    """The session's TLS version and cipher, for the record; None without TLS."""
    info: dict[str, Any] | None = session.ssl
    if not info:
        return None
    ssl_object = info.get("ssl_object")
    if ssl_object is None:
        return "tls"
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()} {cipher[0]}" if cipher else str(ssl_object.version())
