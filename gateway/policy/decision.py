"""What happens to mail for a retired address: the pure decision logic.

No I/O, no clock, no logging: the arrival time and the settings come in as arguments and a
value comes out. Reply strings are made from these values by smtp/replies.py, nowhere else.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.config import Lifecycle, OfficeSettings, ResponseMode

__all__ = [
    "Action",
    "Decision",
    "DeliveryOutcome",
    "NoticeScope",
    "Phase",
    "classify_reply",
    "decide",
    "exceeded_scope",
    "is_replyable_address",
    "loop_reason",
    "next_attempt_at",
    "notice_suppression",
    "phase_at",
    "replies_to_own_notice",
]


class Phase(enum.StrEnum):
    ACTIVE = "active"
    WARN = "warn"
    RETIRED = "retired"
    DECOMMISSIONED = "decommissioned"


class Action(enum.StrEnum):
    RELAY = "relay"  # 250; the message goes on to the legacy mail host
    RELAY_AND_ADVISE = "relay-and-advise"  # 250; relayed, and the sender is told of the cutoff
    REJECT_AT_RCPT = "reject-at-rcpt"  # 550 5.1.6 to RCPT; never reaches DATA
    REJECT_AFTER_DATA = "reject-after-data"  # 550 5.1.6 after DATA; evidence kept, notice queued
    ACCEPT_AND_NOTIFY = "accept-and-notify"  # 250; not filed, notice queued
    GONE = "gone"  # 550 5.1.1; the address no longer exists at all

    @property
    def is_accepted(self) -> bool:
        """Whether the end of DATA answers 250 for a recipient with this action."""
        return self in _ACCEPTING

    @property
    def is_refused_at_rcpt(self) -> bool:
        return self in (Action.REJECT_AT_RCPT, Action.GONE)


_ACCEPTING = frozenset({Action.RELAY, Action.RELAY_AND_ADVISE, Action.ACCEPT_AND_NOTIFY})


@dataclass(frozen=True, slots=True)
class Decision:
    office: str
    phase: Phase
    action: Action
    reason: str


def phase_at(lifecycle: Lifecycle, at: datetime) -> Phase:
    """The phase an address is in at the instant `at`; every boundary starts its phase.

    Raises:
        ValueError: `at` is naive (the gateway's clock is always UTC-aware).
    """
    if at.tzinfo is None:
        raise ValueError("arrival time must be timezone-aware")
    if lifecycle.decommissions is not None and at >= lifecycle.decommissions:
        return Phase.DECOMMISSIONED
    if at >= lifecycle.retires:
        return Phase.RETIRED
    if lifecycle.portal_opens is not None and at >= lifecycle.portal_opens:
        return Phase.WARN
    return Phase.ACTIVE


def decide(
    office: OfficeSettings, received_at: datetime, *, sender_authenticated: bool
) -> Decision:
    """Decide what to do with mail to one of `office`'s addresses arriving at `received_at`.

    The sender's Date: header plays no part: the sender controls it.
    """
    phase = phase_at(office.lifecycle, received_at)
    action, reason = _action_for(phase, office.response, sender_authenticated)
    return Decision(office=office.name, phase=phase, action=action, reason=reason)


def _action_for(phase: Phase, mode: ResponseMode, authenticated: bool) -> tuple[Action, str]:
    if phase is Phase.ACTIVE:
        return Action.RELAY, "portal not yet open; address still in use"
    if phase is Phase.WARN:
        return Action.RELAY_AND_ADVISE, "portal open; address retires soon"
    if phase is Phase.DECOMMISSIONED:
        return Action.GONE, "address decommissioned"
    if mode is ResponseMode.REJECT_AT_RCPT:
        return Action.REJECT_AT_RCPT, "address retired; refused at RCPT"
    if mode is ResponseMode.ACCEPT_AND_NOTIFY:
        if authenticated:
            return Action.ACCEPT_AND_NOTIFY, "address retired; authenticated sender notified"
        # RFC 5321 §6.1: accepting binds us to report non-delivery, which we may only mail to
        # an authenticated sender; otherwise refuse and let the sender's own MTA tell them.
        return Action.REJECT_AFTER_DATA, "address retired; sender not authenticated, refused"
    return Action.REJECT_AFTER_DATA, "address retired; refused after DATA"


# RFC 3834 §2 and common practice: senders that are machines or lists never get a notice.
# Compared with separators removed, so "mailer-daemon", "MAILER_DAEMON" and "mailerdaemon" match.
_SYSTEM_LOCALS = frozenset({"mailerdaemon", "listserv", "majordomo"})
# Prefixes and suffixes of no-reply and bounce mailboxes ("noreply-alerts", "list-bounces",
# "bounces+verp=...").
_ROBOT_AFFIXES = ("noreply", "donotreply", "bounce", "bounces")
_SEPARATORS = re.compile(r"[-_.]")
_COMMENT = re.compile(r"\([^()]*\)")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
# Headers that vacation programs set instead of (or as well as) Auto-Submitted.
_AUTOREPLY_MARKERS = ("x-autoreply", "x-autorespond")
# A reply can go only to a dot-atom local part (ASCII, or SMTPUTF8 text per RFC 6531) at an
# ASCII domain name: nothing that could quote, comment, group or list a second address.
_LOCAL_CHAR = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_REPLYABLE = re.compile(rf"{_LOCAL_CHAR}+(?:\.{_LOCAL_CHAR}+)*@{_LABEL}(?:\.{_LABEL})+")


def notice_suppression(
    sender: str,
    headers: Mapping[str, str],
    *,
    own_domains: frozenset[str],
    own_addresses: frozenset[str] = frozenset(),
) -> str | None:
    """Why no notice may answer this message, or None when one may.

    `sender` is the normalised envelope sender ("" for the null sender); `headers` maps
    lowercase header names to their first value. `own_domains` are the domains whose mail
    comes back to the gateway; `own_addresses` are its other addresses (the notices' From).
    The reasons are short kebab-case words for the audit log's `notice.suppressed` event.
    """
    if not sender:
        return "null-sender"  # RFC 3834 §2: never answer MAIL FROM:<>
    reason = _automatic_reason(headers)
    if reason is not None:
        return reason
    local, _, domain = sender.rpartition("@")
    if sender.lower() in own_addresses or domain.lower() in own_domains:
        return "own-address"  # a notice to ourselves would start a loop
    if _is_system_local(local or sender):
        return "system-sender"
    if not is_replyable_address(sender):
        return "invalid-sender"
    return None


def is_replyable_address(address: str) -> bool:
    """Whether `address` is one plain mailbox that a notice may be sent to."""
    if len(address) > 254 or _REPLYABLE.fullmatch(address) is None:
        return False
    # Non-ASCII text may not hide controls, line separators, bidi overrides or lone surrogates.
    return not any(unicodedata.category(c)[0] in "CZ" for c in address if not c.isascii())


def _automatic_reason(headers: Mapping[str, str]) -> str | None:
    # RFC 3834 §2: any Auto-Submitted value but "no" (comments and parameters aside) marks a
    # machine. A present but empty field is no human MUA's doing either.
    if "auto-submitted" in headers:
        value = _COMMENT.sub("", headers["auto-submitted"]).split(";", 1)[0].strip().lower()
        if value != "no":
            return "auto-submitted"
    if any(marker in headers for marker in _AUTOREPLY_MARKERS):
        return "auto-submitted"
    # RFC 2369 and RFC 2919: List-Id, List-Unsubscribe, List-Post... come from list servers.
    if any(name.startswith("list-") for name in headers):
        return "mailing-list"
    precedence = _COMMENT.sub("", headers.get("precedence", "")).strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return "bulk-precedence"
    return None


def _is_system_local(local: str) -> bool:
    # Postmaster is deliberately absent: people read it and may need to know.
    lowered = local.strip('"').lower()
    if lowered.startswith("owner-") or lowered.endswith("-request"):
        return True
    squashed = _SEPARATORS.sub("", lowered.split("+", 1)[0])
    if squashed in _SYSTEM_LOCALS:
        return True
    return any(squashed.startswith(a) or squashed.endswith(a) for a in _ROBOT_AFFIXES)


# ---------------------------------------------------------------------------------------------
# Delivery: what a remote reply means, and when to try again


class DeliveryOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"


def classify_reply(code: int) -> DeliveryOutcome:
    """A remote SMTP reply code as an outcome; 0 (no reply at all) is temporary.

    RFC 5321 §4.2.1: 2yz completes, 4yz is a transient failure worth retrying, 5yz is final.
    """
    if 200 <= code < 300:
        return DeliveryOutcome.DELIVERED
    if 500 <= code < 600:
        return DeliveryOutcome.FAILED
    return DeliveryOutcome.DEFERRED


def next_attempt_at(
    attempt: int,
    *,
    created_at: datetime,
    now: datetime,
    schedule: Sequence[float],
    max_age_s: float,
    jitter: float,
    spread: float,
) -> datetime | None:
    """When to try again after failed attempt number `attempt` (1-based), or None to give up.

    The delay is schedule[attempt - 1], its last entry repeating, stretched by `jitter`
    times `spread` (a number in [-1, 1] the caller draws at random, so that a burst of jobs
    does not retry in lockstep). A retry that would fall after created_at + max_age_s is
    not made: the job has expired, as Postfix's maximal_queue_lifetime.
    """
    delay = schedule[min(attempt, len(schedule)) - 1] * (1.0 + jitter * spread)
    due = now + timedelta(seconds=delay)
    if due > created_at + timedelta(seconds=max_age_s):
        return None
    return due


# ---------------------------------------------------------------------------------------------
# Loops and floods


def loop_reason(
    headers: Mapping[str, str],
    *,
    message_id: str | None,
    received_count: int,
    own_domain: str,
    max_received: int,
    is_automatic: bool = True,
) -> str | None:
    """Why a message looks like part of a mail loop, or None.

    A loop is refused and never answered: another auto-responder answering our notice, our
    own notice coming back, or a message bounced around more than `max_received` hops
    (RFC 5321 §6.3). A reply in our notice's thread is a loop only from an automatic sender
    (`is_automatic`): an attorney who answers the notice, or resends the filing in its
    thread, is a person and gets the refusal like any other filing.
    """
    if received_count > max_received:
        return "too-many-hops"
    if any(name.startswith("x-eservice-gateway-") for name in headers):
        return "own-notice-marker"  # our notices carry X-Eservice-Gateway-Reference
    marker = f"@{own_domain.lower()}>"
    if message_id is not None and message_id.lower().endswith(marker):
        return "own-message-id"
    if is_automatic and replies_to_own_notice(headers, own_domain=own_domain):
        return "reply-to-own-notice"
    return None


def replies_to_own_notice(headers: Mapping[str, str], *, own_domain: str) -> bool:
    """Whether the message answers one of our notices (In-Reply-To or References)."""
    threads = (headers.get("in-reply-to", "") + headers.get("references", "")).lower()
    return f"@{own_domain.lower()}>" in threads


class NoticeScope(enum.StrEnum):
    """What a notice rate limit counts by."""

    SENDER = "sender"
    DOMAIN = "domain"
    CLIENT = "client"
    TOTAL = "total"


def exceeded_scope(
    counts: Mapping[NoticeScope, int], limits: Mapping[NoticeScope, int]
) -> NoticeScope | None:
    """The first scope whose notices this hour have reached its limit, or None.

    `counts` are the notices already queued in the current hour, before this one.
    """
    for scope in NoticeScope:
        if counts.get(scope, 0) >= limits[scope]:
            return scope
    return None
