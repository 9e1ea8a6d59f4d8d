"""The SMTP conversation's hooks: aiosmtpd's handler, a thin driver.

EHLO, PROXY, VRFY and MAIL are answered here; RCPT goes to recipients.py (what policy decides
per address) and the end of DATA to message.py (facts, the pure verdict of policy/verdict.py,
one durable record, then the reply). It must not send mail, render notices or word replies
(replies.py does); the protocol and connection limits live in server.py.
"""

from __future__ import annotations

import structlog
from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, Envelope

from gateway.clock import Clock
from gateway.mail.addresses import normalize_sender
from gateway.smtp.arrival import SenderChecks, declared_size
from gateway.smtp.message import MessageDesk
from gateway.smtp.receiving import ReceiveSettings
from gateway.smtp.recipients import RecipientDesk
from gateway.smtp.replies import REPLY_BAD_SENDER, REPLY_INTERNAL, REPLY_SENDER_OK, REPLY_VRFY
from gateway.smtp.session import GatewayEnvelope, GatewaySession
from gateway.store.interface import RecordStore

__all__ = ["GatewayEnvelope", "GatewaySession", "InboundHandler"]

log = structlog.get_logger()


class InboundHandler:
    """aiosmtpd hooks: decide per recipient, record at the end of DATA, then answer."""

    def __init__(self, receiving: ReceiveSettings, store: RecordStore, clock: Clock) -> None:
        self.server = receiving.server
        self.store = store
        self.clock = clock
        rules = receiving.rules
        self.recipients = RecipientDesk(
            receiving.book,
            rules.offices,
            server=receiving.server,
            store=store,
            clock=clock,
            public_url=receiving.public_url,
        )
        checks = SenderChecks(
            receiving.sender_auth, receiving.dns, hostname=receiving.server.hostname
        )
        self.messages = MessageDesk(
            rules,
            checks,
            storage=receiving.storage,
            store=store,
            clock=clock,
            public_url=receiving.public_url,
        )

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
        if not self.server.may_send_proxy(session.peer_ip) or not proxy_data.valid:
            log.warning("smtp.session.refused", reason="proxy-not-allowed", reply="")
            return False
        if proxy_data.src_addr is not None:  # None: a LOCAL/UNKNOWN health check of the balancer
            session.peer_ip = str(proxy_data.src_addr)
            session.peer_port = proxy_data.src_port
            session.trusted = self.server.is_trusted(session.peer_ip)
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
        envelope.declared_size = declared_size(mail_options)
        return REPLY_SENDER_OK

    async def handle_RCPT(
        self,
        server: SMTP,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        return await self.recipients.admit(session, envelope, address, rcpt_options)

    # -- DATA: the record first, then the answer ----------------------------------------------

    async def handle_DATA(
        self, server: SMTP, session: GatewaySession, envelope: GatewayEnvelope
    ) -> str:
        return await self.messages.receive(session, envelope)

    # -- our own failures -----------------------------------------------------------------------

    async def handle_exception(self, error: Exception) -> str:
        # Our bug is never a 5xx, and its text never reaches the peer.
        log.error("smtp.session.failed", reply=REPLY_INTERNAL, exc_info=error)
        return REPLY_INTERNAL
