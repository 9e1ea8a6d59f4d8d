"""When the supervisor starts a worker that ended again: a pure rule, no clock of its own.

A worker that dies at once (a broken config it cannot serve with, a port it cannot use)
would otherwise be restarted in a tight loop that fills the log; one that served a while
and then died is restarted at once, as an operator would.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """How long to wait before starting a worker again: doubling from `first_s` up to `cap_s`
    while it keeps ending soon after starting; from `first_s` again once one served `stable_s`.
    """

    first_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0
    restarts: int = 0  # in a row, each within stable_s of its start

    def after(self, ran_s: float) -> float:
        """The delay before the next start of a worker that ran `ran_s` seconds."""
        if ran_s >= self.stable_s:
            self.restarts = 0
        delay = min(self.cap_s, self.first_s * 2.0**self.restarts)
        self.restarts += 1
        return delay
