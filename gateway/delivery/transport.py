"""How outgoing mail leaves: .eml files, a smarthost, or the recipients' mail exchangers.

Each sender takes an OutgoingMail and either returns the receiving side's answer or raises
DeliveryDeferred / DeliveryFailed with the remote host, code and text. Nothing here decides
about retries, touches the queue or logs: worker.py does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from gateway.config import DeliverySettings
from gateway.delivery.sessions import Security, Session, SessionKey, SessionPool
from gateway.dns_lookup.mx import MxResolver
from gateway.durable import write_durably
from gateway.errors import DeliveryDeferred, DeliveryError, DeliveryFailed
from gateway.policy.decision import DeliveryOutcome, classify_reply

__all__ = [
    "Answer",
    "FileSender",
    "MailSender",
    "OutgoingMail",
    "SmtpSender",
    "Target",
]


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    mail_from: str  # "" for the null reverse path of notices
    recipients: tuple[str, ...]
    data: bytes  # CRLF line endings, ready for DATA
    name: str  # a file-system-safe name for this mail, e.g. "20170913-ABC-12-notice"
    destination: str | None = None  # fixed "host:port" (relays to the legacy host)

    @property
    def has_utf8_envelope(self) -> bool:
        """Whether an envelope address is non-ASCII, so the mail needs SMTPUTF8 (RFC 6531)."""
        return not all(a.isascii() for a in (self.mail_from, *self.recipients))


@dataclass(frozen=True, slots=True)
class Answer:
    """The receiving side's acceptance."""

    host: str
    code: int
    reply: str


@dataclass(frozen=True, slots=True)
class Target:
    """One server to try: the name it goes by (for TLS and logs) and where to connect."""

    name: str
    address: str
    port: int


class MailSender(Protocol):
    async def send(self, mail: OutgoingMail) -> Answer: ...

    async def close(self) -> None:
        """Let go of what it keeps between mails; no send() runs or follows."""
        ...


class FileSender:
    """Writes each mail as an .eml file: the default, so a first run needs no mail server."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, mail: OutgoingMail) -> Answer:
        try:
            path = await asyncio.to_thread(self._write, mail)
        except OSError as exc:
            raise DeliveryDeferred(f"cannot write to {self.directory}: {exc}", host="file") from exc
        return Answer(host="file", code=250, reply=f"written to {path}")

    async def close(self) -> None:
        pass

    def _write(self, mail: OutgoingMail) -> Path:
        # The envelope goes in front, as headers; the content stays byte for byte (and its
        # DKIM signature valid).
        recipients = ", ".join(f"<{r}>" for r in mail.recipients)
        head = f"X-Envelope-From: <{mail.mail_from}>\r\nX-Envelope-To: {recipients}\r\n"
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{mail.name}.eml"
        # Readers (a pickup script, an operator) see no file or the whole file.
        write_durably(final, head.encode("utf-8") + mail.data)
        return final


class SmtpSender:
    """SMTP delivery: relays to their fixed host, other mail to the smarthost or by MX."""

    def __init__(
        self,
        settings: DeliverySettings,
        *,
        local_hostname: str,
        resolver: MxResolver | None,
        sessions: SessionPool | None = None,
    ) -> None:
        self.settings = settings
        self.local_hostname = local_hostname
        self.resolver = resolver
        # Opportunistic TLS (RFC 7435) to MX hosts and legacy hosts: encrypt when offered,
        # without certificate checks, since most MX certificates would not pass them.
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False
        self._opportunistic.verify_mode = ssl.CERT_NONE
        self._verified = ssl.create_default_context(cafile=settings.ca_file)
        # At most one idle session per delivery that may run at once.
        self._sessions = sessions or SessionPool(max_idle=settings.concurrency)

    async def send(self, mail: OutgoingMail) -> Answer:
        targets = await self._targets(mail)
        deferred: DeliveryDeferred | None = None
        without_utf8: _NoSmtpUtf8 | None = None
        for target in targets:
            try:
                return await self._deliver_to(target, mail)
            except DeliveryDeferred as exc:
                deferred = exc  # try the next exchanger (RFC 5321 §5.1)
            except _NoSmtpUtf8 as exc:
                without_utf8 = exc  # another exchanger of the domain may offer it
        # One exchanger's temporary trouble outweighs another's lack of SMTPUTF8: the first
        # may take the mail later. Only when none offers it does the job fail.
        failure = deferred or without_utf8
        assert failure is not None, "every route has at least one target"
        raise failure

    async def _deliver_to(self, target: Target, mail: OutgoingMail) -> Answer:
        try:
            return await self._deliver(target, mail, tls=True)
        except _TlsFailed:
            if self._tls_required(mail):
                raise
        # Opportunistic TLS (RFC 7435 §3): when the handshake fails, a clear-text session
        # is still better than none, as Postfix's smtp_tls_security_level = may does.
        return await self._deliver(target, mail, tls=False)

    async def _targets(self, mail: OutgoingMail) -> Sequence[Target]:
        if mail.destination is not None:
            return [_fixed_target(mail.destination, default_port=25)]
        if self.settings.mode == "smarthost":
            assert self.settings.smarthost is not None
            host = self.settings.smarthost
            return [Target(host.host, host.host, host.port)]
        assert self.resolver is not None
        domain = mail.recipients[0].rpartition("@")[2]
        hosts = await self.resolver.mail_hosts(domain)
        targets = [
            Target(h.name, h.address, self.settings.mx_port)
            for h in hosts
            if self.settings.mx_internal_addresses or ipaddress.ip_address(h.address).is_global
        ]
        if not targets:
            raise DeliveryFailed(f"the mail exchangers of {domain} are at internal addresses")
        return targets

    async def _deliver(self, target: Target, mail: OutgoingMail, *, tls: bool) -> Answer:
        key = self._session_key(target, mail, tls=tls)
        session = self._sessions.take(key)
        if session is not None:
            try:
                return await self._carry(session, target, mail)
            except _StaleSession:
                pass  # the server let the idle session go: a fresh one carries the mail
        return await self._carry(await self._open(key, target, mail, tls=tls), target, mail)

    async def _open(
        self, key: SessionKey, target: Target, mail: OutgoingMail, *, tls: bool
    ) -> Session:
        client = aiosmtplib.SMTP(
            hostname=target.address,
            port=target.port,
            local_hostname=self.local_hostname,
            timeout=self.settings.command_timeout,
            start_tls=False,
        )
        is_open = False
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await client.connect()
            await client.ehlo()
            await self._secure(client, target, mail, tls=tls)
            is_open = True
        except aiosmtplib.SMTPResponseException as exc:
            raise _error(exc.code, exc.message, target) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _no_answer(exc, target) from exc
        finally:
            if not is_open:
                client.close()
        return Session(key, client, opened_at=time.monotonic())

    async def _carry(self, session: Session, target: Target, mail: OutgoingMail) -> Answer:
        """Send `mail` on `session`, which goes back to the pool only if the mail was taken.

        Raises:
            _StaleSession: a reused session turned out closed before the mail was sent.
            DeliveryError: the server refused the mail or did not answer.
        """
        is_taken = False
        try:
            if session.is_reused:
                await _reset(session.client, target)
            answer = await _transact(session.client, target, mail, is_reused=session.is_reused)
            is_taken = True
            session.mails += 1
        finally:
            if is_taken:
                self._sessions.give_back(session)
            else:
                # After any failure the session's state is unknown: a late reply must never
                # be read as the next mail's answer.
                session.client.close()
        return answer

    def _session_key(self, target: Target, mail: OutgoingMail, *, tls: bool) -> SessionKey:
        smarthost = self._is_smarthost(mail)
        if not tls:
            security = Security.CLEAR
        elif self._tls_required(mail):
            security = Security.REQUIRED
        else:
            security = Security.VERIFIED if smarthost else Security.OPPORTUNISTIC
        login = self.settings.username if smarthost else None
        return SessionKey(target.name, target.address, target.port, security, login or None)

    async def close(self) -> None:
        """QUIT the sessions kept for reuse."""
        await self._sessions.close()

    def _is_smarthost(self, mail: OutgoingMail) -> bool:
        return mail.destination is None and self.settings.mode == "smarthost"

    def _tls_required(self, mail: OutgoingMail) -> bool:
        return self._is_smarthost(mail) and self.settings.starttls == "required"

    async def _secure(
        self, client: aiosmtplib.SMTP, target: Target, mail: OutgoingMail, *, tls: bool
    ) -> None:
        smarthost = self._is_smarthost(mail)
        if tls and client.supports_extension("starttls"):
            context = self._verified if smarthost else self._opportunistic
            try:
                await client.starttls(server_hostname=target.name, tls_context=context)
            except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                raise _TlsFailed(f"STARTTLS failed: {reason}", host=target.name) from exc
        elif self._tls_required(mail):
            raise DeliveryDeferred("STARTTLS is required but not offered", host=target.name)
        if smarthost and self.settings.username:
            password = self.settings.smarthost_password() or ""
            try:
                await client.login(self.settings.username, password)
            except aiosmtplib.SMTPAuthenticationError as exc:
                # Our credentials are wrong: retry once the operator fixes them, never fail
                # the mail for it.
                raise DeliveryDeferred(
                    f"AUTH refused: {exc.code} {exc.message}", code=exc.code, host=target.name
                ) from exc


class _TlsFailed(DeliveryDeferred):
    """STARTTLS was offered but no encrypted session could be had."""


class _NoSmtpUtf8(DeliveryFailed):
    """The server does not offer SMTPUTF8 and the envelope needs it: never to this server."""


class _StaleSession(DeliveryDeferred):
    """A kept session was closed by the server before it carried the mail."""


async def _reset(client: aiosmtplib.SMTP, target: Target) -> None:
    """RSET before a kept session's next mail: a transaction from a known state (RFC 5321
    §4.1.1.5), and a cheap probe that the server still holds the session.

    Raises:
        _StaleSession: any answer but 250, or none; nothing of the mail was sent.
    """
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise _StaleSession(f"RSET failed: {exc}", host=target.name) from exc


async def _transact(
    client: aiosmtplib.SMTP, target: Target, mail: OutgoingMail, *, is_reused: bool
) -> Answer:
    """One mail transaction: MAIL, RCPT, DATA, and the server's answer to it.

    Raises:
        _StaleSession: a reused session was closed by the server (a disconnect, or 421, its
            notice that it is closing, RFC 5321 §3.8); the mail is sent again, once, on a
            fresh session, as it would be on the next attempt.
        DeliveryError: the server refused the mail or did not answer.
    """
    try:
        errors, reply = await client.sendmail(
            mail.mail_from,
            list(mail.recipients),
            mail.data,
            mail_options=_mail_options(client, target, mail),
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        raise _error(first.code, first.message, target) from exc
    except aiosmtplib.SMTPResponseException as exc:
        if is_reused and exc.code == 421:
            raise _StaleSession(exc.message, code=421, host=target.name) from exc
        raise _error(exc.code, exc.message, target) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        if is_reused and isinstance(exc, ConnectionError):
            raise _StaleSession(str(exc), host=target.name) from exc
        raise _no_answer(exc, target) from exc
    return Answer(host=target.name, code=250, reply=_partial(reply, errors))


def _no_answer(exc: BaseException, target: Target) -> DeliveryDeferred:
    reason = str(exc) or type(exc).__name__
    return DeliveryDeferred(f"no answer: {reason}", host=target.name)


def _mail_options(client: aiosmtplib.SMTP, target: Target, mail: OutgoingMail) -> list[str]:
    """MAIL FROM's parameters: SMTPUTF8 when an address needs it (after STARTTLS's new EHLO).

    Raises:
        _NoSmtpUtf8: an address needs SMTPUTF8 and the server does not offer it.
    """
    if not mail.has_utf8_envelope:
        return []
    if not client.supports_extension("smtputf8"):
        # RFC 6531 §3.2: such mail must not be sent to a server without SMTPUTF8; waiting
        # would not change what the server offers, so the job fails at once, not at max_age.
        raise _NoSmtpUtf8(
            "the server does not offer SMTPUTF8, which a non-ASCII address needs"
            " (RFC 6531 §3.2); not retried",
            host=target.name,
        )
    return ["SMTPUTF8"]


def _fixed_target(destination: str, *, default_port: int) -> Target:
    host, sep, port = destination.rpartition(":")
    if not sep or not port.isdigit():
        host, port = destination, str(default_port)
    host = host.strip("[]")
    return Target(host, host, int(port))


def _error(code: int, message: str, target: Target) -> DeliveryError:
    kind = DeliveryFailed if classify_reply(code) is DeliveryOutcome.FAILED else DeliveryDeferred
    return kind(message, code=code, host=target.name)


def _partial(reply: str, errors: dict[str, aiosmtplib.SMTPResponse]) -> str:
    if not errors:
        return reply
    refused = "; ".join(f"<{rcpt}> {r.code} {r.message}" for rcpt, r in errors.items())
    return f"{reply} (refused: {refused})"
