"""The lifecycle decision, with plain values: no server, no clock, no files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.config import OfficeSettings, ResponseMode
from gateway.policy.decision import (
    Action,
    DeliveryOutcome,
    Phase,
    classify_reply,
    decide,
    phase_at,
)
from tests.conftest import office

CHICAGO = OfficeSettings.model_validate(office(decommissions="2027-09-12"))
US = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "phase"),
    [
        (utc(2017, 9, 11, 4, 59, 59, 999999), Phase.ACTIVE),
        (utc(2017, 9, 11, 5, 0), Phase.WARN),  # 2017-09-11 00:00 CDT, inclusive
        (utc(2017, 9, 12, 4, 59, 59, 999999), Phase.WARN),
        (utc(2017, 9, 12, 5, 0), Phase.RETIRED),  # the cutoff instant itself is retired
        (utc(2027, 9, 12, 4, 59, 59, 999999), Phase.RETIRED),
        (utc(2027, 9, 12, 5, 0), Phase.DECOMMISSIONED),
    ],
)
def test_each_boundary_starts_its_phase_in_the_offices_time_zone(
    at: datetime, phase: Phase
) -> None:
    assert phase_at(CHICAGO.lifecycle, at) is phase


@pytest.mark.parametrize(
    ("retires", "cutoff_utc"),
    [
        # Winter: CST is UTC-6.
        ("2018-01-15", utc(2018, 1, 15, 6, 0)),
        # Spring forward: 02:30 does not exist on 2018-03-11 in Chicago; it is taken as 03:30 CDT.
        ("2018-03-11T02:30:00", utc(2018, 3, 11, 8, 30)),
        # Fall back: 01:30 happens twice on 2018-11-04; the first (CDT, UTC-5) is used.
        ("2018-11-04T01:30:00", utc(2018, 11, 4, 6, 30)),
        # An explicit offset is taken as written.
        ("2018-06-01T17:00:00+00:00", utc(2018, 6, 1, 17, 0)),
    ],
)
def test_cutoff_is_resolved_through_daylight_saving_rules(
    retires: str, cutoff_utc: datetime
) -> None:
    chicago = OfficeSettings.model_validate(office(portal_opens=None, retires=retires))
    assert chicago.lifecycle.retires == cutoff_utc
    assert phase_at(chicago.lifecycle, cutoff_utc - US) is Phase.ACTIVE
    assert phase_at(chicago.lifecycle, cutoff_utc) is Phase.RETIRED


@pytest.mark.parametrize(
    ("mode", "authenticated", "action"),
    [
        (ResponseMode.REJECT_AT_RCPT, False, Action.REJECT_AT_RCPT),
        (ResponseMode.REJECT_AFTER_DATA, False, Action.REJECT_AFTER_DATA),
        (ResponseMode.REJECT_AFTER_DATA, True, Action.REJECT_AFTER_DATA),
        (ResponseMode.ACCEPT_AND_NOTIFY, True, Action.ACCEPT_AND_NOTIFY),
        # Accepting obliges us to mail a notice, which only an authenticated sender may get.
        (ResponseMode.ACCEPT_AND_NOTIFY, False, Action.REJECT_AFTER_DATA),
    ],
)
def test_response_after_cutoff_follows_the_offices_mode(
    mode: ResponseMode, authenticated: bool, action: Action
) -> None:
    chicago = OfficeSettings.model_validate(office(response=mode))
    decision = decide(chicago, utc(2017, 9, 13), sender_authenticated=authenticated)
    assert (decision.phase, decision.action, decision.office) == (
        Phase.RETIRED,
        action,
        chicago.name,
    )
    assert decision.reason


@pytest.mark.parametrize(
    ("at", "action", "accepted"),
    [
        (utc(2017, 9, 1), Action.RELAY, True),
        (utc(2017, 9, 11, 12), Action.RELAY_AND_ADVISE, True),
        (utc(2017, 9, 13), Action.REJECT_AFTER_DATA, False),
        (utc(2030, 1, 1), Action.GONE, False),
    ],
)
def test_action_in_each_phase(at: datetime, action: Action, accepted: bool) -> None:
    decision = decide(CHICAGO, at, sender_authenticated=False)
    assert decision.action is action
    assert decision.action.is_accepted is accepted


def test_naive_arrival_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        phase_at(CHICAGO.lifecycle, datetime(2017, 9, 13))


def test_office_without_portal_date_goes_straight_from_active_to_retired() -> None:
    chicago = OfficeSettings.model_validate(office(portal_opens=None))
    assert phase_at(chicago.lifecycle, utc(2017, 9, 12, 4, 59)) is Phase.ACTIVE
    assert phase_at(chicago.lifecycle, utc(2017, 9, 12, 5, 0)) is Phase.RETIRED


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, DeliveryOutcome.DELIVERED),
        (200, DeliveryOutcome.DELIVERED),
        (299, DeliveryOutcome.DELIVERED),
        (0, DeliveryOutcome.DEFERRED),  # no reply at all: the connection or DNS failed
        (421, DeliveryOutcome.DEFERRED),
        (452, DeliveryOutcome.DEFERRED),
        (500, DeliveryOutcome.FAILED),
        (550, DeliveryOutcome.FAILED),
        (599, DeliveryOutcome.FAILED),
        (600, DeliveryOutcome.DEFERRED),  # outside RFC 5321's classes: try again, never lose it
        (199, DeliveryOutcome.DEFERRED),
    ],
)
def test_a_remote_reply_code_is_classified_as_rfc_5321_says(
    code: int, outcome: DeliveryOutcome
) -> None:
    assert classify_reply(code) is outcome
