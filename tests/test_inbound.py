"""The SMTP server over real loopback sockets, with a real SQLite store behind it."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from pathlib import Path

import aiosmtplib
import pytest
import trustme
from structlog.testing import capture_logs

from gateway.config import ServerSettings
from gateway.smtp.tls import tls_context
from tests.conftest import (
    AFTER_CUTOFF,
    BEFORE_PORTAL,
    OTHER_RETIRED,
    RETIRED,
    SENDER,
    WARN_TIME,
    Gateway,
    GatewayFactory,
    office,
    other_office,
)
from tests.smtpclient import RawClient, Reply, message, reference_of
from tests.smtpclient import transaction as smtp_transaction


async def transaction(
    gw: Gateway,
    rcpts: list[str],
    content: bytes | None = None,
    sender: str = SENDER,
    *,
    source: str | None = None,
) -> tuple[list[Reply], Reply | None]:
    return await smtp_transaction(gw.port, rcpts, content, sender, source=source)


# -- after the cutoff ---------------------------------------------------------------------------


async def test_filing_after_cutoff_is_refused_after_data_with_the_portal_and_a_reference(
    gateway: Gateway,
) -> None:
    content = message(
        subject="Motion to continue A123456789", attachment=("motion.pdf", b"%PDF" * 500)
    )
    with capture_logs() as events:
        (rcpt,), final = await transaction(gateway, [RETIRED], content)
    assert rcpt.code == 250
    assert final is not None
    assert final.code == 550
    assert final.text.startswith("5.1.6 NOT FILED: this address was retired on 2017-09-12")
    assert "https://eservice.ice.gov/" in final.text
    assert len(final.last.encode("ascii")) <= 510
    reference = reference_of(final)

    (row,) = [m for m in gateway.messages() if m.reference == reference]
    assert row.reply == final.last
    assert (row.outcome, row.mail_from, row.helo) == (
        "rejected",
        SENDER,
        "client.lawfirm.example",
    )
    assert row.peer_ip == "127.0.0.1"
    assert row.tls is None
    assert row.subject == "Motion to continue A123456789"
    assert row.message_id == "<filing-1@lawfirm.example>"
    assert row.date_header == "Wed, 13 Sep 2017 10:00:00 -0500"
    assert row.size == len(content.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"))
    assert [a.filename for a in row.attachments] == ["motion.pdf"]
    assert list(row.a_numbers) == ["A123456789"]
    assert row.received_at == AFTER_CUTOFF
    (decision,) = gateway.decisions(reference)
    assert (decision.phase, decision.action) == ("retired", "reject-after-data")
    assert decision.local_time == "2017-09-13T10:00:00-05:00"
    (job,) = gateway.jobs(reference=reference)
    assert (job.kind, job.mail_from, list(job.recipients)) == (
        "notice",
        "",
        [SENDER],
    )
    assert gateway.raw_copies() == []  # keep_raw is off by default

    by_name = {e["event"]: e for e in events}
    assert by_name["smtp.message.received"]["reference"] == reference
    assert by_name["policy.decided"]["arrival_local"] == "2017-09-13T10:00:00-05:00"
    assert by_name["outbox.enqueued"]["job_kind"] == "notice"
    assert by_name["smtp.reply.sent"]["reply"] == final.last
    # The reply event comes after the record and the job, never before.
    names = [e["event"] for e in events]
    assert names.index("smtp.reply.sent") > names.index("outbox.enqueued")


async def test_sender_date_header_does_not_decide(gateway: Gateway) -> None:
    backdated = message(date="Mon, 11 Sep 2017 09:00:00 -0500")
    _, final = await transaction(gateway, [RETIRED], backdated)
    assert final is not None
    assert final.code == 550
    (row,) = gateway.messages()
    assert row.date_header == "Mon, 11 Sep 2017 09:00:00 -0500"


async def test_null_sender_is_refused_and_gets_no_notice(gateway: Gateway) -> None:
    with capture_logs() as events:
        _, final = await transaction(gateway, [RETIRED], sender="")
    assert final is not None
    assert final.code == 550
    (row,) = gateway.messages()
    assert row.notice == "suppressed:null-sender"
    assert gateway.jobs() == []
    assert {"event": "notice.suppressed", "reason": "null-sender"}.items() <= next(
        e for e in events if e["event"] == "notice.suppressed"
    ).items()


async def test_reject_at_rcpt_refuses_the_recipient_and_records_the_refusal(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(offices=[office(response="reject-at-rcpt")])
    (rcpt,), final = await transaction(gw, [RETIRED])
    assert final is None
    assert rcpt.code == 550
    assert rcpt.text.startswith("5.1.6 NOT FILED")
    assert rcpt.last.isascii()
    assert len(rcpt.last) <= 510
    (row,) = gw.refusals()
    assert row.reference == reference_of(rcpt)
    assert (row.recipient, row.mail_from, row.phase, row.reply) == (
        RETIRED,
        SENDER,
        "retired",
        rcpt.last,
    )
    assert gw.jobs() == []


async def test_decommissioned_address_is_plain_550_5_1_1(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(offices=[office(decommissions="2017-09-13")])
    (rcpt,), _ = await transaction(gw, [RETIRED])
    assert rcpt.last == "550 5.1.1 This address no longer exists"


# -- before the cutoff --------------------------------------------------------------------------


async def test_before_portal_opens_mail_is_accepted_and_queued_for_the_legacy_host(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(clock_at=BEFORE_PORTAL)
    content = message()
    (_rcpt,), final = await transaction(gw, [RETIRED.upper()], content)
    assert final is not None
    assert final.code == 250
    assert final.text.startswith("2.0.0 Queued as ")
    (job,) = gw.jobs()
    assert (job.kind, job.destination, job.mail_from) == (
        "relay",
        "legacy.occ-chicago.example:25",
        SENDER,
    )
    assert list(job.recipients) == [RETIRED.upper()]  # relayed exactly as addressed
    (raw,) = gw.raw_copies()
    assert raw.raw.startswith(b"From: Pat Paralegal")


async def test_in_the_warn_phase_mail_is_relayed_and_the_sender_advised(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(clock_at=WARN_TIME)
    _, final = await transaction(gw, [RETIRED])
    assert final is not None
    assert final.code == 250
    jobs = sorted(gw.jobs(), key=lambda j: j.kind)
    assert [(j.kind, j.mail_from) for j in jobs] == [("advisory", ""), ("relay", SENDER)]


# -- recipients that are not ours ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        ("someone@gmail.example", "554 5.7.1 Relay access denied"),
        ("occ-chicago-filings@occ-chicago.example.evil.example", "554 5.7.1 Relay access denied"),
        ("not an address", "501 5.1.3 Bad recipient address syntax"),
    ],
)
async def test_other_recipients_are_refused_and_never_relayed(
    gateway: Gateway, recipient: str, reply: str
) -> None:
    (rcpt,), final = await transaction(gateway, [recipient])
    assert rcpt.last == reply
    assert final is None
    assert gateway.jobs() == []


@pytest.mark.parametrize(
    "recipient",
    [
        "nobody@occ-chicago.example",
        "occ-chicago-filngs@occ-chicago.example",
        "no-reply@occ-chicago.example",
    ],
)
async def test_unknown_mailbox_in_an_office_domain_names_the_portal_and_is_recorded(
    gateway: Gateway, recipient: str
) -> None:
    (rcpt,), final = await transaction(gateway, [recipient])
    assert final is None
    assert rcpt.code == 550
    assert rcpt.last.startswith("550 5.1.1 No such mailbox here")
    assert "NOT FILED" in rcpt.last.upper() or "nothing was filed" in rcpt.last
    assert "https://eservice.ice.gov/" in rcpt.last
    (refusal,) = gateway.refusals()
    assert refusal.recipient == recipient
    assert refusal.reason == "no-such-mailbox"
    assert f"(ref {refusal.reference})" in rcpt.last
    assert gateway.jobs() == []


async def test_postmaster_is_accepted_after_the_cutoff_and_kept_for_the_operator(
    gateway: Gateway,
) -> None:
    _, final = await transaction(gateway, ["PostMaster@occ-chicago.example"])
    assert final is not None
    assert final.code == 250
    (row,) = gateway.messages()
    (raw,) = [c for c in gateway.raw_copies() if c.reference == row.reference]
    assert row.outcome == "accepted"
    assert b"Motion to continue" in raw.raw
    assert gateway.jobs() == []


async def test_recipients_answered_differently_are_deferred_to_another_transaction(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(offices=[office(), other_office()])
    replies, final = await transaction(
        gw,
        [
            RETIRED,
            OTHER_RETIRED,
            "postmaster@occ-chicago.example",
            "occ-chicago-service@occ-chicago.example",
        ],
    )
    assert [r.code for r in replies] == [250, 452, 452, 250]
    # The other office's retired address: not filed yet, to be sent again, and where to file.
    assert replies[1].last.startswith("452 4.5.3 NOT FILED for this retired address")
    assert "https://portal.other.example/" in replies[1].last
    # Postmaster is no filing: the plain 452.
    assert replies[2].last == "452 4.5.3 Send to this recipient in a separate transaction"
    assert final is not None
    assert final.code == 550
    assert "ICE OCC Chicago" in final.text
    (row,) = gw.messages()
    assert list(row.recipients) == [RETIRED, "occ-chicago-service@occ-chicago.example"]


async def test_too_many_recipients_get_452(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"max_recipients": 2})
    second, third = "occ-chicago-service@occ-chicago.example", "postmaster@occ-chicago.example"
    replies, _ = await transaction(gw, [RETIRED, second, third])
    assert [r.last for r in replies][2] == "452 4.5.3 Too many recipients"


async def test_too_many_recipients_for_a_retired_address_say_not_filed_and_name_the_portal(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(server={"max_recipients": 1})
    with capture_logs() as events:
        replies, _ = await transaction(gw, ["postmaster@occ-chicago.example", RETIRED])
    assert [r.code for r in replies] == [250, 452]
    assert replies[1].last.startswith("452 4.5.3 Too many recipients; NOT FILED")
    assert "send it again separately" in replies[1].last
    assert "https://eservice.ice.gov/" in replies[1].last
    (deferred,) = [e for e in events if e["event"] == "smtp.recipient.deferred"]
    assert (deferred["reason"], deferred["office"]) == ("too-many-recipients", "ice-occ-chicago")
    assert deferred["reply"] == replies[1].last


# -- the protocol -------------------------------------------------------------------------------


async def test_banner_and_ehlo_advertise_the_extensions_and_no_auth(gateway: Gateway) -> None:
    async with await RawClient.connect(gateway.port) as client:
        banner = await client.reply()
        ehlo = await client.cmd("EHLO client.example")
        auth = await client.cmd("AUTH PLAIN AGEAYg==")
    assert banner.last == "220 mx.test.example ESMTP"
    assert ehlo.lines[0] == "mx.test.example"
    assert set(ehlo.lines[1:]) == {
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
    }
    assert auth.last == "502 5.5.1 AUTH not available on this server"


async def test_every_reply_carries_an_enhanced_status_code(gateway: Gateway) -> None:
    commands = [
        "NOOP",
        "RCPT TO:<x@y.example>",
        "DATA",
        "MAIL FROM:<bad",
        "MAIL FROM:<a@b.example> FOO=1",
        "MAIL FROM:<a@b.example>",
        "MAIL FROM:<c@d.example>",
        "RCPT TO:",
        "VRFY postmaster",
        "EXPN list",
        "HELP",
        "BOGUS",
        "",
        "RSET",
        "STARTTLS",
        "DATA extra",
        "QUIT",
    ]
    async with await RawClient.connect(gateway.port) as client:
        await client.reply()
        await client.cmd("EHLO client.example")
        replies = [await client.cmd(c) for c in commands]
    for command, reply in zip(commands, replies, strict=True):
        assert re.match(r"^[245]\.\d{1,3}\.\d{1,3} ", reply.lines[-1]), (command, reply)


async def test_pipelined_commands_are_answered_in_order(gateway: Gateway) -> None:
    async with await RawClient.connect(gateway.port) as client:
        await client.reply()
        await client.cmd("EHLO client.example")
        client.writer.write(
            f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RETIRED}>\r\n"
            "RCPT TO:<nobody@occ-chicago.example>\r\nDATA\r\n".encode()
        )
        replies = [await client.reply() for _ in range(4)]
        client.writer.write(message() + b"\r\n.\r\nQUIT\r\n")
        final, bye = await client.reply(), await client.reply()
    assert [r.code for r in replies] == [250, 250, 550, 354]
    assert final.code == 550
    assert final.text.startswith("5.1.6")
    assert bye.last.startswith("221 2.0.0")


async def test_deeply_nested_mime_is_recorded_without_failing(gateway: Gateway) -> None:
    depth = 10_000
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    content = b"From: a@b.example\r\nSubject: nest\r\nMIME-Version: 1.0\r\n" + head + b"\r\nend\r\n"
    _, final = await transaction(gateway, [RETIRED], content)
    assert final is not None
    assert final.code == 550
    (row,) = gateway.messages()
    assert (row.mime_truncated, row.subject) == (1, "nest")


async def test_smtplib_sees_the_refusal_as_a_data_error(gateway: Gateway) -> None:
    def send() -> smtplib.SMTPDataError:
        with smtplib.SMTP(
            "127.0.0.1", gateway.port, local_hostname="client.example", timeout=5
        ) as s:
            try:
                s.sendmail(SENDER, [RETIRED], message())
            except smtplib.SMTPDataError as exc:
                return exc
        raise AssertionError("the message was accepted")

    async with asyncio.timeout(10):
        error = await asyncio.to_thread(send)
    assert error.smtp_code == 550
    assert b"NOT FILED" in error.smtp_error


async def test_aiosmtplib_client_before_cutoff_is_accepted(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(clock_at=BEFORE_PORTAL)
    async with asyncio.timeout(10):
        errors, response = await aiosmtplib.send(
            message(),
            sender=SENDER,
            recipients=[RETIRED],
            hostname="127.0.0.1",
            port=gw.port,
            local_hostname="client.example",
            start_tls=False,
        )
    assert errors == {}
    assert response.startswith("2.0.0 Queued as ")


# -- STARTTLS -----------------------------------------------------------------------------------


async def test_starttls_is_offered_with_a_certificate_and_recorded(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.test.example", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    server_context = tls_context(ServerSettings(tls_cert=cert_path, tls_key=key_path))
    gw = await start_gateway(tls_context=server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=gw.port,
        local_hostname="client.example",
        tls_context=client_context,
        start_tls=False,
        timeout=5,
    )
    async with asyncio.timeout(10):
        await client.connect()
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.starttls()
        assert not client.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail(SENDER, [RETIRED], message())
        await client.quit()
    assert refused.value.code == 550
    (row,) = gw.messages()
    assert row.tls.startswith("TLSv1.")


# -- limits and failures ------------------------------------------------------------------------


async def test_connections_over_the_cap_get_421(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"max_connections": 2})
    first, second = await RawClient.connect(gw.port), await RawClient.connect(gw.port)
    try:
        assert (await first.reply()).code == 220
        assert (await second.reply()).code == 220
        async with await RawClient.connect(gw.port) as third:
            assert (await third.reply()).last == "421 4.3.2 Too many connections, try again later"
    finally:
        await first.close()
        await second.close()


async def test_idle_session_is_closed_with_421(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"idle_timeout": 0.3})
    async with await RawClient.connect(gw.port) as client:
        await client.reply()
        assert (await client.reply(wait=3)).last == "421 4.4.2 Idle too long, closing connection"


async def test_whole_session_time_is_capped(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"session_timeout": 0.5})
    async with await RawClient.connect(gw.port) as client:
        await client.reply()
        for _ in range(3):
            await client.cmd("NOOP")
        assert (await client.reply(wait=3)).last.startswith("421 4.4.2 Session time limit")


async def test_repeated_commands_are_capped(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"max_commands": 5})
    async with await RawClient.connect(gw.port) as client:
        await client.reply()
        replies = [await client.cmd("NOOP") for _ in range(6)]
    assert replies[-1].last == "421 4.7.0 NOOP sent too many times"


async def test_our_own_failure_is_451_without_details(gateway: Gateway) -> None:
    gateway.clock.fail = True
    with capture_logs() as events:
        (rcpt,), _ = await transaction(gateway, [RETIRED])
    assert rcpt.last == "451 4.3.0 Temporary local problem, please try again later"
    (failure,) = [e for e in events if e["event"] == "smtp.session.failed"]
    assert isinstance(failure["exc_info"], RuntimeError)


async def test_store_failure_answers_451_and_never_250(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(clock_at=BEFORE_PORTAL)
    await gw.store.close()
    _, final = await transaction(gw, [RETIRED])
    assert final is not None
    assert final.last == "451 4.3.0 Temporary local problem, message not accepted; try again later"


async def test_many_concurrent_sessions_each_get_their_own_durable_record(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(limits={"notices_per_sender": 100})

    async def one(i: int) -> str:
        _, final = await transaction(
            gateway,
            [RETIRED],
            message(subject=f"Filing {i}", message_id=f"<filing-{i}@lawfirm.example>"),
        )
        assert final is not None
        return reference_of(final)

    async with asyncio.timeout(30):
        references = await asyncio.gather(*(one(i) for i in range(40)))
    rows = gateway.messages()
    assert {r.reference for r in rows} == set(references)
    assert len(gateway.jobs(kind="notice")) == 40


async def test_listens_on_ipv6_loopback(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"listen": ["[::1]:0"]})
    async with await RawClient.connect(gw.port, host="::1") as client:
        assert (await client.reply()).code == 220
        await client.cmd("EHLO client.example")
        await client.cmd(f"MAIL FROM:<{SENDER}>")
        assert (await client.cmd(f"RCPT TO:<{RETIRED}>")).code == 250
        final = await client.data(message())
    assert final.code == 550
    (row,) = gw.messages()
    assert row.peer_ip == "::1"


# -- sender authentication: trusted networks ---------------------------------------------------

UNTRUSTED = "127.0.0.2"  # loopback, but outside the default trusted networks (127.0.0.0/8 is!)


async def test_untrusted_sender_is_refused_and_never_mailed(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"trusted_networks": ["127.0.0.1/32", "::1/128"]})
    with capture_logs() as events:
        _, final = await transaction(gw, [RETIRED], source=UNTRUSTED)
    assert final is not None
    assert final.code == 550
    (row,) = gw.messages()
    assert (row.notice, row.peer_ip) == ("suppressed:sender-not-authenticated", UNTRUSTED)
    assert gw.jobs() == []
    suppressed = [e for e in events if e["event"] == "notice.suppressed"]
    assert [e["reason"] for e in suppressed] == ["sender-not-authenticated"]


async def test_accept_and_notify_accepts_a_trusted_sender_and_says_not_filed(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(offices=[office(response="accept-and-notify")])
    _, final = await transaction(gw, [RETIRED])
    assert final is not None
    assert final.code == 250
    assert final.text.startswith(
        "2.0.0 Received but NOT FILED: ICE OCC Chicago takes electronic filings only"
    )
    (job,) = gw.jobs()
    assert (job.kind, job.mail_from) == ("notice", "")
    assert list(job.recipients) == [SENDER]


async def test_accept_and_notify_refuses_an_unauthenticated_sender(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(
        offices=[office(response="accept-and-notify")],
        server={"trusted_networks": ["127.0.0.1/32"]},
    )
    _, final = await transaction(gw, [RETIRED], source=UNTRUSTED)
    assert final is not None
    assert final.code == 550
    (decision,) = gw.decisions()
    assert decision.action == "reject-after-data"
    assert "not authenticated" in decision.reason
    assert gw.jobs() == []


async def test_own_notice_address_never_gets_a_notice(gateway: Gateway) -> None:
    _, final = await transaction(gateway, [RETIRED], sender="no-reply@mx.test.example")
    assert final is not None
    assert final.code == 550
    (row,) = gateway.messages()
    assert row.notice == "suppressed:own-address"
