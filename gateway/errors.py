"""The GatewayError tree: every error the gateway raises on purpose, in one place.

    GatewayError
    ├── ConfigError          the configuration cannot be used (startup only)
    ├── StoreError           the state store could not make a record durable (also OSError)
    ├── LeaseLost            a job's lease is another owner's now: this attempt is not its record
    ├── AuditLogBusy         another process writes the audit log (also OSError)
    ├── DeliveryError        a delivery attempt did not succeed; keeps the remote reply
    │   ├── DeliveryDeferred     temporary: tried again later
    │   └── DeliveryFailed       permanent: not tried again
    ├── TemporaryDnsError    a sender check's DNS query failed for now (timeout, SERVFAIL)
    ├── NoticeError          no notice can be made from these values (also ValueError)
    ├── PreviewError         `gateway preview` cannot do what was asked (also ValueError)
    └── UsageError           `gateway audit` cannot answer as asked

Nothing here formats SMTP replies; gateway/smtp/replies.py does. This module imports nothing
from the gateway, so every layer may raise and catch these.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuditLogBusy",
    "ConfigError",
    "DeliveryDeferred",
    "DeliveryError",
    "DeliveryFailed",
    "GatewayError",
    "LeaseLost",
    "NoticeError",
    "PreviewError",
    "StoreError",
    "TemporaryDnsError",
    "UsageError",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used; raised only at startup.

    `key` is the dotted path of the offending setting ("offices[0].timezone"), or "" when the
    problem is the file itself.
    """

    def __init__(self, key: str, problem: str, *, more: Sequence[tuple[str, str]] = ()) -> None:
        self.key = key
        self.problem = problem
        # Every other problem found in the same file, so that one run lists them all.
        self.problems: tuple[tuple[str, str], ...] = ((key, problem), *more)
        lines = [f"{k}: {p}" if k else p for k, p in self.problems]
        if len(lines) == 1:
            super().__init__(lines[0])
        else:
            super().__init__(f"{len(lines)} problems:\n  " + "\n  ".join(lines))


class StoreError(GatewayError, OSError):
    """The state store could not make a record durable."""


class LeaseLost(GatewayError):
    """A job's lease has passed to another owner (or back to the queue) during an attempt.

    The job is that owner's now: this attempt's outcome must not overwrite its state, so the
    outbox records nothing of it (the audit log still tells what the attempt did).
    """


class AuditLogBusy(GatewayError, OSError):
    """Another process holds the audit log file: two writers would fork its chain."""


class DeliveryError(GatewayError):
    """A delivery attempt did not succeed; keeps what the remote side said.

    `host` is the server tried ("" when none was reached), `code` its reply code (0 when
    there was no reply: DNS, connection or timeout failures) and `reply` its text or our
    description of the failure.
    """

    def __init__(self, reply: str, *, code: int = 0, host: str = "") -> None:
        self.reply = reply
        self.code = code
        self.host = host
        super().__init__(f"{host}: {code} {reply}" if host else reply)

    def __reduce__(self) -> tuple[object, ...]:
        # Keep code and host when the error crosses from a composer process.
        return (_rebuild_delivery_error, (type(self), self.reply, self.code, self.host))


class DeliveryDeferred(DeliveryError):
    """A temporary failure (4xx, no answer, DNS trouble): the job is tried again later."""


class DeliveryFailed(DeliveryError):
    """A permanent failure (5xx, null MX, no such domain): the job is not tried again."""


class TemporaryDnsError(GatewayError):
    """A sender check's DNS query failed for now: timeout, SERVFAIL, REFUSED, no server.

    Raised and caught inside the sender checks, which turn it into a temperror result.
    """


class NoticeError(GatewayError, ValueError):
    """No notice can be made: not one replyable recipient, or a bad value from the gateway."""


class PreviewError(GatewayError, ValueError):
    """The preview cannot be made as asked (unknown office, unreadable file...)."""


class UsageError(GatewayError):
    """A `gateway audit` request cannot be answered as asked; the message says why."""


def _rebuild_delivery_error(
    kind: type[DeliveryError], reply: str, code: int, host: str
) -> DeliveryError:
    return kind(reply, code=code, host=host)
