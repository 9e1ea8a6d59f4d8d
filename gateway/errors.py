"""The GatewayError tree. Nothing here formats SMTP replies; inbound.py does."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "DeliveryDeferred",
    "DeliveryError",
    "DeliveryFailed",
    "GatewayError",
    "StoreError",
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


def _rebuild_delivery_error(
    kind: type[DeliveryError], reply: str, code: int, host: str
) -> DeliveryError:
    return kind(reply, code=code, host=host)
