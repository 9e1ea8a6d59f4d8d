"""The audit log: structlog set-up and the vocabulary of events operators rely on.

One JSON object per line, UTC ISO-8601 `timestamp`, `event` naming the fact, values in keys.
Events of one message share its `reference`, the id quoted in the SMTP reply. The names and
keys below are a contract with log tools: add to them, do not rename. Bodies and credentials
are never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from gateway.config import AuditSettings

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
# event name -> the keys it carries (besides timestamp, level and event).
EVENTS: dict[str, tuple[str, ...]] = {
    "gateway.started": ("version", "offices", "as_of", "state_dir", "delivery"),
    "gateway.listening": ("host", "port"),
    "gateway.stopping": ("reason", "sessions"),
    "gateway.stopped": ("sessions_cut",),
    "smtp.session.opened": ("session_id", "peer_ip", "peer_port"),
    "smtp.session.closed": ("session_id", "peer_ip", "messages", "duration_s"),
    # Connections turned away: too many, shutting down, a command limit, a bad PROXY header.
    "smtp.session.refused": ("peer_ip", "reason", "reply"),
    "smtp.session.proxied": ("session_id", "peer_ip", "peer_port", "trusted"),
    "smtp.session.timed_out": ("session_id", "peer_ip", "limit", "reply"),
    "smtp.session.failed": ("session_id", "peer_ip", "reply", "exc_info"),
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
    "smtp.recipient.deferred": ("session_id", "sender", "recipient", "reason", "reply"),
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
    "outbox.enqueued": ("reference", "job_kind", "office", "recipients", "destination"),
    "smtp.reply.sent": ("session_id", "reference", "outcome", "reply_code", "reply"),
    "store.write_failed": ("session_id", "reference", "error"),
    "store.raw_purged": ("count",),
    "store.purge_failed": ("error",),
    "dkim.key_created": ("selector", "domain", "path", "dns_record"),
    "outbox.recovered": ("jobs",),
    "outbox.claim_failed": ("error",),
    "outbox.update_failed": ("job_id", "reference", "error"),
    "delivery.succeeded": _DELIVERY_KEYS,
    "delivery.deferred": (*_DELIVERY_KEYS, "note", "next_attempt_at"),
    "delivery.failed": (*_DELIVERY_KEYS, "note", "next_attempt_at"),
    "delivery.crashed": ("job_id", "reference", "exception"),
}


def configure_logging(
    settings: AuditSettings,
    *,
    stream: TextIO | None = None,
    observers: Sequence[Processor] = (),
) -> TextIO:
    """Route structlog to the configured destination; returns the stream written to.

    Called once by the CLI. `stream` overrides the destination (tests). `observers` are
    processors that see every event dict (with its timestamp) just before it is rendered,
    e.g. to count events as metrics; they must return the event dict unchanged.
    """
    out = stream or _open_destination(settings.log)
    console = settings.format == "console" or (settings.format == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *observers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    # aiosmtpd narrates sessions through stdlib logging as plain text; everything of it that
    # matters is an audit event of ours, so its lines would only be noise outside the log.
    library_log = logging.getLogger("mail.log")
    library_log.propagate = False
    library_log.addHandler(logging.NullHandler())
    return out


def _open_destination(log: str) -> TextIO:
    if log == "-":
        return sys.stdout
    # Line-buffered: each event reaches the file as one whole line.
    return open(log, "a", encoding="utf-8", buffering=1)


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger carrying `context` in every event."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**context)
    return logger
