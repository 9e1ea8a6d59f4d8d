"""The gateway's clock: what time it is, as one injectable function.

Everything that decides by time takes the time as an argument; the I/O modules get it from
a Clock. Tests pass a settable clock; `gateway serve --as-of` runs a shifted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.errors import ConfigError

__all__ = ["Clock", "make_clock"]

Clock = Callable[[], datetime]


def make_clock(as_of: str | None) -> Clock:
    """UTC now, or a clock running on from `as_of` (rehearsals and trials).

    Raises:
        ConfigError: `as_of` is not an ISO-8601 time with an offset.
    """
    if as_of is None:
        return lambda: datetime.now(UTC)
    try:
        start = datetime.fromisoformat(as_of)
    except ValueError as exc:
        raise ConfigError("--as-of", f"{as_of!r} is not an ISO-8601 date-time") from exc
    if start.tzinfo is None:
        raise ConfigError("--as-of", "needs an offset or Z, e.g. 2017-09-12T09:00:00-05:00")
    origin = time.monotonic()
    return lambda: (start + timedelta(seconds=time.monotonic() - origin)).astimezone(UTC)
