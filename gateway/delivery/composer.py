"""Composing outgoing mail: a job and its stored record in, the bytes to send out.

Notices are rendered from the stored record (never from anything kept in memory) and signed
with DKIM; relays (and forwards of postmaster mail) are the original message, unchanged,
below a Received line. Rendering and RSA signing are CPU work that would hold the interpreter
lock for milliseconds at a time, so by default they run in a separate process
(`[delivery] composer_processes`) and the SMTP side keeps answering while a backlog drains.
Nothing here sends, queues or logs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from typing import Protocol

from gateway.config import GatewaySettings
from gateway.delivery.transport import OutgoingMail
from gateway.errors import DeliveryDeferred, DeliveryFailed, StoreError
from gateway.notices.context import NoticeContext
from gateway.notices.dkim import DkimKey, DkimSigner, ensure_key
from gateway.notices.render import (
    FailedMessage,
    NoticeError,
    NoticeKind,
    NoticeRenderer,
    notice_bytes,
)
from gateway.store.backend import StoreLocation, open_records
from gateway.store.interface import MailRecords
from gateway.store.outbox import Attempt, Job
from gateway.vocabulary import JobKind

__all__ = [
    "Composer",
    "ComposerSettings",
    "MailBuilder",
    "ProcessComposer",
    "ThreadComposer",
    "make_composer",
]

_NOTICE_KINDS = {JobKind.NOTICE: NoticeKind.NOT_FILED, JobKind.ADVISORY: NoticeKind.ADVISORY}


@dataclass(frozen=True, slots=True)
class ComposerSettings:
    """What composing reads: the store, the host name of our Received and bounce
    lines, how many processes, and the notices' context (a child process builds its renderer
    and key from it)."""

    store: StoreLocation
    hostname: str
    processes: int  # [delivery] composer_processes; 0: a thread of this process
    notices: NoticeContext

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ComposerSettings:
        """The composer's part of `settings`."""
        return cls(
            store=StoreLocation.from_settings(settings),
            hostname=settings.server.hostname,
            processes=settings.delivery.composer_processes,
            notices=NoticeContext.from_settings(settings),
        )


class Composer(Protocol):
    async def compose(self, job: Job, now: datetime) -> OutgoingMail:
        """Raises DeliveryFailed (no mail can be made) or DeliveryDeferred (try later)."""
        ...

    def close(self) -> None: ...

    def retire(self) -> None:
        """Let the jobs already handed over finish, then let go (a reload replaced it)."""
        ...


class MailBuilder:
    """Turns a job into the bytes to send, reading the record from the store."""

    def __init__(
        self, settings: ComposerSettings, renderer: NoticeRenderer, key: DkimKey | None
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self.signer = None if key is None else DkimSigner(key)  # the key loaded once
        # One reader (connection) per thread that builds, kept from job to job: opening
        # the store for each notice cost more than reading its record.
        self._local = threading.local()
        self._connections: list[MailRecords] = []
        self._lock = threading.Lock()

    def build(self, job: Job, now: datetime) -> OutgoingMail:
        """Blocking (the store's reads, jinja2, RSA): run it in a thread.

        Raises:
            DeliveryFailed: the record is missing or no notice can be made for it.
        """
        conn = self._connection()
        try:
            data = self._data(conn, job, now)
        except StoreError:
            self._forget(conn)  # the next job opens the store afresh
            raise
        except DeliveryFailed:
            # Before failing a job for good, make sure a kept connection did not read an old
            # snapshot (a statement left open holds one): read again on a new connection.
            self._forget(conn)
            data = self._data(self._connection(), job, now)
        name = f"{job.reference}-{job.id}-{job.kind}"
        return OutgoingMail(job.mail_from, job.recipients, data, name, job.destination)

    def _data(self, conn: MailRecords, job: Job, now: datetime) -> bytes:
        if job.kind.is_relay:  # forward: postmaster mail, relayed the same
            return _relay_data(conn, job, self.settings.hostname)
        if job.kind is JobKind.BOUNCE:
            return _bounce_data(conn, job, self.settings.hostname, now)
        return self._notice_data(conn, job, now)

    def close(self) -> None:
        """Close every thread's connection; call it once no build runs."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _connection(self) -> MailRecords:
        conn: MailRecords | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_records(self.settings.store)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _forget(self, conn: MailRecords) -> None:
        self._local.conn = None
        with self._lock:
            self._connections.remove(conn)
        conn.close()

    def _notice_data(self, conn: MailRecords, job: Job, now: datetime) -> bytes:
        failed = _failed_message(conn, job)
        assert job.office is not None, "notice jobs always name their office"
        office = self.settings.notices.office(job.office)
        try:
            message = self.renderer.render(_NOTICE_KINDS[job.kind], office, failed, now=now)
        except NoticeError as exc:
            raise DeliveryFailed(f"no notice can be made: {exc}") from exc
        data = notice_bytes(message)
        return data if self.signer is None else self.signer.sign(data)


def _failed_message(conn: MailRecords, job: Job) -> FailedMessage:
    message = conn.read_message(job.reference)
    if message is None:
        raise DeliveryFailed(f"no record of message {job.reference}")
    # A notice names the office it answers for; the first of its recipients is the address.
    retired = [] if job.office is None else conn.list_decisions(job.reference, office=job.office)
    return FailedMessage(
        reference=job.reference,
        sender=job.recipients[0],
        retired_address=retired[0].recipient if retired else "",
        received_at=message.received_at,
        subject=message.subject,
        message_id=message.message_id,
        attachments=message.attachments,
        a_numbers=message.a_numbers,
    )


def _relay_data(conn: MailRecords, job: Job, hostname: str) -> bytes:
    message, raw = conn.read_message(job.reference), conn.read_raw(job.reference)
    if message is None or raw is None:
        raise DeliveryFailed(f"the message {job.reference} to relay is not in the store")
    # RFC 5321 §4.4: each relay prepends its Received line and changes nothing else.
    received_at = format_datetime(message.received_at)
    protocol = "ESMTPS" if message.tls else "ESMTP"
    received = (
        f"Received: from {message.helo or 'unknown'} ([{message.peer_ip}])\r\n"
        f"\tby {hostname} (eservice-gateway) with {protocol} id {job.reference};\r\n"
        f"\t{received_at}\r\n"
    )
    return received.encode("ascii", "replace") + raw


class ThreadComposer:
    """Composes in a thread of this process: simple, for tests and small installations."""

    def __init__(self, builder: MailBuilder) -> None:
        self.builder = builder

    async def compose(self, job: Job, now: datetime) -> OutgoingMail:
        return await asyncio.to_thread(self.builder.build, job, now)

    def close(self) -> None:
        self.builder.close()

    def retire(self) -> None:
        pass


# The builder of a composer process, made once by its initializer.
_child_builder: MailBuilder | None = None


def _start_child(settings: ComposerSettings, parent: int) -> None:
    global _child_builder  # one per child process, by design
    # The child writes nothing: let go of the parent's stdout and stderr, which may be the
    # audit log's pipe, so that whoever reads it sees it close when the gateway ends.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    key, _ = ensure_key(settings.notices)
    _child_builder = MailBuilder(settings, NoticeRenderer(settings.notices), key)


def _exit_with_parent(parent: int) -> None:
    # A pool's children outlive a parent killed with SIGKILL (they hold their own queue's
    # write end, so they never see EOF); without this they would linger forever.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _compose_in_child(job: Job, now: datetime) -> OutgoingMail:
    assert _child_builder is not None, "the initializer runs first"
    return _child_builder.build(job, now)


class ProcessComposer:
    """Composes in child processes, so rendering and signing never stall the event loop."""

    def __init__(self, settings: ComposerSettings, processes: int) -> None:
        self.settings = settings
        self.processes = processes
        # Made at the first job, not here: a pool brings multiprocessing's resource-tracker
        # process with it (12 MiB RSS), which an idle worker would carry for nothing.
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: this process has threads (the store writer) that fork would copy
        # in whatever state they were in.
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=(self.settings, os.getpid()),
        )

    async def compose(self, job: Job, now: datetime) -> OutgoingMail:
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = self._new_pool()
        try:
            return await loop.run_in_executor(self._pool, _compose_in_child, job, now)
        except BrokenProcessPool as exc:
            # A child died (killed, out of memory): start afresh (at the next job) and try
            # this one later.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise DeliveryDeferred("the composer process died; will try again") from exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def retire(self) -> None:
        # Not close(): the jobs queued for the old children must still be composed.
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def make_composer(
    settings: ComposerSettings, renderer: NoticeRenderer, key: DkimKey | None
) -> Composer:
    """The composer `[delivery] composer_processes` asks for (0: a thread of this process)."""
    processes = settings.processes
    if processes == 0:
        return ThreadComposer(MailBuilder(settings, renderer, key))
    return ProcessComposer(settings, processes)


def _bounce_data(conn: MailRecords, job: Job, hostname: str, now: datetime) -> bytes:
    """An RFC 3464 delivery status notification for a relay that failed for good."""
    message = conn.read_message(job.reference)
    relay = None if job.about_job is None else conn.read_job(job.about_job)
    tried = [] if relay is None else conn.job_attempts(relay.id)
    if message is None or relay is None or not tried:
        raise DeliveryFailed(f"nothing on record to report for {job.reference}")
    recipients, last = list(relay.recipients), tried[-1]
    arrived = message.received_at
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    report["To"] = job.recipients[0]
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(now)
    report["Message-ID"] = f"<{job.reference}.bounce.{job.id}@{hostname}>"
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5: never answered in turn
    report["X-Eservice-Gateway-Reference"] = job.reference
    report.attach(
        MIMEText(_bounce_text(recipients, arrived, job.reference, last), "plain", "utf-8")
    )
    report.attach(_delivery_status(hostname, arrived, recipients, last))
    headers = MIMEBase("text", "rfc822-headers")
    headers.set_payload(
        _header_block(conn.read_raw(job.reference) or b"").decode("ascii", "replace")
    )
    report.attach(headers)
    # A non-ASCII sender's address goes in To: as UTF-8 (RFC 6532 §3.2), sent with SMTPUTF8.
    utf8 = not job.recipients[0].isascii()
    return report.as_bytes(policy=email_policy.SMTPUTF8 if utf8 else email_policy.SMTP)


def _bounce_text(recipients: list[str], arrived: datetime, reference: str, last: Attempt) -> str:
    to = ", ".join(recipients)
    reply = f"{last.code} {last.reply}" if last.code else last.reply
    return (
        f"Your message to {to}, received on {format_datetime(arrived)} (reference {reference}),"
        " could not be delivered and was given up.\n\n"
        f"The mail server {last.host or '(none)'} answered: {reply}\n\n"
        "Nothing was filed or served by this message. Its headers follow.\n"
    )


def _delivery_status(
    hostname: str, arrived: datetime, recipients: list[str], last: Attempt
) -> MIMEBase:
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {hostname}"
    per_message["Arrival-Date"] = format_datetime(arrived)
    blocks: list[Message | str] = [per_message]  # each block is written as a header section
    enhanced = re.match(r"([245]\.\d{1,3}\.\d{1,3})\b", last.reply or "")
    for recipient in recipients:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {recipient}"
        block["Action"] = "failed"
        block["Status"] = enhanced.group(1) if enhanced else "5.0.0"
        if last.host:
            block["Remote-MTA"] = f"dns; {last.host}"
        if last.code:
            block["Diagnostic-Code"] = f"smtp; {last.code} {last.reply}"
        blocks.append(block)
    status = MIMEBase("message", "delivery-status")
    status.set_payload(blocks)
    return status


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]
