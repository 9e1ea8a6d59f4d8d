"""The end-of-DATA verdict (policy/verdict.py) as tables of plain values."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.config import OfficeSettings, ResponseMode
from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import (
    Addressee,
    AnswerKind,
    Arrival,
    NoticeHistory,
    Outcome,
    Problem,
    ReplyKind,
    Screening,
    SenderCheck,
    Verdict,
    VerdictRules,
    judge,
    screen,
    settle,
)
from gateway.vocabulary import JobKind, NoticeStatusKind
from tests.conftest import AFTER_CUTOFF, BEFORE_PORTAL, WARN_TIME, office

CHICAGO = OfficeSettings.model_validate(office(decommissions="2027-09-12"))
NOTIFY = OfficeSettings.model_validate(
    office(name="notify", response=ResponseMode.ACCEPT_AND_NOTIFY)
)
DECOMMISSIONED = datetime(2027, 9, 13, 15, 0, tzinfo=AFTER_CUTOFF.tzinfo)
LIMITS = dict.fromkeys(NoticeScope, 2)
RULES = VerdictRules(
    offices={"ice-occ-chicago": CHICAGO, "notify": NOTIFY},
    own_domains=frozenset({"occ-chicago.example"}),
    own_addresses=frozenset({"no-reply@occ-chicago.example"}),
    notice_domain="occ-chicago.example",
    max_received=30,
    should_tempfail_on_dns=True,
    dedup_window=timedelta(days=1),
    notice_limits=LIMITS,
    forward_to=("ops@firm.example", "desk@firm.example", "it@other.example"),
)
FILING = Addressee("filings@occ-chicago.example", "ice-occ-chicago")
NOTIFIED = Addressee("filings@notify.example", "notify")
POSTMASTER = Addressee("postmaster@occ-chicago.example", None)
CLEAN = Screening(loop=None, automatic=None)


def arrival(*recipients: Addressee, **facts: object) -> Arrival:
    values: dict[str, object] = {
        "sender": "a@lawfirm.example",
        "recipients": recipients,
        "peer_ip": "192.0.2.1",
        "is_trusted": True,
        "sha256": "ab",
    }
    values.update(facts)
    return Arrival(**values)  # type: ignore[arg-type]


def verdict(
    message: Arrival,
    *,
    at: datetime = AFTER_CUTOFF,
    check: SenderCheck = SenderCheck.UNCHECKED,
    screening: Screening = CLEAN,
    rules: VerdictRules = RULES,
) -> Verdict:
    return judge(message, screening=screening, sender_check=check, rules=rules, at=at)


@pytest.mark.parametrize(
    ("message", "at", "check", "screening", "reply", "outcome", "notice", "jobs"),
    [
        # Retired, refused after DATA, the notice queued.
        (arrival(FILING), AFTER_CUTOFF, SenderCheck.UNCHECKED, CLEAN, ReplyKind.RETIRED,
         Outcome.REJECTED, NoticeStatusKind.QUEUED, (JobKind.NOTICE,)),
        # An unauthenticated sender is refused and never mailed.
        (arrival(FILING, is_trusted=False), AFTER_CUTOFF, SenderCheck.FAIL, CLEAN,
         ReplyKind.RETIRED, Outcome.REJECTED, NoticeStatusKind.SUPPRESSED, ()),
        # Passing SPF/DKIM/DMARC counts as authenticated: accept-and-notify accepts.
        (arrival(NOTIFIED, is_trusted=False), AFTER_CUTOFF, SenderCheck.PASS, CLEAN,
         ReplyKind.ACCEPTED, Outcome.ACCEPTED, NoticeStatusKind.QUEUED, (JobKind.NOTICE,)),
        # Before the portal: relayed, nothing told.
        (arrival(FILING), BEFORE_PORTAL, SenderCheck.UNCHECKED, CLEAN, ReplyKind.ACCEPTED,
         Outcome.ACCEPTED, NoticeStatusKind.NONE, (JobKind.RELAY,)),
        # Warn phase with postmaster: relayed with an advisory, and forwarded by domain.
        (arrival(FILING, POSTMASTER), WARN_TIME, SenderCheck.UNCHECKED, CLEAN,
         ReplyKind.ACCEPTED, Outcome.ACCEPTED, NoticeStatusKind.QUEUED,
         (JobKind.RELAY, JobKind.ADVISORY, JobKind.FORWARD, JobKind.FORWARD)),
        # Decommissioned by the end of DATA: gone.
        (arrival(FILING), DECOMMISSIONED, SenderCheck.UNCHECKED, CLEAN, ReplyKind.GONE,
         Outcome.REJECTED, NoticeStatusKind.NONE, ()),
        # A loop is refused and never answered.
        (arrival(FILING), AFTER_CUTOFF, SenderCheck.UNCHECKED,
         Screening(loop="too-many-hops", automatic=None), ReplyKind.LOOP, Outcome.REJECTED,
         NoticeStatusKind.SUPPRESSED, ()),
        # DNS trouble checking the sender: deferred, naming the office.
        (arrival(FILING, is_trusted=False), AFTER_CUTOFF, SenderCheck.TEMPERROR, CLEAN,
         ReplyKind.SENDER_CHECK_FAILED, Outcome.DEFERRED, NoticeStatusKind.SUPPRESSED, ()),
        # Answers parted since RCPT (one retired, one relayed by the time of DATA).
        (arrival(NOTIFIED, FILING), AFTER_CUTOFF, SenderCheck.UNCHECKED, CLEAN,
         ReplyKind.CHANGED, Outcome.DEFERRED, NoticeStatusKind.NONE, ()),
        # Automatic sender: refused, no notice.
        (arrival(FILING), AFTER_CUTOFF, SenderCheck.UNCHECKED,
         Screening(loop=None, automatic="auto-submitted"), ReplyKind.RETIRED, Outcome.REJECTED,
         NoticeStatusKind.SUPPRESSED, ()),
        # Oversize filing: refused as too big, its notice still queued.
        (arrival(FILING, is_complete=False), AFTER_CUTOFF, SenderCheck.UNCHECKED, CLEAN,
         ReplyKind.TOO_BIG, Outcome.REJECTED, NoticeStatusKind.QUEUED, (JobKind.NOTICE,)),
        # A long line in relayed mail: refused, nothing relayed.
        (arrival(FILING, has_long_line=True), BEFORE_PORTAL, SenderCheck.UNCHECKED, CLEAN,
         ReplyKind.LINE_TOO_LONG, Outcome.REJECTED, NoticeStatusKind.NONE, ()),
        # A person answering our notice: refused, no second notice.
        (arrival(FILING, headers={"in-reply-to": "<n1@occ-chicago.example>"}), AFTER_CUTOFF,
         SenderCheck.UNCHECKED, CLEAN, ReplyKind.RETIRED, Outcome.REJECTED,
         NoticeStatusKind.SUPPRESSED, ()),
    ],
)  # fmt: skip
def test_judge_answers_each_kind_of_message(
    message: Arrival,
    at: datetime,
    check: SenderCheck,
    screening: Screening,
    reply: ReplyKind,
    outcome: Outcome,
    notice: NoticeStatusKind,
    jobs: tuple[JobKind, ...],
) -> None:
    result = verdict(message, at=at, check=check, screening=screening)
    assert (result.reply.kind, result.outcome, result.notice.kind) == (reply, outcome, notice)
    assert tuple(j.kind for j in result.jobs) == jobs
    assert (result.gate is not None) == any(j.is_notice for j in result.jobs)


def test_temperror_is_not_a_deferral_when_configured_to_refuse() -> None:
    lenient = VerdictRules(
        offices=RULES.offices,
        own_domains=RULES.own_domains,
        own_addresses=RULES.own_addresses,
        notice_domain=RULES.notice_domain,
        max_received=30,
        should_tempfail_on_dns=False,
        dedup_window=RULES.dedup_window,
        notice_limits=LIMITS,
    )
    result = verdict(arrival(FILING, is_trusted=False), check=SenderCheck.TEMPERROR, rules=lenient)
    assert (result.reply.kind, result.outcome) == (ReplyKind.RETIRED, Outcome.REJECTED)


@pytest.mark.parametrize(
    ("message", "at", "history", "reply", "outcome", "notice", "jobs"),
    [
        (arrival(FILING), AFTER_CUTOFF, NoticeHistory(), ReplyKind.RETIRED, Outcome.REJECTED,
         "queued", (JobKind.NOTICE,)),
        (arrival(FILING), AFTER_CUTOFF, NoticeHistory(duplicate_of="R1"), ReplyKind.RETIRED,
         Outcome.REJECTED, "suppressed:duplicate", ()),
        # Over a limit, a refusal that promises the notice is deferred instead.
        (arrival(FILING), AFTER_CUTOFF, NoticeHistory(counts={NoticeScope.DOMAIN: 2}),
         ReplyKind.RATE_LIMITED, Outcome.DEFERRED, "suppressed:rate-limit-domain", ()),
        # Relayed mail keeps its 250 and its relay; only the advisory is dropped.
        (arrival(FILING), WARN_TIME, NoticeHistory(counts={NoticeScope.TOTAL: 9}),
         ReplyKind.ACCEPTED, Outcome.ACCEPTED, "suppressed:rate-limit-total", (JobKind.RELAY,)),
        # No notice: nothing to settle.
        (arrival(FILING), BEFORE_PORTAL, NoticeHistory(duplicate_of="R1"), ReplyKind.ACCEPTED,
         Outcome.ACCEPTED, "none", (JobKind.RELAY,)),
    ],
)  # fmt: skip
def test_settle_applies_dedup_and_hourly_limits(
    message: Arrival,
    at: datetime,
    history: NoticeHistory,
    reply: ReplyKind,
    outcome: Outcome,
    notice: str,
    jobs: tuple[JobKind, ...],
) -> None:
    first = verdict(message, at=at)
    settled = settle(first, history)
    assert (settled.reply.kind, settled.outcome, str(settled.notice)) == (reply, outcome, notice)
    assert tuple(j.kind for j in settled.jobs) == jobs
    assert settled.reply in first.possible_replies()
    assert settled.counts_notice == (notice == "queued")


@pytest.mark.parametrize(
    ("message", "loop", "automatic", "should_check"),
    [
        (arrival(FILING), None, None, True),
        (arrival(FILING, sender=""), None, "null-sender", False),
        (arrival(FILING, received_count=31), "too-many-hops", None, False),
    ],
)
def test_screen_tells_loops_and_automatic_senders(
    message: Arrival, loop: str | None, automatic: str | None, should_check: bool
) -> None:
    screening = screen(message, RULES)
    assert (screening.loop, screening.automatic) == (loop, automatic)
    assert screening.should_check_sender is should_check


def test_answer_groups_and_problems_are_values() -> None:
    result = verdict(arrival(FILING, is_complete=False))
    assert result.group.kind is AnswerKind.RETIRED
    assert result.group.is_filing
    assert result.problem is Problem.TOO_BIG
    assert not verdict(arrival(FILING), at=BEFORE_PORTAL).group.is_filing
