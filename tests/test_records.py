"""Audit queries against a state store filled by real SMTP sessions and real deliveries."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.records import Filters, Kind, find_attempts, parse_bound, tell_story
from gateway.store import connect
from tests.conftest import GatewayFactory
from tests.filings import CLERK, FAR, Filed, fill_store

CHICAGO = ZoneInfo("America/Chicago")


@contextlib.contextmanager
def reading(filed: Filed) -> Iterator[sqlite3.Connection]:
    """The store as an operator's command opens it: read-only, beside the running gateway."""
    conn = connect(filed.gateway.settings.storage.database, readonly=True)
    try:
        yield conn
    finally:
        conn.close()


def references(filed: Filed, filters: Filters) -> list[str]:
    """The names (in tests.filings) of the attempts `filters` finds, oldest first."""
    by_ref = {ref: name for name, ref in filed.refs.items()}
    with reading(filed) as conn:
        return [by_ref[a.reference] for a in find_attempts(conn, filters)]


async def test_every_attempt_is_listed_oldest_first_refusals_at_rcpt_included(
    start_gateway: GatewayFactory,
) -> None:
    filed = await fill_store(start_gateway)
    with reading(filed) as conn:
        attempts = find_attempts(conn, Filters())
    by_name = {name: next(a for a in attempts if a.reference == ref) for name, ref in filed.refs.items()}
    assert [a.reference for a in attempts] == list(filed.refs.values())
    refusal = by_name["refusal"]
    assert (refusal.kind, refusal.decision, refusal.action, refusal.notice) == (
        Kind.REFUSAL,
        "refused",
        "reject-at-rcpt",
        "none",
    )
    assert refusal.office == "other-office"
    motion = by_name["motion"]
    assert (motion.kind, motion.decision, motion.action) == (
        Kind.MESSAGE,
        "rejected",
        "reject-after-data",
    )
    assert motion.subject == "Motion to continue A123456789"  # the store is not redacted
    assert motion.attachments == ("A123456789 motion.pdf",)
    assert motion.a_numbers == ("A123456789",)
    assert motion.message_id == "<motion-1@lawfirm.example>"
    assert motion.reply.startswith("550 5.1.6 NOT FILED")
    assert motion.at == datetime(2017, 9, 13, 15, 0, tzinfo=UTC)
    # What became of each notice: the sink took the first, deferred the second, refused the third.
    assert {name: a.notice for name, a in by_name.items()} == {
        "motion": "delivered",
        "clerk": "deferred",
        "null": "suppressed:null-sender",
        "postmaster": "none",
        "refusal": "none",
        "untrusted": "suppressed:sender-not-authenticated",
        "second": "failed",
    }
    assert by_name["postmaster"].decision == "accepted"
    assert by_name["postmaster"].office is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(sender="paralegal@LAWFIRM.example"), ["motion", "postmaster", "refusal", "second"]),
        (Filters(sender="<>"), ["null"]),
        (Filters(sender_domain="other-firm.EXAMPLE"), ["clerk"]),
        (Filters(sender_domain="far.example"), ["untrusted"]),
        (Filters(address="occ-chicago-filings@occ-chicago.example"), ["motion", "clerk", "null", "untrusted", "second"]),
        (Filters(address="eoir-filings@other.example"), ["refusal"]),
        (Filters(office="other-office"), ["refusal"]),
        (Filters(office="ice-occ-chicago", sender_domain="lawfirm.example"), ["motion", "second"]),
        (Filters(decision="refused"), ["refusal"]),
        (Filters(decision="accepted"), ["postmaster"]),
        (Filters(decision="reject-at-rcpt"), ["refusal"]),
        (Filters(notice="suppressed"), ["null", "untrusted"]),
        (Filters(notice="suppressed:null-sender"), ["null"]),
        (Filters(notice="delivered"), ["motion"]),
        (Filters(notice="failed"), ["second"]),
        (Filters(message_id="brief-2@lawfirm.example"), ["second"]),
        (Filters(message_id="<brief-2@lawfirm.example>"), ["second"]),
        (Filters(sender=FAR, notice="delivered"), []),
        (Filters(sender=CLERK), ["clerk"]),
    ],
)
async def test_filters_find_exactly_the_matching_attempts(
    start_gateway: GatewayFactory, filters: Filters, expected: list[str]
) -> None:
    filed = await fill_store(start_gateway)
    assert references(filed, filters) == expected


async def test_time_ranges_in_utc_and_in_the_offices_zone(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    # Sep 13 22:30 in Chicago is Sep 14 in UTC: the day depends on whose day it is.
    utc_day = Filters(since=parse_bound("2017-09-14", UTC), until=parse_bound("2017-09-14", UTC, is_end=True))
    assert references(filed, utc_day) == ["untrusted", "second"]
    chicago_day = Filters(
        since=parse_bound("2017-09-13", CHICAGO), until=parse_bound("2017-09-13", CHICAGO, is_end=True)
    )
    assert references(filed, chicago_day) == ["motion", "clerk", "null", "postmaster", "refusal", "untrusted"]
    minute = Filters(since=parse_bound("2017-09-13T10:01:00", CHICAGO), until=parse_bound("2017-09-13T10:03:00", CHICAGO))
    assert references(filed, minute) == ["clerk", "null"]


async def test_a_reference_finds_its_attempt_and_only_it(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    assert references(filed, Filters(reference=filed.refs["refusal"].lower())) == ["refusal"]
    assert references(filed, Filters(reference="20170913-0000000000")) == []


async def test_the_story_of_a_message_has_its_decision_and_each_delivery_attempt(
    start_gateway: GatewayFactory,
) -> None:
    filed = await fill_store(start_gateway)
    with reading(filed) as conn:
        story = tell_story(conn, filed.refs["clerk"])
        refusal = tell_story(conn, filed.refs["refusal"])
        missing = tell_story(conn, "20170913-0000000000")
    assert story is not None
    (decision,) = story.recipients
    assert (decision.office, decision.phase, decision.action) == ("ice-occ-chicago", "retired", "reject-after-data")
    assert decision.local_time == "2017-09-13T10:01:00-05:00"
    ((job, attempts),) = story.jobs
    assert (job.kind, job.state, job.recipients) == ("notice", "deferred", (CLERK.lower(),) if job.recipients[0].islower() else (CLERK,))
    (attempt,) = attempts
    assert (attempt.code, attempt.outcome) == (452, "deferred")
    assert "Mailbox full" in attempt.reply
    assert story.attachments == ()
    assert refusal is not None
    assert refusal.attempt.kind is Kind.REFUSAL
    assert refusal.jobs == ()
    assert missing is None


@pytest.mark.parametrize(
    ("text", "is_end", "expected"),
    [
        ("2017-09-13", False, datetime(2017, 9, 13, 5, 0, tzinfo=UTC)),
        ("2017-09-13", True, datetime(2017, 9, 14, 5, 0, tzinfo=UTC)),
        ("2017-09-13T10:00", False, datetime(2017, 9, 13, 15, 0, tzinfo=UTC)),
        ("2017-09-13T10:00:00+00:00", True, datetime(2017, 9, 13, 10, 0, tzinfo=UTC)),
        ("2017-11-05", False, datetime(2017, 11, 5, 5, 0, tzinfo=UTC)),  # DST ends that day
        ("2017-11-05", True, datetime(2017, 11, 6, 6, 0, tzinfo=UTC)),  # a 25-hour day
    ],
)
def test_time_bounds_are_read_in_the_given_zone(text: str, is_end: bool, expected: datetime) -> None:
    assert parse_bound(text, CHICAGO, is_end=is_end) == expected


def test_a_bound_that_is_not_a_time_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_bound("last tuesday", UTC)
    assert date(2017, 9, 13)  # keep the import honest
