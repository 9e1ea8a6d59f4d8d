"""The end-of-DATA verdict: what a received message gets, as a value.

PURE: no I/O, no clock, no logging, no reply text. The handler hands in the facts (the
envelope's recipients, what the message says about itself, the sender checks), the rules it
was configured with and the arrival time; `judge()` returns each recipient's decision, the
reply to give (a `Reply` value: smtp/replies.py words it), the outcome, the notice status and
the jobs to queue. The notice limits need what earlier messages did: the store reads that in
the same transaction as the write and passes it to `settle()`, which returns the verdict as
it stands. Neither function may import the SMTP, store or notice modules.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from gateway.config import OfficeSettings
from gateway.policy.answer import (
    AnswerGroup,
    AnswerKind,
    Outcome,
    Problem,
    Reply,
    ReplyKind,
    answer_group,
)
from gateway.policy.decision import (
    Action,
    Decision,
    NoticeScope,
    decide,
    exceeded_scope,
    loop_reason,
    notice_suppression,
    replies_to_own_notice,
)
from gateway.vocabulary import JobKind, NoticeStatus, NoticeStatusKind

__all__ = [
    "Addressee",
    "AnswerGroup",
    "AnswerKind",
    "Arrival",
    "Job",
    "NoticeGate",
    "NoticeHistory",
    "Outcome",
    "Problem",
    "Reply",
    "ReplyKind",
    "Screening",
    "SenderCheck",
    "Verdict",
    "VerdictRules",
    "answer_group",
    "forward_jobs",
    "judge",
    "screen",
    "settle",
]

# ---------------------------------------------------------------------------------------------
# The vocabulary of a verdict


@dataclass(frozen=True, slots=True)
class Job:
    kind: JobKind
    mail_from: str
    recipients: tuple[str, ...]
    office: str | None = None
    destination: str | None = None  # host:port for relays; None: by the delivery mode

    @property
    def is_notice(self) -> bool:
        """Whether this job answers the sender, so that the notice limits apply to it."""
        return self.kind.is_notice


# ---------------------------------------------------------------------------------------------
# The facts and the rules


@dataclass(frozen=True, slots=True)
class Addressee:
    """A recipient accepted at RCPT, as given; `office` is None for postmaster."""

    given: str
    office: str | None


class SenderCheck(enum.StrEnum):
    """What SPF, DKIM and DMARC allowed (senderauth's verdict), or that nothing was checked."""

    UNCHECKED = "unchecked"
    PASS = "pass"
    FAIL = "fail"
    TEMPERROR = "temperror"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message at the end of DATA: its envelope and what it says about itself."""

    sender: str  # normalised; "" for the null sender
    recipients: tuple[Addressee, ...]
    peer_ip: str
    is_trusted: bool  # from [server] trusted_networks: the sender counts as authenticated
    headers: Mapping[str, str] = field(default_factory=dict)  # lowercase name -> first value
    message_id: str | None = None
    sha256: str = ""
    received_count: int = 0
    is_complete: bool = True  # False: over the size limit, only its head was kept
    has_long_line: bool = False  # a line over 1000 octets (RFC 5321 §4.5.3.1.6)


@dataclass(frozen=True, slots=True)
class VerdictRules:
    """The settings a verdict depends on, read once at startup."""

    offices: Mapping[str, OfficeSettings]
    own_domains: frozenset[str]  # mail from these comes back to us: answering it loops
    own_addresses: frozenset[str]  # the notices' From
    notice_domain: str  # the domain of our notices' Message-IDs
    max_received: int
    should_tempfail_on_dns: bool  # [sender_auth] on_temperror = "tempfail"
    dedup_window: timedelta
    notice_limits: Mapping[NoticeScope, int]
    forward_to: tuple[str, ...] = ()  # [postmaster] forward_to


@dataclass(frozen=True, slots=True)
class NoticeGate:
    """What limits a message's notice: its dedup key and its rate-limit counters."""

    dedup_key: str
    dedup_since: datetime  # notices before this no longer count as the same
    hour: str  # the rate-limit window, e.g. "2017-09-13T15"
    counters: Mapping[NoticeScope, str]  # scope -> what is counted (sender, domain, ip, "*")
    limits: Mapping[NoticeScope, int]


@dataclass(frozen=True, slots=True)
class NoticeHistory:
    """What the store says about earlier notices, read in the transaction of the write."""

    duplicate_of: str | None = None  # the message within the dedup window this one repeats
    counts: Mapping[NoticeScope, int] = field(default_factory=dict)  # notices this hour


@dataclass(frozen=True, slots=True)
class Screening:
    """What the message's headers say before anyone is asked about the sender."""

    loop: str | None  # why it is part of a mail loop, or None
    automatic: str | None  # the RFC 3834 reason no notice may answer it, or None

    @property
    def should_check_sender(self) -> bool:
        """Whether a notice could follow, so that the sender is worth checking."""
        return self.loop is None and self.automatic is None


@dataclass(frozen=True, slots=True)
class Verdict:
    decisions: tuple[Decision | None, ...]  # per recipient, at arrival; None for postmaster
    group: AnswerGroup  # the transaction's one answer (PARTED: none)
    reply: Reply
    outcome: Outcome
    notice: NoticeStatus
    jobs: tuple[Job, ...]
    is_sender_authenticated: bool
    problem: Problem | None = None
    gate: NoticeGate | None = None  # set when a notice is queued: the store checks it
    duplicate_of: str | None = None

    @property
    def counts_notice(self) -> bool:
        """Whether the queued notice passed its gate and now counts against the limits."""
        return self.gate is not None and self.notice.kind is NoticeStatusKind.QUEUED

    def possible_replies(self) -> tuple[Reply, ...]:
        """Every reply `settle()` may end on, so that each can be worded before the write."""
        if self.gate is None or not _depends_on_notice(self.group):
            return (self.reply,)
        office = self.group.office
        return (self.reply, *(_limited_reply(office, scope) for scope in NoticeScope))


# ---------------------------------------------------------------------------------------------
# The functions


def screen(arrival: Arrival, rules: VerdictRules) -> Screening:
    """Loops and automatic senders, told from the headers alone."""
    automatic = notice_suppression(
        arrival.sender,
        arrival.headers,
        own_domains=rules.own_domains,
        own_addresses=rules.own_addresses,
    )
    loop = loop_reason(
        arrival.headers,
        message_id=arrival.message_id,
        received_count=arrival.received_count,
        own_domain=rules.notice_domain,
        max_received=rules.max_received,
        is_automatic=automatic is not None,
    )
    return Screening(loop=loop, automatic=None if loop else automatic)


def judge(
    arrival: Arrival,
    *,
    screening: Screening,
    sender_check: SenderCheck,
    rules: VerdictRules,
    at: datetime,
) -> Verdict:
    """The verdict on `arrival`, received at `at`, before the notice limits are applied."""
    authenticated = arrival.is_trusted or sender_check is SenderCheck.PASS
    # The decision on record is the one at arrival (end of DATA), not at RCPT time.
    decisions = tuple(
        _redecide(r, rules, at, authenticated=authenticated) for r in arrival.recipients
    )
    groups = {answer_group(d) for d in decisions}
    group = groups.pop() if len(groups) == 1 else AnswerGroup(AnswerKind.PARTED)
    problem = _problem(arrival, group)
    suppressed = _suppression(arrival, screening, rules, authenticated=authenticated)
    reply, outcome, suppressed = _answer(
        group, problem, screening, sender_check, rules, suppressed=suppressed
    )
    answered = screening.loop is None and outcome is not Outcome.DEFERRED
    jobs = (
        _jobs(arrival, decisions, rules, suppressed=suppressed, with_relays=problem is None)
        if answered
        else ()
    )
    has_notice = any(j.is_notice for j in jobs)
    return Verdict(
        decisions=decisions,
        group=group,
        reply=reply,
        outcome=outcome,
        notice=_notice_status(suppressed, has_notice=has_notice),
        jobs=jobs,
        is_sender_authenticated=authenticated,
        problem=problem,
        gate=_gate(arrival, rules, at) if has_notice else None,
    )


def settle(verdict: Verdict, history: NoticeHistory) -> Verdict:
    """The verdict once its notice has met the limits: a repeat within the dedup window gets
    no second notice, and a notice past an hourly limit is not queued (a message whose answer
    promises it is then deferred instead)."""
    if verdict.gate is None:
        return verdict
    others = tuple(j for j in verdict.jobs if not j.is_notice)
    if history.duplicate_of is not None:
        return replace(
            verdict,
            jobs=others,
            notice=NoticeStatus(NoticeStatusKind.SUPPRESSED, "duplicate"),
            duplicate_of=history.duplicate_of,
        )
    scope = exceeded_scope(history.counts, verdict.gate.limits)
    if scope is None:
        return verdict
    limited = replace(
        verdict,
        jobs=others,
        notice=NoticeStatus(NoticeStatusKind.SUPPRESSED, f"rate-limit-{scope}"),
    )
    if not _depends_on_notice(verdict.group):
        return limited
    reply = _limited_reply(verdict.group.office, scope)
    return replace(limited, reply=reply, outcome=Outcome.DEFERRED, jobs=())


def forward_jobs(forward_to: Sequence[str]) -> tuple[Job, ...]:
    """The forward jobs for one message to postmaster: one per recipient domain (MX delivery
    goes by it). MAIL FROM is the null sender: a forward that fails is seen in the queue, and
    no bounce can reach the original sender, who may be forged (RFC 5321 §4.5.5)."""
    by_domain: dict[str, list[str]] = {}
    for address in forward_to:
        by_domain.setdefault(address.rpartition("@")[2].lower(), []).append(address)
    return tuple(Job(JobKind.FORWARD, "", tuple(rcpts)) for rcpts in by_domain.values())


def _depends_on_notice(group: AnswerGroup) -> bool:
    # A relayed message keeps its 250 when only its advisory is over a limit; a refusal or
    # an accept-and-notify answer promises the notice, so it becomes a 451. (A message
    # whose answers parted is deferred and queues nothing, so it never meets the gate.)
    return group.kind is not AnswerKind.QUEUED


def _limited_reply(office: str | None, scope: NoticeScope) -> Reply:
    return Reply(ReplyKind.RATE_LIMITED, office=office, scope=scope)


# ---------------------------------------------------------------------------------------------
# Helpers of judge()

_RELAYING = frozenset({Action.RELAY, Action.RELAY_AND_ADVISE})
_NOTICE_FOR = {
    Action.RELAY_AND_ADVISE: JobKind.ADVISORY,
    Action.REJECT_AFTER_DATA: JobKind.NOTICE,
    Action.ACCEPT_AND_NOTIFY: JobKind.NOTICE,
}


def _redecide(
    recipient: Addressee, rules: VerdictRules, at: datetime, *, authenticated: bool
) -> Decision | None:
    if recipient.office is None:
        return None
    return decide(rules.offices[recipient.office], at, sender_authenticated=authenticated)


def _problem(arrival: Arrival, group: AnswerGroup) -> Problem | None:
    if group.kind is AnswerKind.PARTED:
        return None  # deferred whatever the message is: the retry is judged afresh
    if not arrival.is_complete:
        return Problem.TOO_BIG
    # A long line harms only a message we pass on (RFC 5321 §4.5.3.1.6); a filing that is
    # refused or kept for postmaster is answered as any other.
    if arrival.has_long_line and group.kind is AnswerKind.QUEUED:
        return Problem.LINE_TOO_LONG
    return None


def _suppression(
    arrival: Arrival, screening: Screening, rules: VerdictRules, *, authenticated: bool
) -> str | None:
    """Why no notice may be sent (before the loop and DNS checks), or None."""
    if screening.automatic is not None:
        return screening.automatic
    # Nothing is ever mailed to a sender we could not authenticate: a forged sender would
    # turn the notice into backscatter. The SMTP reply is their answer.
    if not authenticated:
        return "sender-not-authenticated"
    # A person answering our notice gets the refusal, but not a second notice.
    if replies_to_own_notice(arrival.headers, own_domain=rules.notice_domain):
        return "reply-to-notice"
    return None


def _answer(
    group: AnswerGroup,
    problem: Problem | None,
    screening: Screening,
    sender_check: SenderCheck,
    rules: VerdictRules,
    *,
    suppressed: str | None,
) -> tuple[Reply, Outcome, str | None]:
    """The reply, the outcome and the final reason no notice is sent."""
    if screening.loop is not None:
        return Reply(ReplyKind.LOOP), Outcome.REJECTED, f"loop-{screening.loop}"
    if sender_check is SenderCheck.TEMPERROR and rules.should_tempfail_on_dns:
        reply = Reply(ReplyKind.SENDER_CHECK_FAILED, office=group.office)
        return reply, Outcome.DEFERRED, "sender-check-temperror"
    if group.kind is AnswerKind.PARTED:
        return Reply(ReplyKind.CHANGED), Outcome.DEFERRED, None
    if problem is Problem.LINE_TOO_LONG:
        return Reply(ReplyKind.LINE_TOO_LONG), Outcome.REJECTED, suppressed
    if problem is Problem.TOO_BIG:
        return Reply(ReplyKind.TOO_BIG, office=group.office), Outcome.REJECTED, suppressed
    return _final_reply(group, is_notice_promised=suppressed is None), _outcome(group), suppressed


def _final_reply(group: AnswerGroup, *, is_notice_promised: bool) -> Reply:
    if group.kind is AnswerKind.GONE:
        return Reply(ReplyKind.GONE)
    if group.kind is AnswerKind.RETIRED:
        return Reply(ReplyKind.RETIRED, office=group.office)
    return Reply(ReplyKind.ACCEPTED, office=group.office, is_notice_promised=is_notice_promised)


def _outcome(group: AnswerGroup) -> Outcome:
    if group.kind in (AnswerKind.QUEUED, AnswerKind.NOT_FILED):
        return Outcome.ACCEPTED
    return Outcome.REJECTED


def _jobs(
    arrival: Arrival,
    decisions: Sequence[Decision | None],
    rules: VerdictRules,
    *,
    suppressed: str | None,
    with_relays: bool,
) -> tuple[Job, ...]:
    relay: dict[str, list[str]] = {}
    notices: dict[str, JobKind] = {}
    for recipient, decision in zip(arrival.recipients, decisions, strict=True):
        if decision is None:
            continue
        if decision.action in _RELAYING and with_relays:
            relay.setdefault(decision.office, []).append(recipient.given)
        kind = _NOTICE_FOR.get(decision.action)
        if kind is not None:
            notices.setdefault(decision.office, kind)
    jobs = [
        Job(JobKind.RELAY, arrival.sender, tuple(rcpts), office, rules.offices[office].legacy_host)
        for office, rcpts in relay.items()
    ]
    if suppressed is None:
        jobs += [Job(kind, "", (arrival.sender,), office) for office, kind in notices.items()]
    # Mail to postmaster goes on to the people who read it ([postmaster] forward_to),
    # unless the message itself was refused (only its head was kept).
    if with_relays and any(r.office is None for r in arrival.recipients):
        jobs += forward_jobs(rules.forward_to)
    return tuple(jobs)


def _notice_status(suppressed: str | None, *, has_notice: bool) -> NoticeStatus:
    if has_notice:
        return NoticeStatus(NoticeStatusKind.QUEUED)
    if suppressed:
        return NoticeStatus(NoticeStatusKind.SUPPRESSED, suppressed)
    return NoticeStatus(NoticeStatusKind.NONE)


def _gate(arrival: Arrival, rules: VerdictRules, at: datetime) -> NoticeGate:
    # The same message: its Message-ID from the same sender, else the very same bytes.
    sender = arrival.sender.lower()
    identity = arrival.message_id or f"sha256:{arrival.sha256}"
    counters = {
        NoticeScope.SENDER: sender,
        NoticeScope.DOMAIN: sender.rpartition("@")[2],
        NoticeScope.CLIENT: arrival.peer_ip,
        NoticeScope.TOTAL: "*",
    }
    return NoticeGate(
        dedup_key=hashlib.sha256(f"{sender}\n{identity}".encode()).hexdigest(),
        dedup_since=at - rules.dedup_window,
        hour=f"{at.astimezone(UTC):%Y-%m-%dT%H}",
        counters=counters,
        limits=rules.notice_limits,
    )
