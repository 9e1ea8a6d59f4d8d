"""Per-session and per-transaction state of the SMTP conversation.

aiosmtpd's Session and Envelope, with what the handler learns along the way. Values only:
nothing here talks to the peer, the store or the policy.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from aiosmtpd.smtp import Envelope, Session

from gateway.mail.addresses import AddressKind
from gateway.policy.decision import Decision
from gateway.policy.verdict import AnswerGroup
from gateway.smtp.dataread import ReceivedData

__all__ = ["Accepted", "GatewayEnvelope", "GatewaySession"]


@dataclass(frozen=True, slots=True)
class Accepted:
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
        self.accepted: list[Accepted] = []
        # The answer every recipient so far will get at the end of DATA: one per transaction.
        self.answer: AnswerGroup | None = None
        self.received: ReceivedData | None = None  # set by the server at the end of DATA
