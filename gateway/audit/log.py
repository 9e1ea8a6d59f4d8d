"""The audit log: structlog set-up and the vocabulary of events operators rely on.

One JSON object per line, UTC ISO-8601 `timestamp`, `event` naming the fact, values in keys.
Events of one message share its `reference`, the id quoted in the SMTP reply. The names and
keys below are a contract with log tools: add to them, do not rename. Bodies and credentials
are never logged; A-numbers and other configured patterns are redacted from subjects and
attachment names (redaction.py). Every JSON line is linked to the one before it by a hash
chain (chain.py), so that an edited, deleted or reordered line can be found.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.audit.chain import ChainedLog
from gateway.config import AuditSettings
from gateway.mail.redaction import Redactor

__all__ = ["EVENTS", "configure_logging", "get_logger"]

_DELIVERY_KEYS = (
    "job_id",
    "reference",
    "kind",
    "attempt",
    "recipients",
    "host",
    "reply_code",
    "reply",
    "duration_s",
)
_OPERATOR_KEYS = ("action_id", "operator", "requested_at", "jobs", "count", "filter")
# event name -> the keys it carries (besides timestamp, level and event).
EVENTS: dict[str, tuple[str, ...]] = {
    # worker/workers: this process is worker I of N under a supervisor ([server] workers).
    "gateway.started": (
        "version",
        "offices",
        "as_of",
        "state_dir",
        "delivery",
        "worker",
        "workers",
    ),
    # The supervisor ([server] workers above 1): it bound the listeners; each worker process it
    # started (pid), each that ended (status: its exit status, or the signal that ended it;
    # ran_s: how long it lived), and each restart, after a delay (backoff, doubling up to a cap).
    "gateway.supervisor.started": ("version", "workers", "state_dir", "as_of"),
    # Told to stop (reason: the signal), passing it on to the workers still running; stopped
    # once all have ended (status: the supervisor's exit status, 0 when each ended cleanly).
    "gateway.supervisor.stopping": ("reason", "workers"),
    "gateway.supervisor.stopped": ("status",),
    "gateway.worker.started": ("worker", "pid", "forked"),
    "gateway.worker.exited": ("worker", "pid", "status", "ran_s", "expected"),
    "gateway.worker.restarted": ("worker", "pid", "delay_s", "restarts"),
    # A signal passed on to every worker (SIGTERM, SIGINT, SIGHUP, SIGUSR1).
    "gateway.signal.forwarded": ("signal", "workers"),
    "gateway.listening": ("host", "port"),
    "gateway.metrics.listening": ("host", "port"),  # the HTTP /metrics, /healthz, /readyz
    "gateway.lookup.listening": ("host", "port"),  # the public receipt page ([lookup] listen)
    "gateway.console.listening": ("host", "port"),  # the operator console ([console] listen)
    "gateway.stopping": ("reason", "sessions"),
    "gateway.stopped": ("sessions_cut",),
    # The first event a serving process logs: where the audit log goes and whether this line
    # continues the chain the file ended with (else it starts a new one, anchored in the store).
    "gateway.log.opened": ("log", "continued"),
    # The audit log could not be written (a full disk): from then on new transactions get
    # 451 (fail closed) and lines wait in memory; recovered: they were written, in order.
    "gateway.log.failed": ("log", "error", "waiting"),
    "gateway.log.recovered": ("log", "written", "dropped"),
    # SIGHUP or SIGUSR1 (logrotate's postrotate): the log's path opened afresh if the file
    # there was renamed (rotated); the chain goes on from the old file's last line.
    "gateway.log.reopened": ("log", "signal", "rotated"),
    # SIGHUP: the config file and templates read again. New sessions use them, sessions in
    # flight keep theirs. changed: the sections now in force (and "templates");
    # needs_restart: keys that changed but wait for a restart (the old value stays);
    # config_before/config_after: short digests of the settings in force.
    "gateway.reloaded": (
        "changed",
        "needs_restart",
        "config_before",
        "config_after",
        "templates_before",
        "templates_after",
    ),
    # The new config or templates failed to load: nothing changed, the old ones still serve.
    "gateway.reload.refused": ("error",),
    "smtp.session.opened": ("session_id", "peer_ip", "peer_port"),
    "smtp.session.closed": ("session_id", "peer_ip", "messages", "duration_s"),
    # Connections turned away: too many, shutting down, a command limit, a bad PROXY header.
    "smtp.session.refused": ("peer_ip", "reason", "reply"),
    "smtp.session.proxied": ("session_id", "peer_ip", "peer_port", "trusted"),
    "smtp.session.timed_out": ("session_id", "peer_ip", "limit", "reply"),
    # Our own failure: exc_info for a bug, error for a part that is down (the audit log).
    "smtp.session.failed": ("session_id", "peer_ip", "reply", "exc_info", "error"),
    "smtp.recipient.refused": (
        "session_id",
        "reference",
        "sender",
        "recipient",
        "office",
        "phase",
        "reason",
        "reply_code",
        "reply",
    ),
    "smtp.recipient.deferred": (
        "session_id",
        "sender",
        "recipient",
        "office",  # present when the address is a retired filing address
        "reason",
        "reply_code",
        "reply",
    ),
    "smtp.message.received": (
        "session_id",
        "reference",
        "peer_ip",
        "helo",
        "tls",
        "sender",
        "recipients",
        "message_id",
        "subject",
        "date_header",
        "size",
        "sha256",
        "attachments",
        "a_numbers",
        "auth",
    ),
    "policy.decided": (
        "reference",
        "recipient",
        "office",
        "phase",
        "action",
        "reason",
        "arrival_utc",
        "arrival_local",
    ),
    "notice.suppressed": ("reference", "sender", "reason", "duplicate_of"),
    "outbox.enqueued": (
        "reference",
        "job_kind",
        "office",
        "recipients",
        "destination",
        "job_id",
        "about_job",
    ),
    # reason: why a message was not accepted (rejected or deferred); absent when accepted.
    # office: that of the recipients (comma-joined if several); null when none has one.
    "smtp.reply.sent": (
        "session_id",
        "reference",
        "outcome",
        "office",
        "reason",
        "reply_code",
        "reply",
    ),
    "store.write_failed": ("session_id", "reference", "error"),
    "store.raw_purged": ("count",),
    "store.purge_failed": ("error",),
    "store.checkpoint_failed": ("error",),  # the audit chain's head could not be recorded
    # psycopg or its pool warned (a connection lost, a reconnect failing): `logger`, `text`.
    "store.driver_warned": ("logger", "driver_level", "text"),
    # Records past [storage] retention_days: received before `before`; rows per table.
    "store.records_purged": (
        "before",
        "retention_days",
        "messages",
        "message_recipients",
        "raw_messages",
        "jobs",
        "attempts",
        "refusals",
    ),
    # Notices kept as sent past [storage] notice_retention_days: sent before `before`.
    "store.notices_purged": ("before", "notice_retention_days", "count"),
    "dkim.key_created": ("selector", "domain", "path", "dns_record"),
    "outbox.recovered": ("jobs",),
    "outbox.claim_failed": ("error",),
    "outbox.update_failed": ("job_id", "reference", "error"),
    # A job's lease found another owner's (taken over after it ran out, or recovered): during
    # "sending" the attempt was stopped; during "recording" its outcome (delivered, deferred,
    # failed; host and reply_code as far as known) was not written over that owner's state.
    "outbox.lease_lost": (
        "job_id",
        "reference",
        "owner",
        "during",
        "outcome",
        "host",
        "reply_code",
    ),
    "delivery.succeeded": _DELIVERY_KEYS,
    "delivery.deferred": (*_DELIVERY_KEYS, "note", "next_attempt_at"),
    "delivery.failed": (*_DELIVERY_KEYS, "note", "next_attempt_at"),
    "delivery.crashed": ("job_id", "reference", "exception"),
    # An operator's `gateway queue` hold, release, flush, retry or delete, logged by the
    # serving gateway at its next poll (the command journals it in the store): action_id
    # numbers it there, requested_at is when it was taken, jobs the ids it changed, filter
    # what the command line selected.
    # The public receipt page: each lookup (reference only when well-formed; found is false for
    # every reference that has no receipt, whatever the reason) and a client passing its limit
    # (once per episode: the 429s that follow are not logged one by one).
    "receipt.looked_up": ("reference", "found", "format", "lang", "client"),
    # scope: "client" (its own per_minute and burst) or "total" (total_per_second).
    "receipt.rate_limited": ("scope", "client", "retry_after_s"),
    # The store could not be read for a lookup (answered 503, not 404).
    "receipt.lookup_failed": ("error", "client"),
    # The operator console: each page or export an authenticated user viewed (view: attempts,
    # attempt, summary, senders, queue; format: html, csv or json; query: its filters), and
    # each request refused for want of credentials (reason: missing, wrong or unknown-proxy).
    "console.viewed": ("user", "view", "format", "reference", "query", "client"),
    "console.denied": ("reason", "client"),
    **dict.fromkeys(
        ("outbox.held", "outbox.released", "outbox.flushed", "outbox.retried", "outbox.deleted"),
        _OPERATOR_KEYS,
    ),
}


def configure_logging(
    settings: AuditSettings,
    *,
    stream: TextIO | None = None,
    observers: Sequence[Processor] = (),
    shared_with: Path | None = None,
) -> ChainedLog | None:
    """Route structlog to the configured destination; returns the chained log written to,
    or None for the console format (for people at a terminal, not chained).

    Called once by the CLI. `stream` overrides the destination (tests). `observers` are
    processors that see every event dict (with its timestamp, after redaction) just before it
    is rendered, e.g. to count events as metrics; they must return the event dict unchanged.
    `shared_with`: the lock file of a standard output other processes write too (a supervisor
    and its workers; ChainedLog.to_stream).

    Raises:
        AuditLogBusy: another process is writing the log file.
        OSError: the log file cannot be opened.
    """
    out = stream if stream is not None else (sys.stdout if settings.log == "-" else None)
    console = settings.format == "console" or (
        settings.format == "auto" and out is not None and out.isatty()
    )
    chain: ChainedLog | None = None
    if console:
        renderer: Any = structlog.dev.ConsoleRenderer()
        factory: Any = structlog.WriteLoggerFactory(file=out or _open_destination(settings.log))
    else:
        renderer = structlog.processors.JSONRenderer()
        chain = (
            ChainedLog.to_stream(out, shared_with=shared_with)
            if out is not None
            else ChainedLog.to_file(Path(settings.log))
        )
        factory = _ChainFactory(chain)
    redactor = Redactor.from_settings(settings)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *([_Redaction(redactor)] if redactor.is_active else []),
            *observers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiosmtpd narrates sessions through stdlib logging as plain text; everything of it that
    # matters is an audit event of ours, so its lines would only be noise outside the log.
    library_log = logging.getLogger("mail.log")
    library_log.propagate = False
    library_log.addHandler(logging.NullHandler())
    # psycopg's pool reports lost connections and failed reconnects through stdlib logging:
    # warnings and worse become events of ours; its chatter below that goes nowhere.
    driver_log = logging.getLogger("psycopg")
    driver_log.propagate = False
    driver_log.setLevel(logging.WARNING)
    driver_log.handlers = [_DriverWarnings()]
    return chain


class _DriverWarnings(logging.Handler):
    """The PostgreSQL driver's stdlib warnings, as `store.driver_warned` events."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().splitlines()
        get_logger().warning(
            "store.driver_warned",
            logger=record.name,
            driver_level=record.levelname.lower(),
            text=text[0] if text else "",
        )


def _open_destination(log: str) -> TextIO:
    # Line-buffered: each event reaches the file as one whole line.
    return open(log, "a", encoding="utf-8", buffering=1)


class _ChainFactory:
    """structlog's logger factory: every logger writes through the one chained log."""

    def __init__(self, chain: ChainedLog) -> None:
        self.chain = chain

    def __call__(self, *args: Any) -> ChainedLog:
        return self.chain


class _Redaction:
    """The processor that redacts a message's subject, attachment names and A-numbers."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        # Only smtp.message.received carries these keys; every other event passes untouched.
        if "subject" in event and isinstance(event["subject"], str):
            event["subject"] = self.redactor.text(event["subject"])
        if "a_numbers" in event and isinstance(event["a_numbers"], list):
            event["a_numbers"] = self.redactor.a_number_list(event["a_numbers"])
        if "attachments" in event and isinstance(event["attachments"], list):
            event["attachments"] = [self._attachment(a) for a in event["attachments"]]
        return event

    def _attachment(self, attachment: object) -> object:
        if isinstance(attachment, MutableMapping) and isinstance(attachment.get("filename"), str):
            return {**attachment, "filename": self.redactor.text(attachment["filename"])}
        return attachment


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger carrying `context` in every event."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**context)
    return logger
