"""The gateway's domain words: the closed sets that cross modules, as types.

Job kinds, job states and a message's notice status were bare strings spelled in many
modules (and one list of them, the metrics', forgot a kind). Here each is spelled once. The
values are exactly the strings the state store has always held, so an old database reads the
same; `NoticeStatus` is the one value that is stored in a compound form ("suppressed:<why>")
and so comes with a parse/format pair, used where the store reads and writes it.

This module imports nothing from the gateway (it sits below the store, policy and audit
alike), holds no state and decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "NOTICE_KINDS",
    "JobKind",
    "JobState",
    "NoticeStatus",
    "NoticeStatusKind",
    "Outcome",
    "format_notice_status",
    "parse_notice_status",
]


class JobKind(StrEnum):
    """What an outbox job carries, as the `jobs.kind` column spells it."""

    RELAY = "relay"  # a filing's message, on to the legacy mail host
    FORWARD = "forward"  # mail to postmaster, relayed to [postmaster] forward_to
    NOTICE = "notice"  # the NOT FILED notice to the sender
    ADVISORY = "advisory"  # the warn phase: delivered, but the address retires soon
    BOUNCE = "bounce"  # a DSN to the sender of a relay that failed

    @property
    def is_notice(self) -> bool:
        """Whether the job answers a sender, so that the notice limits apply to it."""
        return self in NOTICE_KINDS

    @property
    def is_relay(self) -> bool:
        """Whether the job carries someone else's message unchanged (relay or forward)."""
        return self in (JobKind.RELAY, JobKind.FORWARD)


# Jobs that answer a sender, limited by the notice gate; relays, forwards and bounces are not.
NOTICE_KINDS = frozenset({JobKind.NOTICE, JobKind.ADVISORY})


class Outcome(StrEnum):
    """How a message was answered at the end of DATA, as `messages.outcome` spells it."""

    ACCEPTED = "accepted"  # 250
    REJECTED = "rejected"  # 5xx: refused, on record
    DEFERRED = "deferred"  # 4xx: to be tried again by the sender's server


class JobState(StrEnum):
    """Where an outbox job is: queued -> in-flight -> delivered | deferred | failed."""

    QUEUED = "queued"
    IN_FLIGHT = "in-flight"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    FAILED = "failed"
    DELETED = "deleted"  # by an operator; the row stays as evidence
    # By an operator (`gateway queue hold`, like `postsuper -h`): never claimed until released.
    # A new value in the same TEXT column, so stores made before it read unchanged.
    HELD = "held"


class NoticeStatusKind(StrEnum):
    """What became of the notice a message would get.

    A message is stored with none, queued or suppressed; reading it back, a queued notice
    takes the state of its job, so every job state but queued is a status as well.
    """

    NONE = "none"  # no notice is due (a relay, postmaster mail, a refusal at RCPT)
    SUPPRESSED = "suppressed"  # due, but not sent, for the reason on record
    QUEUED = JobState.QUEUED.value
    IN_FLIGHT = JobState.IN_FLIGHT.value
    DEFERRED = JobState.DEFERRED.value
    DELIVERED = JobState.DELIVERED.value
    FAILED = JobState.FAILED.value
    DELETED = JobState.DELETED.value
    HELD = JobState.HELD.value  # an operator holds its job (gateway queue hold)

    @property
    def has_notice(self) -> bool:
        """Whether a notice (or advisory) was queued: the status is its job's state."""
        return self.value in _JOB_STATES


_JOB_STATES = frozenset(state.value for state in JobState)
_REASON_SEPARATOR = ":"


@dataclass(frozen=True, slots=True)
class NoticeStatus:
    """A notice status with, when suppressed, why (e.g. "duplicate", "rate-limit-sender")."""

    kind: NoticeStatusKind
    reason: str | None = None

    @property
    def is_suppressed(self) -> bool:
        return self.kind is NoticeStatusKind.SUPPRESSED

    @property
    def has_notice(self) -> bool:
        return self.kind.has_notice

    def __str__(self) -> str:
        return format_notice_status(self)


def format_notice_status(status: NoticeStatus) -> str:
    """The status as the store holds it: "suppressed:<why>", or the kind alone."""
    if status.reason is None:
        return status.kind.value
    return f"{status.kind.value}{_REASON_SEPARATOR}{status.reason}"


def parse_notice_status(text: str) -> NoticeStatus:
    """The status that `format_notice_status` stored as `text`.

    A reason is split off at the first colon only: reasons may contain colons of their own.

    Raises:
        ValueError: `text` names no status.
    """
    kind, separator, reason = text.partition(_REASON_SEPARATOR)
    return NoticeStatus(NoticeStatusKind(kind), reason if separator else None)
