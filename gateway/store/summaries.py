"""Summaries of attempts: per office and day, and per sender. Pure.

What `gateway audit summary|report|senders` count. Each function takes the attempts
(records.find_attempts) and returns values; nothing here reads the store, writes, or formats
for a terminal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

from gateway.store.records import AttemptRecord, Kind
from gateway.vocabulary import NoticeStatusKind

__all__ = ["DaySummary", "SenderActivity", "sender_activity", "summarize"]


@dataclass(frozen=True, slots=True)
class DaySummary:
    """One office's day: what arrived, what was refused and what became of the notices."""

    day: date
    office: str  # "" when no office was addressed (postmaster)
    attempts: int  # messages and refusals at RCPT
    received: int  # messages received to the end of DATA
    refused: int  # refused after DATA or at RCPT
    noticed: int  # a notice (or advisory) was queued
    suppressed: int  # no notice, for the reason on record
    delivered: int  # notices delivered
    deferred: int  # notices waiting for another try
    failed: int  # notices given up on
    refused_by_reason: tuple[tuple[str, int], ...] = ()


def summarize(
    attempts: Iterable[AttemptRecord], *, zone_of: Callable[[str | None], tzinfo]
) -> list[DaySummary]:
    """Per day (in the zone `zone_of(office)` gives) and office, oldest day first."""
    groups: dict[tuple[date, str], list[AttemptRecord]] = {}
    for attempt in attempts:
        day = attempt.at.astimezone(zone_of(attempt.office)).date()
        groups.setdefault((day, attempt.office or ""), []).append(attempt)
    return [_day(day, office, group) for (day, office), group in sorted(groups.items())]


def _day(day: date, office: str, attempts: Sequence[AttemptRecord]) -> DaySummary:
    notices = Counter(a.notice.kind for a in attempts)
    reasons = Counter(a.reason for a in attempts if a.is_refused)
    return DaySummary(
        day=day,
        office=office,
        attempts=len(attempts),
        received=sum(1 for a in attempts if a.kind is Kind.MESSAGE),
        refused=sum(reasons.values()),
        noticed=sum(1 for a in attempts if a.has_notice),
        suppressed=sum(1 for a in attempts if a.notice.is_suppressed),
        delivered=notices[NoticeStatusKind.DELIVERED],
        deferred=notices[NoticeStatusKind.DEFERRED],
        failed=notices[NoticeStatusKind.FAILED],
        refused_by_reason=tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


@dataclass(frozen=True, slots=True)
class SenderActivity:
    """A sender domain (sender "") or one sender in it: who still files by e-mail."""

    domain: str
    sender: str  # "" on the domain's own line
    attempts: int
    first: datetime
    last: datetime
    notices_delivered: int  # attempts whose notice reached the sender
    senders: int  # 1 on a sender's line
    senders_reached: int  # how many of them were reached by at least one notice

    @property
    def is_domain(self) -> bool:
        return not self.sender


def sender_activity(attempts: Iterable[AttemptRecord]) -> list[SenderActivity]:
    """Each sender domain, busiest first, followed by its senders, busiest first."""
    by_sender: dict[tuple[str, str], list[AttemptRecord]] = {}
    for attempt in attempts:
        sender = attempt.sender.lower() or "<>"
        by_sender.setdefault((attempt.sender_domain, sender), []).append(attempt)
    senders = [_activity(domain, sender, group) for (domain, sender), group in by_sender.items()]
    by_domain: dict[str, list[SenderActivity]] = {}
    for activity in senders:
        by_domain.setdefault(activity.domain, []).append(activity)
    result: list[SenderActivity] = []
    for domain, members in sorted(by_domain.items(), key=lambda kv: _busiest(kv[1], kv[0])):
        members.sort(key=lambda m: (-m.attempts, m.sender))
        result.append(_domain_total(domain, members))
        result.extend(members)
    return result


def _busiest(members: Sequence[SenderActivity], domain: str) -> tuple[int, str]:
    return -sum(m.attempts for m in members), domain


def _activity(domain: str, sender: str, attempts: Sequence[AttemptRecord]) -> SenderActivity:
    delivered = sum(1 for a in attempts if a.notice.kind is NoticeStatusKind.DELIVERED)
    return SenderActivity(
        domain=domain,
        sender=sender,
        attempts=len(attempts),
        first=min(a.at for a in attempts),
        last=max(a.at for a in attempts),
        notices_delivered=delivered,
        senders=1,
        senders_reached=1 if delivered else 0,
    )


def _domain_total(domain: str, members: Sequence[SenderActivity]) -> SenderActivity:
    return SenderActivity(
        domain=domain,
        sender="",
        attempts=sum(m.attempts for m in members),
        first=min(m.first for m in members),
        last=max(m.last for m in members),
        notices_delivered=sum(m.notices_delivered for m in members),
        senders=len(members),
        senders_reached=sum(m.senders_reached for m in members),
    )
