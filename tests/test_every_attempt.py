"""Every attempt on a retired address is answered NOT FILED and on record, at every stage:
oversize messages (declared or found in DATA), overlong lines, duplicate recipients, broken
senders, suppressed notices and people answering our notices."""

from __future__ import annotations

import hashlib
import io

import pytest

from gateway.ops.auditcmd import AuditRequest, run_audit
from gateway.store.records import Filters, find_attempts
from tests.conftest import (
    AFTER_CUTOFF,
    BEFORE_PORTAL,
    RETIRED,
    SENDER,
    Gateway,
    GatewayFactory,
    office,
)
from tests.smtpclient import RawClient, Reply, message, reference_of, transaction

PORTAL = "https://eservice.ice.gov/"
SMALL = 4096


def long_line_message(length: int) -> bytes:
    # Built by hand: the email package would re-encode a long line to keep it short.
    head = b"From: Pat <paralegal@lawfirm.example>\r\nSubject: Pasted brief\r\n\r\n"
    return head + b"A" * length + b"\r\nend\r\n"


def as_received(content: bytes) -> bytes:
    """The message as the server stores it after RawClient.data's CRLF conversion."""
    return content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n") + b"\r\n"


def attempts(gw: Gateway) -> list[object]:
    return list(gw.read(lambda conn: find_attempts(conn, Filters())))


def assert_not_filed(reply: Reply) -> str:
    assert "NOT FILED" in reply.text
    assert PORTAL in reply.text
    return reference_of(reply)


# -- size ---------------------------------------------------------------------------------------


async def test_an_oversize_filing_is_read_to_the_end_refused_not_filed_and_recorded(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(server={"max_message_size": SMALL}, storage={"keep_raw": True})
    content = message(subject="Motion A123456789", body=("x" * 70 + "\n") * 400)
    async with await RawClient.connect(gw.port) as client:
        await client.reply()
        await client.cmd("EHLO client.lawfirm.example")
        await client.cmd(f"MAIL FROM:<{SENDER}>")
        await client.cmd(f"RCPT TO:<{RETIRED}>")
        final = await client.data(content)
        # The session goes on: the next transaction is not confused by the discarded data.
        assert (await client.cmd(f"MAIL FROM:<{SENDER}>")).code == 250
    assert final.code == 552
    assert final.last.startswith("552 5.3.4 NOT FILED")
    reference = assert_not_filed(final)
    whole = as_received(content)
    (row,) = gw.messages()
    assert row.reference == reference
    assert (row.outcome, row.refused_for) == ("rejected", "message-too-big")
    assert row.size == len(whole) > SMALL
    assert row.sha256 == hashlib.sha256(whole).hexdigest()
    assert row.subject == "Motion A123456789"  # the header block identifies the filing
    assert row.mime_truncated == 1
    # Only the header block was kept, never the data past the limit.
    (raw,) = gw.raw_copies()
    assert len(raw.raw) < SMALL
    assert raw.raw.startswith(b"From: ")
    assert b"xxxx" not in raw.raw
    # An authenticated sender (loopback is trusted) also gets the notice: their own MTA's
    # bounce of a 552 may be unreadable, and the notice says where to file.
    assert [j.kind for j in gw.jobs()] == ["notice"]
    (attempt,) = attempts(gw)
    assert attempt.reason == "message-too-big"  # type: ignore[attr-defined]
    # What a records officer reads: the refusal, why, and the size that came.
    out, err = io.StringIO(), io.StringIO()
    request = AuditRequest(action="show", targets=(reference,))
    assert run_audit(gw.settings, request, now=AFTER_CUTOFF, out=out, err=err) == 0
    shown = out.getvalue()
    assert "refused for     message-too-big" in shown
    assert f"{len(whole):,} bytes" in shown
    summary = io.StringIO()
    request = AuditRequest(action="summary", output="json")
    assert run_audit(gw.settings, request, now=AFTER_CUTOFF, out=summary, err=err) == 0
    assert '"message-too-big": 1' in summary.getvalue()


async def test_an_oversize_message_to_be_relayed_is_refused_with_a_reference_and_not_relayed(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(clock_at=BEFORE_PORTAL, server={"max_message_size": SMALL})
    _, final = await transaction(gw.port, [RETIRED], message(body="y" * 80 * 100))
    assert final is not None
    assert final.last.startswith("552 5.3.4 Message too big")
    reference = reference_of(final)
    (row,) = gw.messages()
    assert (row.reference, row.refused_for) == (reference, "message-too-big")
    assert gw.jobs() == []


async def test_a_declared_size_over_the_limit_is_refused_not_filed_at_rcpt(
    gateway: Gateway,
) -> None:
    async with await RawClient.connect(gateway.port) as client:
        await client.reply()
        await client.cmd("EHLO client.lawfirm.example")
        mail = await client.cmd(f"MAIL FROM:<{SENDER}> SIZE=999999999")
        rcpt = await client.cmd(f"RCPT TO:<{RETIRED}>")
        postmaster = await client.cmd("RCPT TO:<postmaster@occ-chicago.example>")
        data = await client.cmd("DATA")
    assert mail.code == 250
    assert rcpt.last.startswith("552 5.3.4 NOT FILED")
    reference = assert_not_filed(rcpt)
    assert postmaster.last == "552 5.3.4 Message size exceeds the fixed limit"
    assert data.code == 503  # nobody was accepted
    (row,) = gateway.refusals()
    assert (row.reference, row.recipient, row.reason) == (reference, RETIRED, "message-too-big")


# -- lines --------------------------------------------------------------------------------------


async def test_a_filing_with_a_line_over_1000_octets_is_answered_like_any_other(
    gateway: Gateway,
) -> None:
    content = long_line_message(5000)
    _, final = await transaction(gateway.port, [RETIRED], content)
    assert final is not None
    assert final.last.startswith("550 5.1.6 NOT FILED")
    reference = assert_not_filed(final)
    (row,) = gateway.messages()
    whole = as_received(content)
    assert (row.reference, row.size, row.sha256) == (
        reference,
        len(whole),
        hashlib.sha256(whole).hexdigest(),
    )


async def test_a_line_over_1000_octets_in_mail_to_be_relayed_is_refused_on_record(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(clock_at=BEFORE_PORTAL)
    _, final = await transaction(gw.port, [RETIRED], long_line_message(3000))
    assert final is not None
    assert final.last.startswith("554 5.6.0 Line over 1000 octets")
    reference = reference_of(final)
    (row,) = gw.messages()
    assert (row.reference, row.refused_for) == (reference, "line-too-long")
    assert gw.jobs() == []


async def test_end_of_data_is_found_only_at_crlf_dot_crlf_as_before(gateway: Gateway) -> None:
    # A bare LF before the dot, or a dot after a bare CR, is data: smuggling defences hold.
    body = b"Subject: s\r\n\r\nline\n.\nstill data\r.\r\nmore\r\n"
    async with await RawClient.connect(gateway.port) as client:
        await client.reply()
        await client.cmd("EHLO client.lawfirm.example")
        await client.cmd(f"MAIL FROM:<{SENDER}>")
        await client.cmd(f"RCPT TO:<{RETIRED}>")
        assert (await client.cmd("DATA")).code == 354
        client.writer.write(body + b".\r\n")
        final = await client.reply()
    assert final.code == 550
    (row,) = gateway.messages()
    assert row.size == len(body)


# -- recipients and senders ---------------------------------------------------------------------


async def test_the_same_retired_recipient_twice_is_one_recipient_and_answered(
    gateway: Gateway,
) -> None:
    for _ in range(2):  # a retry gets the same answer, never a 451
        replies, final = await transaction(gateway.port, [RETIRED, RETIRED.upper()])
        assert [r.code for r in replies] == [250, 250]
        assert final is not None
        assert final.code == 550
    rows = gateway.decisions()
    assert len(rows) == 2
    assert len({r.reference for r in rows}) == 2


@pytest.mark.parametrize(
    "path",
    [b"<pat\x00@lawfirm.example>", b"<pat@lawfirm\x00.example>", b"<pat\x01@lawfirm.example>"],
)
async def test_control_characters_in_mail_from_are_refused(gateway: Gateway, path: bytes) -> None:
    async with await RawClient.connect(gateway.port) as client:
        await client.reply()
        await client.cmd("EHLO client.lawfirm.example")
        reply = await client.cmd(b"MAIL FROM:" + path)
    assert reply.code in (501, 553)


# -- what the reply promises ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "headers", "reason"),
    [
        ("", {}, "null-sender"),
        (SENDER, {"List_Id": "<filings.lawfirm.example>"}, "mailing-list"),
        (SENDER, {"Auto_Submitted": "auto-generated"}, "auto-submitted"),
    ],
)
async def test_accept_and_notify_promises_no_notice_when_none_is_sent(
    start_gateway: GatewayFactory, sender: str, headers: dict[str, str], reason: str
) -> None:
    gw = await start_gateway(offices=[office(response="accept-and-notify")])
    content = message(**headers)  # type: ignore[arg-type]  # extra headers by keyword
    _, final = await transaction(gw.port, [RETIRED], content, sender=sender)
    assert final is not None
    assert final.code == 250
    assert "NOT FILED" in final.text
    assert "notice follows" not in final.text
    (row,) = gw.messages()
    assert row.notice.startswith("suppressed:")
    assert gw.jobs() == []


async def test_accept_and_notify_promises_the_notice_it_queues(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(offices=[office(response="accept-and-notify")])
    _, final = await transaction(gw.port, [RETIRED], message())
    assert final is not None
    assert "a notice follows" in final.text
    assert [j.kind for j in gw.jobs()] == ["notice"]


async def test_an_attorney_answering_our_notice_gets_the_refusal_but_no_second_notice(
    gateway: Gateway,
) -> None:
    ours = "<20170913-7K3QM9XD0A.not-filed.ice-occ-chicago@mx.test.example>"
    content = message(subject="Re: Auto: NOT FILED - Motion", In_Reply_To=ours, References=ours)
    _, final = await transaction(gateway.port, [RETIRED], content)
    assert final is not None
    assert final.last.startswith("550 5.1.6 NOT FILED")
    (row,) = gateway.messages()
    assert (row.notice, row.outcome) == ("suppressed:reply-to-notice", "rejected")
    assert gateway.jobs() == []
