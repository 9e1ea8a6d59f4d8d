"""The SMTP server: aiosmtpd's protocol with our limits, and start_server().

Connection caps, idle and whole-session timeouts, enhanced codes on aiosmtpd's own replies,
no AUTH, the PROXY protocol and the drain on shutdown. What to answer is the handler's
business (handler.py); this module only runs the conversation.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import AnyStr, cast

import structlog
from aiosmtpd.smtp import SMTP, syntax

from gateway.audit.chain import ChainedLog
from gateway.clock import Clock
from gateway.config import ListenAddress, ServerSettings
from gateway.smtp.dataread import read_data
from gateway.smtp.handler import GatewayEnvelope, GatewaySession, InboundHandler
from gateway.smtp.receiving import ReceiveSettings
from gateway.smtp.replies import (
    REPLY_IDLE_TIMEOUT,
    REPLY_INTERNAL,
    REPLY_NO_AUTH,
    REPLY_SESSION_TIMEOUT,
    REPLY_SHUTTING_DOWN,
    REPLY_TOO_MANY_CONNECTIONS,
    check_replies,
    with_enhanced_code,
)
from gateway.smtp.setup import set_up
from gateway.store.interface import RecordStore

__all__ = ["GatewaySMTP", "Serving", "Sessions", "Snapshot", "start_server"]

log = structlog.get_logger()

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# <local@domain> with a dot-atom local part and an LDH domain, then the ESMTP parameters.
_PLAIN_PATH = re.compile(
    rf"<(?P<address>{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>[ \t]*(?P<rest>.*)",
    re.DOTALL,
)

# Seconds a load balancer has to send its PROXY header after connecting.
_PROXY_TIMEOUT = 10.0
# The session's StreamReader limit. aiosmtpd makes it line_length_limit (1001), so a 2 KB
# message already stops reading from the socket (over twice the limit) and starts it again,
# two epoll_ctl calls, and DATA comes in 1 KB pieces. Nothing depends on it being small:
# command lines are held to aiosmtpd's command_size_limit, DATA lines to line_length_limit
# by dataread.py; what it bounds is the unread input held per session (twice this).
_STREAM_LIMIT = 64 * 1024
# While draining: seconds a session whose transaction was just answered has to send QUIT.
_QUIT_GRACE_S = 0.5

# ---------------------------------------------------------------------------------------------
# The handler


@dataclass(slots=True)
class Sessions:
    """Live sessions of this process: the connection cap and the drain on shutdown."""

    limit: int
    live: set[GatewaySMTP] = field(default_factory=set)
    accepting: bool = True
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, protocol: GatewaySMTP) -> None:
        self.live.add(protocol)
        self._idle.clear()

    def discard(self, protocol: GatewaySMTP) -> None:
        self.live.discard(protocol)
        if not self.live:
            self._idle.set()

    async def drain(self, deadline: float) -> int:
        """Stop taking sessions and transactions: idle sessions get 421 at once, those in a
        transaction get up to `deadline` seconds to finish it (then 421); the rest are cut
        at the deadline. Returns how many were cut."""
        self.accepting = False
        for protocol in list(self.live):
            protocol.close_if_idle()
        if self.live:
            try:
                async with asyncio.timeout(deadline):
                    await self._idle.wait()
            except TimeoutError:
                pass
        cut = list(self.live)
        for protocol in cut:
            protocol.close_with(REPLY_SHUTTING_DOWN)
        return len(cut)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The settings a session is served with, and the handler built from them."""

    receiving: ReceiveSettings
    handler: InboundHandler


class Serving:
    """What the next session is served with. A reload (SIGHUP) swaps the snapshot whole; a
    session keeps the one it took when it connected, to its end."""

    def __init__(self, receiving: ReceiveSettings, store: RecordStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self.current = self._snapshot(receiving)

    def use(self, receiving: ReceiveSettings) -> None:
        """Serve sessions from now on with `receiving`.

        Raises:
            ConfigError: an office's replies would not fit an SMTP reply line.
        """
        self.current = self._snapshot(receiving)

    def _snapshot(self, receiving: ReceiveSettings) -> Snapshot:
        check_replies(receiving.rules.offices.values(), public_url=receiving.public_url)
        return Snapshot(receiving, InboundHandler(receiving, self._store, self._clock))


# ---------------------------------------------------------------------------------------------
# The protocol


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with connection limits, enhanced codes everywhere and no AUTH."""

    def __init__(
        self,
        handler: InboundHandler,
        sessions: Sessions,
        server: ServerSettings,
        tls_context: ssl.SSLContext | None,
        audit: ChainedLog | None = None,
    ) -> None:
        # SMTP.__init__'s work, its command tables found once per class (setup.py).
        set_up(
            self,
            handler,
            hostname=server.hostname,  # never getfqdn() per connection
            ident="ESMTP",  # the banner does not give away software or versions
            data_size_limit=server.max_message_size,
            tls_context=tls_context,
            timeout=server.idle_timeout,
            command_call_limit=server.max_commands,
            proxy_protocol_timeout=_PROXY_TIMEOUT if server.proxy_protocol else None,
            stream_limit=_STREAM_LIMIT,
        )
        self._handler = handler
        self._sessions = sessions
        self._audit = audit
        self._trust = server.is_trusted
        self._session_limit = server.session_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._drain_close: asyncio.TimerHandle | None = None

    async def _handle_client(self) -> None:
        # This task's context is its own copy, so the binding stays with this session.
        session = self._gateway_session()
        structlog.contextvars.bind_contextvars(
            session_id=session.session_id, peer_ip=session.peer_ip
        )
        await super()._handle_client()

    def _gateway_session(self) -> GatewaySession:
        # A method, not a property: aiosmtpd inspects every attribute at construction.
        session = self.session
        assert isinstance(session, GatewaySession)
        return session

    def _create_session(self) -> GatewaySession:
        return GatewaySession(self.loop)

    def _create_envelope(self) -> GatewayEnvelope:
        return GatewayEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            return  # the same session, after STARTTLS
        session = self._gateway_session()
        peer = transport.get_extra_info("peername") or ("", None)
        session.peer_ip, session.peer_port = str(peer[0]), peer[1]
        session.trusted = self._trust(session.peer_ip)
        if not self._sessions.accepting or len(self._sessions.live) >= self._sessions.limit:
            reason = "shutting-down" if not self._sessions.accepting else "too-many-connections"
            reply = (
                REPLY_SHUTTING_DOWN if not self._sessions.accepting else REPLY_TOO_MANY_CONNECTIONS
            )
            log.warning("smtp.session.refused", peer_ip=session.peer_ip, reason=reason, reply=reply)
            if self._handler_coroutine is not None:
                self._handler_coroutine.cancel()
            self.close_with(reply)
            return
        self._sessions.add(self)
        self._deadline = self.loop.call_later(self._session_limit, self._session_expired)
        log.info(
            "smtp.session.opened",
            session_id=session.session_id,
            peer_ip=session.peer_ip,
            peer_port=session.peer_port,
        )

    def connection_lost(self, error: Exception | None) -> None:
        if self in self._sessions.live:
            session = self._gateway_session()
            log.info(
                "smtp.session.closed",
                session_id=session.session_id,
                peer_ip=session.peer_ip,
                messages=session.messages,
                duration_s=round(time.monotonic() - session.opened, 3),
            )
            self._sessions.discard(self)
        for timer in (self._deadline, self._drain_close):
            if timer is not None:
                timer.cancel()
        super().connection_lost(error)

    def is_idle(self) -> bool:
        """Whether the session is between transactions (no MAIL yet, or its DATA answered)."""
        envelope = self.envelope
        return envelope is None or envelope.mail_from is None

    def close_if_idle(self) -> None:
        """On shutdown: a session between transactions is told 421 and closed now."""
        if self.is_idle():
            self.close_with(REPLY_SHUTTING_DOWN)

    def close_with(self, reply: str) -> None:
        """Send a final reply and close, whatever the session is doing."""
        # Not an isinstance check: uvloop's transports do not derive from asyncio's classes.
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is None or transport.is_closing():
            return
        transport.write(reply.encode("ascii") + b"\r\n")
        transport.close()

    def _timeout_cb(self) -> None:
        self._log_timeout("idle", REPLY_IDLE_TIMEOUT)
        self.close_with(REPLY_IDLE_TIMEOUT)

    def _session_expired(self) -> None:
        self._log_timeout("session", REPLY_SESSION_TIMEOUT)
        self.close_with(REPLY_SESSION_TIMEOUT)

    def _log_timeout(self, limit: str, reply: str) -> None:
        session = self._gateway_session()
        log.info(
            "smtp.session.timed_out",
            session_id=session.session_id,
            peer_ip=session.peer_ip,
            limit=limit,
            reply=reply,
        )

    async def push(self, status: AnyStr) -> None:
        if not isinstance(status, str):
            await super().push(status)
            return
        reply = with_enhanced_code(status)
        if reply.startswith("421 4.7.0"):
            # aiosmtpd is about to close the session for repeating a command too often.
            log.warning("smtp.session.refused", reason="command-limit", reply=reply)
        await super().push(reply)
        if not self._sessions.accepting and self.is_idle() and self._drain_close is None:
            # Draining and the transaction answered: a moment for the client's QUIT (often
            # pipelined behind the data), then 421. A new MAIL gets 421 at once (smtp_MAIL).
            self._drain_close = self.loop.call_later(_QUIT_GRACE_S, self.close_if_idle)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd answers an exception inside handle_exception with "500 Error: (type)
        # text": a permanent failure for our own problem, with our internals in it.
        try:
            return await super().handle_exception(error)
        except Exception:  # the session's last resort (the handler's own logging failed)
            return REPLY_INTERNAL

    def _unrecordable(self) -> str | None:
        """451 while the audit log cannot be written, else None.

        Fail closed: every record has its events on the chain, so no transaction starts or
        ends in a record while they would only wait in memory (chain.py)."""
        failure = None if self._audit is None else self._audit.write_error
        if failure is None:
            return None
        log.error("smtp.session.failed", reply=REPLY_INTERNAL, error=f"audit log: {failure}")
        return REPLY_INTERNAL

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every MAIL and RCPT address with the email package's RFC 5322
        # parser, a fifth of a session's time. Plain <dot-atom@domain> arguments, nearly all
        # of them, parse to exactly the same result with one regular expression; anything
        # else (quoted local parts, comments, source routes) still goes the long way.
        match = _PLAIN_PATH.fullmatch(arg)
        if match is not None and not self.local_part_limit:
            return match["address"], match["rest"]
        address, rest = super()._getaddr(arg)
        return address, rest

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push(REPLY_NO_AUTH)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")  # HELP, as aiosmtpd's
    async def smtp_MAIL(self, arg: str) -> None:
        # aiosmtpd answers a declared SIZE over the limit with 552 before any recipient is
        # named, so a filing could never be told it was not filed. The limit is lifted for
        # the MAIL command alone; the handler keeps the declared size and answers at RCPT.
        if not self._sessions.accepting:
            self.close_with(REPLY_SHUTTING_DOWN)  # draining: no new transaction
            return
        refusal = self._unrecordable()
        if refusal is not None:
            await self.push(refusal)
            return
        limit = self.data_size_limit
        self.data_size_limit = None
        try:
            await super().smtp_MAIL(arg)
        finally:
            self.data_size_limit = limit

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str) -> None:
        # A refusal at RCPT is a record too: none while the audit log cannot be written.
        refusal = self._unrecordable()
        if refusal is not None:
            await self.push(refusal)
            return
        await super().smtp_RCPT(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # Our own reading of DATA (dataread.py): an oversize message or an overlong line is
        # read to its end and still answered by the handler, with its record.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, GatewayEnvelope)
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            received = await read_data(
                self._reader,
                size_limit=self.data_size_limit or 1 << 62,
                line_limit=self.line_length_limit,  # RFC 5321's 1000 octets and the dot, 1001
            )
        except (asyncio.CancelledError, asyncio.IncompleteReadError):
            self._writer.close()
            raise
        envelope.received = received
        envelope.content = envelope.original_content = received.content
        try:
            # The log may have failed while the data came in: then no record, and 451.
            reply = self._unrecordable() or await self._handler.handle_DATA(
                self, self._gateway_session(), envelope
            )
        finally:
            # The end of data ends the transaction whatever the reply, even if a hook
            # raised (aiosmtpd would keep the envelope and the next MAIL would get 503).
            self.envelope = self._create_envelope()
        await self.push(reply)


# ---------------------------------------------------------------------------------------------


async def start_server(
    receiving: ReceiveSettings,
    store: RecordStore,
    *,
    clock: Clock,
    sessions: Sessions,
    tls_context: ssl.SSLContext | None = None,
    listen: Sequence[ListenAddress] | None = None,
    reuse_port: bool = False,
    audit: ChainedLog | None = None,
    serving: Serving | None = None,
    sockets: Sequence[socket.socket] = (),
) -> list[asyncio.Server]:
    """Bind every listen address and start serving; returns the bound servers.

    With `sockets` (listeners a supervisor bound and passed down, smtp/listeners.py) it
    serves on those instead of binding anything.

    `reuse_port` (SO_REUSEPORT) is for several processes sharing [server] listen, the kernel
    spreading connections among them. Nothing passes it: with [server] workers the supervisor
    binds once and passes `sockets` down, so a dying child drops no queued connection.

    Port 0 binds a free port; read it from `server.sockets`. With `audit`, the chained audit
    log, sessions answer 451 rather than make a record while it cannot be written. With
    `serving`, each session takes its settings from it when it connects (reloadable);
    else every session uses `receiving`.

    Raises:
        OSError: an address cannot be bound.
        ConfigError: an office's replies would not fit an SMTP reply line.
    """
    serving = serving or Serving(receiving, store, clock)
    loop = asyncio.get_running_loop()

    def factory() -> GatewaySMTP:
        # One read of `current`: the settings and the handler always belong together.
        snapshot = serving.current
        return GatewaySMTP(
            snapshot.handler, sessions, snapshot.receiving.server, tls_context, audit
        )

    servers: list[asyncio.Server] = []
    try:
        for sock in sockets:
            # asyncio calls listen() again with its default backlog, 100: the length the
            # supervisor bound it with (smtp/listeners.py), so the shared queue keeps it.
            servers.append(await loop.create_server(factory, sock=sock))
        for address in () if sockets else listen or receiving.server.listen:
            servers.append(await _bind(loop, factory, address, reuse_port=reuse_port))
    except OSError:
        for server in servers:
            server.close()
        raise
    return servers


async def _bind(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], GatewaySMTP],
    address: ListenAddress,
    *,
    reuse_port: bool,
) -> asyncio.Server:
    """One listening server on `address`.

    Raises:
        OSError: it cannot be bound; the message names the setting and the address (a host
            name that does not resolve otherwise says only "Name or service not known").
    """
    try:
        return await loop.create_server(
            factory, host=address.host, port=address.port, reuse_port=reuse_port or None
        )
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise OSError(exc.errno, f"server.listen {address}: {why}") from exc
