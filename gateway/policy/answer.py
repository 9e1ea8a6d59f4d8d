"""The answers of the end of DATA as values: the recipients' answer group, the reply, the
outcome, and what about the message itself refuses it.

PURE, like the rest of policy/: smtp/replies.py words a `Reply`, nothing here does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.policy.decision import Action, Decision, NoticeScope
from gateway.vocabulary import Outcome

__all__ = [
    "AnswerGroup",
    "AnswerKind",
    "Outcome",
    "Problem",
    "Reply",
    "ReplyKind",
    "answer_group",
]

_RELAYING = frozenset({Action.RELAY, Action.RELAY_AND_ADVISE})


class AnswerKind(enum.StrEnum):
    """How the end of DATA answers a recipient; one transaction has one answer."""

    QUEUED = "queued"  # 250 Queued: relayed mail and mail for postmaster
    NOT_FILED = "not-filed"  # 250, received but not filed (accept-and-notify)
    RETIRED = "retired"  # 550 5.1.6 NOT FILED
    GONE = "gone"  # 550 5.1.1, the address no longer exists
    # No recipient's: their answers parted between RCPT and the end of DATA (a phase
    # boundary passed, or the sender checks changed an action), so the message is deferred.
    PARTED = "parted"


@dataclass(frozen=True, slots=True)
class AnswerGroup:
    """Recipients in one group get the same reply at the end of DATA, so they may share a
    transaction; a recipient of another group is sent to a transaction of its own."""

    kind: AnswerKind
    office: str | None = None  # the office whose filing is refused (NOT_FILED, RETIRED)

    @property
    def is_filing(self) -> bool:
        """Whether the answer is about a filing that is not filed (it names the portal)."""
        return self.office is not None


def answer_group(decision: Decision | None) -> AnswerGroup:
    """The group of a recipient with `decision` (None: mail for postmaster)."""
    if decision is None or decision.action in _RELAYING:
        return AnswerGroup(AnswerKind.QUEUED)
    if decision.action is Action.ACCEPT_AND_NOTIFY:
        return AnswerGroup(AnswerKind.NOT_FILED, decision.office)
    if decision.action is Action.GONE:
        return AnswerGroup(AnswerKind.GONE)
    return AnswerGroup(AnswerKind.RETIRED, decision.office)


class Problem(enum.StrEnum):
    """What about the message itself refuses it, whatever its addresses say."""

    TOO_BIG = "message-too-big"
    LINE_TOO_LONG = "line-too-long"


class ReplyKind(enum.StrEnum):
    ACCEPTED = "accepted"  # 250; names the portal when `office` is set
    RETIRED = "retired"  # 550 5.1.6 NOT FILED
    GONE = "gone"  # 550 5.1.1
    LOOP = "loop"  # 554 5.4.6, never answered otherwise
    TOO_BIG = "too-big"  # 552 5.3.4
    LINE_TOO_LONG = "line-too-long"  # 554 5.6.0
    CHANGED = "changed"  # 451: the recipients' answers parted during the transaction
    SENDER_CHECK_FAILED = "sender-check-failed"  # 451: DNS trouble checking the sender
    RATE_LIMITED = "rate-limited"  # 451: the notice would pass an hourly limit


@dataclass(frozen=True, slots=True)
class Reply:
    """The reply to give at the end of DATA, as a value; smtp/replies.py words it."""

    kind: ReplyKind
    office: str | None = None  # the office whose filing it refuses: the reply names its portal
    is_notice_promised: bool = False  # ACCEPTED: "a notice follows"
    scope: NoticeScope | None = None  # RATE_LIMITED: which limit
