"""Audit queries against a state store filled by real SMTP sessions and real deliveries."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.mail.redaction import Redactor
from gateway.store.db import connect
from gateway.store.queries import read_message
from gateway.store.reading import SqliteAuditReader
from gateway.store.records import AttemptRecord, Filters, Kind, find_attempts, parse_bound, redacted
from gateway.store.story import tell_story
from gateway.store.summaries import DaySummary, sender_activity, summarize
from gateway.vocabulary import format_notice_status, parse_notice_status
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
    by_name = {
        name: next(a for a in attempts if a.reference == ref) for name, ref in filed.refs.items()
    }
    assert [a.reference for a in attempts] == list(filed.refs.values())
    refusal = by_name["refusal"]
    assert (refusal.kind, refusal.decision, refusal.action, str(refusal.notice)) == (
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
    assert {name: str(a.notice) for name, a in by_name.items()} == {
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
        (
            Filters(sender="paralegal@LAWFIRM.example"),
            ["motion", "postmaster", "refusal", "second"],
        ),
        (Filters(sender="<>"), ["null"]),
        (Filters(sender_domain="other-firm.EXAMPLE"), ["clerk"]),
        (Filters(sender_domain="far.example"), ["untrusted"]),
        (
            Filters(address="occ-chicago-filings@occ-chicago.example"),
            ["motion", "clerk", "null", "untrusted", "second"],
        ),
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
    utc_day = Filters(
        since=parse_bound("2017-09-14", UTC), until=parse_bound("2017-09-14", UTC, is_end=True)
    )
    assert references(filed, utc_day) == ["untrusted", "second"]
    chicago_day = Filters(
        since=parse_bound("2017-09-13", CHICAGO),
        until=parse_bound("2017-09-13", CHICAGO, is_end=True),
    )
    assert references(filed, chicago_day) == [
        "motion",
        "clerk",
        "null",
        "postmaster",
        "refusal",
        "untrusted",
    ]
    minute = Filters(
        since=parse_bound("2017-09-13T10:01:00", CHICAGO),
        until=parse_bound("2017-09-13T10:03:00", CHICAGO),
    )
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
        reader = SqliteAuditReader(conn, database=filed.gateway.settings.storage.database)
        story = tell_story(reader, filed.refs["clerk"])
        refusal = tell_story(reader, filed.refs["refusal"])
        missing = tell_story(reader, "20170913-0000000000")
    assert story is not None
    (decision,) = story.recipients
    assert (decision.office, decision.phase, decision.action) == (
        "ice-occ-chicago",
        "retired",
        "reject-after-data",
    )
    assert decision.local_time == "2017-09-13T10:01:00-05:00"
    ((job, attempts),) = story.jobs
    # The sender as normalised at the inbound boundary: its domain in lower case.
    assert (job.kind, job.state, job.recipients) == ("notice", "deferred", (CLERK.lower(),))
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
def test_time_bounds_are_read_in_the_given_zone(
    text: str, is_end: bool, expected: datetime
) -> None:
    assert parse_bound(text, CHICAGO, is_end=is_end) == expected


def test_a_bound_that_is_not_a_time_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_bound("last tuesday", UTC)


# -- summaries ------------------------------------------------------------------------------------


def attempt(
    at: datetime,
    *,
    office: str | None = "ice-occ-chicago",
    sender: str = "a@lawfirm.example",
    kind: Kind = Kind.MESSAGE,
    decision: str = "rejected",
    reason: str = "address retired; refused after DATA",
    notice: str = "delivered",
) -> AttemptRecord:
    return AttemptRecord(
        reference=f"{at:%Y%m%d}-{abs(hash((at, sender))) % 10**10:010d}",
        kind=kind,
        at=at,
        session_id="s",
        peer_ip="192.0.2.1",
        helo="client.example",
        sender=sender,
        recipients=("occ-chicago-filings@occ-chicago.example",),
        office=office,
        phase="retired",
        action="reject-after-data",
        decision=decision,
        reason=reason,
        notice=parse_notice_status(notice),  # as the store reads it back
        reply="550 5.1.6 NOT FILED",
    )


def utc(day: int, hour: int) -> datetime:
    return datetime(2017, 9, day, hour, tzinfo=UTC)


def test_a_day_counts_each_attempt_once_in_each_column_that_applies() -> None:
    (row,) = summarize(
        [
            attempt(utc(13, 15), notice="delivered"),
            attempt(utc(13, 16), notice="deferred"),
            attempt(utc(13, 17), notice="failed"),
            attempt(utc(13, 18), notice="queued"),
            attempt(utc(13, 19), notice="suppressed:null-sender"),
            attempt(utc(13, 20), decision="accepted", notice="none"),
            attempt(
                utc(13, 21), kind=Kind.REFUSAL, decision="refused", reason="at RCPT", notice="none"
            ),
        ],
        zone_of=lambda office: UTC,
    )
    assert row == DaySummary(
        day=date(2017, 9, 13),
        office="ice-occ-chicago",
        attempts=7,
        received=6,
        refused=6,
        noticed=4,
        suppressed=1,
        delivered=1,
        deferred=1,
        failed=1,
        refused_by_reason=(("address retired; refused after DATA", 5), ("at RCPT", 1)),
    )


def test_days_are_the_offices_own_when_asked() -> None:
    late = [attempt(utc(14, 3)), attempt(utc(14, 15))]  # Sep 13 22:00 and Sep 14 10:00 CDT
    in_utc = summarize(late, zone_of=lambda office: UTC)
    in_chicago = summarize(late, zone_of=lambda office: CHICAGO)
    assert [(r.day.day, r.attempts) for r in in_utc] == [(14, 2)]
    assert [(r.day.day, r.attempts) for r in in_chicago] == [(13, 1), (14, 1)]


def test_senders_are_grouped_by_domain_busiest_first_with_who_was_reached() -> None:
    rows = sender_activity(
        [
            attempt(utc(13, 15), sender="a@big.example", notice="failed"),
            attempt(utc(14, 15), sender="a@big.example", notice="delivered"),
            attempt(
                utc(15, 15), sender="b@big.example", notice="suppressed:sender-not-authenticated"
            ),
            attempt(utc(13, 16), sender="x@small.example", notice="none"),
            attempt(utc(16, 16), sender="", notice="suppressed:null-sender"),
        ]
    )
    assert [
        (r.domain, r.sender, r.attempts, r.notices_delivered, r.senders, r.senders_reached)
        for r in rows
    ] == [
        ("big.example", "", 3, 1, 2, 1),
        ("big.example", "a@big.example", 2, 1, 1, 1),
        ("big.example", "b@big.example", 1, 0, 1, 0),
        ("", "", 1, 0, 1, 0),
        ("", "<>", 1, 0, 1, 0),
        ("small.example", "", 1, 0, 1, 0),
        ("small.example", "x@small.example", 1, 0, 1, 0),
    ]
    assert (rows[0].first, rows[0].last) == (utc(13, 15), utc(15, 15))


async def test_the_filled_stores_summary_per_office_day(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    with reading(filed) as conn:
        attempts = find_attempts(conn, Filters())
    rows = summarize(attempts, zone_of=lambda office: CHICAGO)
    assert [
        (
            r.day.isoformat(),
            r.office,
            r.attempts,
            r.refused,
            r.noticed,
            r.suppressed,
            r.delivered,
            r.deferred,
            r.failed,
        )
        for r in rows
    ] == [
        ("2017-09-13", "", 1, 0, 0, 0, 0, 0, 0),
        ("2017-09-13", "ice-occ-chicago", 4, 4, 2, 2, 1, 1, 0),
        ("2017-09-13", "other-office", 1, 1, 0, 0, 0, 0, 0),
        ("2017-09-14", "ice-occ-chicago", 1, 1, 1, 0, 0, 0, 1),
    ]


def test_redaction_hides_a_numbers_in_subjects_and_file_names_not_the_digest() -> None:
    record = replace(
        attempt(utc(13, 15)),
        subject="Motion A 123-456-789 and A98765432",
        attachments=("A123456789.pdf", "brief.pdf"),
        a_numbers=("A123456789", "A098765432"),
        sha256="ab" * 32,
    )
    shown = redacted(record, Redactor(a_numbers=True, patterns=(re.compile(r"brief"),)))
    assert shown.subject == "Motion [A-number] and [A-number]"
    assert shown.attachments == ("[A-number].pdf", "[redacted].pdf")
    assert shown.a_numbers == ("[A-number]", "[A-number]")
    assert shown.sha256 == record.sha256
    assert redacted(record, Redactor()) == record


async def test_each_stored_notice_column_reads_as_a_status_and_writes_back_the_same(
    start_gateway: GatewayFactory,
) -> None:
    filed = await fill_store(start_gateway)
    with reading(filed) as conn:
        stored = [read_message(conn, ref) for ref in filed.refs.values()]
    messages = [m for m in stored if m is not None]  # the refusal at RCPT has no message
    assert {m.notice for m in messages} >= {"queued", "none", "suppressed:null-sender"}
    for message in messages:
        assert format_notice_status(message.notice_status) == message.notice
