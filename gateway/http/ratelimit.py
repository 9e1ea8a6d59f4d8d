"""A per-client token bucket for the receipt page: `burst` lookups at once, then `per_minute`.

Pure: the time comes in as an argument (monotonic seconds) and the answer is a value. Memory
is bounded: past `max_clients` the buckets that have refilled are dropped, and if every one
is still draining, the oldest goes (its client starts again with a full burst, which costs a
walker of the reference space nothing it could use: 65 bits do not yield to a burst).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RateLimit", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one request may go ahead; if not, after how many whole seconds it may."""

    is_allowed: bool
    retry_after_s: int = 0
    is_first_refusal: bool = False  # the client has just passed its limit (logged once)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    refused: bool = False


class RateLimit:
    """Token buckets by client address."""

    def __init__(self, *, per_minute: int, burst: int, max_clients: int = 10_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def ask(self, client: str, now: float) -> Verdict:
        """Take one token from `client`'s bucket at monotonic time `now`, if it has one."""
        bucket = self._buckets.pop(client, None) or self._new_bucket(now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        self._buckets[client] = bucket  # last in the dict: the most recently seen
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.refused = False
            return Verdict(True)
        first = not bucket.refused
        bucket.refused = True
        wait = math.ceil((1.0 - bucket.tokens) / self._rate)
        return Verdict(False, retry_after_s=max(wait, 1), is_first_refusal=first)

    def _new_bucket(self, now: float) -> _Bucket:
        if len(self._buckets) >= self._max_clients:
            self._forget(now)
        return _Bucket(self._burst, now)

    def _forget(self, now: float) -> None:
        full_after_s = self._burst / self._rate
        for client in [c for c, b in self._buckets.items() if now - b.at >= full_after_s]:
            del self._buckets[client]
        if len(self._buckets) >= self._max_clients:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)
