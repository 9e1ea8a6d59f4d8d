"""A recording SMTP listener for delivery tests: the real aiosmtpd, on a port the OS picks.

Its replies are scripted from the peer side (a 4xx or 5xx per DATA, a stall), so failures
reach the gateway exactly as a remote server would send them.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Received", "Sink", "start_sink"]


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    tls: bool
    login: str | None


@dataclass
class Sink:
    """What the listener saw; `replies` scripts the answers to DATA, first to last."""

    host: str
    replies: list[str] = field(default_factory=list)
    stall_s: float = 0.0
    # DATA waits for this event, when there is one: a stall the test ends when it chooses.
    stall_until: asyncio.Event | None = None
    accepted: list[Received] = field(default_factory=list)
    attempts: int = 0
    server: asyncio.Server | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0  # connections the listener accepted
    open_connections: int = 0  # of those, the ones not closed yet
    # A server that lets sessions go: at this command ("RSET" or "MAIL"), in a session that
    # has carried a mail, it closes the connection without an answer (`drops` times).
    drop_at: str | None = None
    drops: int = 0
    _carried: dict[int, int] = field(default_factory=dict)  # mails accepted per connection

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if self.stall_until is not None:
            await self.stall_until.wait()
        reply = self.replies.pop(0) if self.replies else "250 2.0.0 Accepted"
        if reply.startswith("250"):
            self._carried[id(server)] = self._carried.get(id(server), 0) + 1
            login = session.auth_data.login.decode() if session.auth_data else None
            self.accepted.append(
                Received(
                    envelope.mail_from or "",
                    tuple(envelope.rcpt_tos),
                    bytes(envelope.original_content or b""),
                    session.ssl is not None,
                    login,
                )
            )
            self.arrived.set()
        return reply

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._maybe_drop("RSET", server)
        return "250 OK"

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        await self._maybe_drop("MAIL", server)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def _maybe_drop(self, command: str, server: SMTP) -> None:
        if self.drop_at != command or not self.drops or not self._carried.get(id(server)):
            return
        self.drops -= 1
        assert server.transport is not None
        server.transport.close()
        # No answer: the closed connection cancels this handler.
        await asyncio.Event().wait()

    async def wait_for(self, count: int, *, within: float = 10.0) -> list[Received]:
        async with asyncio.timeout(within):
            while len(self.accepted) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.accepted

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class _CountingSMTP(SMTP):
    """aiosmtpd's server, counting its connections in the sink (its handler)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.event_handler.connections += 1
        self.event_handler.open_connections += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.open_connections -= 1
        super().connection_lost(error)


def _authenticator(users: dict[str, str]) -> Any:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and users.get(data.login.decode()) == (
            data.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    return check


async def start_sink(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls: ssl.SSLContext | None = None,
    users: dict[str, str] | None = None,
    replies: list[str] | None = None,
    smtputf8: bool = False,
) -> Sink:
    """Listen on host:port (0: any free port); with `users`, AUTH is required after STARTTLS;
    with `smtputf8`, SMTPUTF8 is offered (aiosmtpd's default is not to)."""
    sink = Sink(host=host, replies=list(replies or []))

    def factory() -> SMTP:
        return _CountingSMTP(
            sink,
            hostname="sink.test.example",
            tls_context=tls,
            authenticator=_authenticator(users) if users else None,
            auth_required=bool(users),
            auth_require_tls=True,
            enable_SMTPUTF8=smtputf8,
        )

    loop = asyncio.get_running_loop()
    sink.server = await loop.create_server(factory, host=host, port=port)
    return sink
