"""The GatewayError tree. Nothing here formats SMTP replies; inbound.py does."""

from __future__ import annotations

__all__ = [
    "ConfigError",
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

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class StoreError(GatewayError, OSError):
    """The state store could not make a record durable."""
