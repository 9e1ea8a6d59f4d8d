"""The domain words: the stored forms read back as they were written, and no kind forgotten."""

from __future__ import annotations

import pytest

from gateway.http.metrics import JOB_KINDS, EventMetrics, new_registry
from gateway.policy.decision import NoticeScope
from gateway.vocabulary import (
    JobKind,
    JobState,
    NoticeStatus,
    NoticeStatusKind,
    format_notice_status,
    parse_notice_status,
)

# Every form a message's notice column holds, or a read of it reports: the plain statuses,
# then "suppressed:<why>" for each reason the gateway records.
SUPPRESSION_REASONS = (
    "null-sender",
    "auto-submitted",
    "precedence",
    "list",
    "mailer-daemon",
    "own-address",
    "reply-to-notice",
    "loop-reply-to-own-notice",
    "sender-not-authenticated",
    "sender-check-temperror",
    "duplicate",
    *(f"rate-limit-{scope}" for scope in NoticeScope),
)
STORED_FORMS = (
    *(kind.value for kind in NoticeStatusKind if kind is not NoticeStatusKind.SUPPRESSED),
    *(f"suppressed:{reason}" for reason in SUPPRESSION_REASONS),
)


@pytest.mark.parametrize("stored", STORED_FORMS)
def test_every_stored_notice_status_reads_back_as_it_was_written(stored: str) -> None:
    status = parse_notice_status(stored)
    assert format_notice_status(status) == stored
    assert str(status) == stored
    assert parse_notice_status(format_notice_status(status)) == status


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("none", NoticeStatus(NoticeStatusKind.NONE)),
        ("queued", NoticeStatus(NoticeStatusKind.QUEUED)),
        ("delivered", NoticeStatus(NoticeStatusKind.DELIVERED)),
        ("suppressed:duplicate", NoticeStatus(NoticeStatusKind.SUPPRESSED, "duplicate")),
        ("suppressed:a:b", NoticeStatus(NoticeStatusKind.SUPPRESSED, "a:b")),
        ("suppressed:", NoticeStatus(NoticeStatusKind.SUPPRESSED, "")),
    ],
)
def test_a_status_splits_into_its_kind_and_reason_at_the_first_colon(
    stored: str, expected: NoticeStatus
) -> None:
    assert parse_notice_status(stored) == expected
    assert format_notice_status(expected) == stored


@pytest.mark.parametrize("stored", ["", "sent", "Queued", "suppressed-duplicate"])
def test_a_status_the_gateway_never_writes_is_refused(stored: str) -> None:
    with pytest.raises(ValueError, match="NoticeStatusKind"):
        parse_notice_status(stored)


@pytest.mark.parametrize(
    ("status", "has_notice", "is_suppressed"),
    [
        (NoticeStatus(NoticeStatusKind.NONE), False, False),
        (NoticeStatus(NoticeStatusKind.SUPPRESSED, "null-sender"), False, True),
        (NoticeStatus(NoticeStatusKind.QUEUED), True, False),
        (NoticeStatus(NoticeStatusKind.IN_FLIGHT), True, False),
        (NoticeStatus(NoticeStatusKind.FAILED), True, False),
    ],
)
def test_a_status_that_is_a_job_state_means_a_notice_was_queued(
    status: NoticeStatus, has_notice: bool, is_suppressed: bool
) -> None:
    assert (status.has_notice, status.is_suppressed) == (has_notice, is_suppressed)


def test_every_job_state_is_a_notice_status_too() -> None:
    # A queued notice is read back with its job's state, so each state must parse.
    assert {parse_notice_status(state).kind.value for state in JobState} <= set(NoticeStatusKind)


@pytest.mark.parametrize(
    ("kind", "is_notice", "is_relay"),
    [
        (JobKind.RELAY, False, True),
        (JobKind.FORWARD, False, True),
        (JobKind.NOTICE, True, False),
        (JobKind.ADVISORY, True, False),
        (JobKind.BOUNCE, False, False),
    ],
)
def test_only_notices_and_advisories_answer_the_sender(
    kind: JobKind, *, is_notice: bool, is_relay: bool
) -> None:
    assert (kind.is_notice, kind.is_relay) == (is_notice, is_relay)


@pytest.mark.parametrize("kind", list(JobKind))
def test_every_job_kind_has_its_metric_series_from_the_start(kind: JobKind) -> None:
    registry = new_registry()
    EventMetrics(registry)
    assert kind in JOB_KINDS
    assert registry.get_sample_value("gateway_outbox_enqueued_total", {"kind": kind}) == 0
    for outcome in ("succeeded", "deferred", "failed"):
        labels = {"kind": kind, "outcome": outcome}
        assert registry.get_sample_value("gateway_deliveries_total", labels) == 0
