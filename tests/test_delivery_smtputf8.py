"""SMTPUTF8 end to end: a sender with a non-ASCII address gets the notice it was promised.

A filing arrives over loopback with `MAIL FROM:<josé@...> SMTPUTF8` from a trusted client;
the real worker then sends its notice (or relay, or bounce) to aiosmtpd sinks that offer
SMTPUTF8 or do not, in file, smarthost and mx modes. A server without SMTPUTF8 fails the
job at once (RFC 6531 §3.2), with the reason in the record.
"""

from __future__ import annotations

import email
import email.policy
import io
from collections.abc import AsyncIterator
from pathlib import Path

import dkim as dkimpy
import pytest

from gateway.clock import make_clock
from gateway.delivery.transport import OutgoingMail
from gateway.notices.dkim import ensure_key, txt_record
from gateway.ops.queue import QueueRequest, run_queue
from tests.conftest import BEFORE_PORTAL, RETIRED, Gateway, GatewayFactory, office
from tests.dnsserver import DnsServer, Zone
from tests.sink import Sink, start_sink
from tests.smtpclient import RawClient, message, reference_of
from tests.test_delivery import FAST_RETRY, WorkerFactory, job_state, mx_mode, smarthost
from tests.test_delivery import run_worker as run_worker  # a fixture, shared

UTF8_SENDER = "josé@bufete.example"
NOT_OFFERED = "does not offer SMTPUTF8"


@pytest.fixture
async def utf8_sink() -> AsyncIterator[Sink]:
    listener = await start_sink(smtputf8=True)
    yield listener
    listener.close()


@pytest.fixture
async def ascii_sink() -> AsyncIterator[Sink]:
    listener = await start_sink()  # aiosmtpd's default: no SMTPUTF8
    yield listener
    listener.close()


async def file_utf8_filing(gw: Gateway, sender: str = UTF8_SENDER) -> str:
    """One filing from `sender` with SMTPUTF8, over loopback (trusted); its reference."""
    async with await RawClient.connect(gw.port) as client:
        await client.reply()
        await client.cmd("EHLO client.bufete.example")
        assert (await client.cmd(f"MAIL FROM:<{sender}> SMTPUTF8")).code == 250
        assert (await client.cmd(f"RCPT TO:<{RETIRED}>")).code == 250
        final = await client.data(message(sender=f"José <{sender}>"))
        await client.cmd("QUIT")
    assert final.code in (250, 550), final  # 550 after DATA: refused, a notice follows
    return reference_of(final) if "(ref " in final.text else ""


def queue_show(gw: Gateway, job_id: int) -> str:
    out, err = io.StringIO(), io.StringIO()
    request = QueueRequest("show", (job_id,))
    assert run_queue(gw.settings, request, clock=make_clock(None), out=out, err=err) == 0
    return out.getvalue()


async def test_a_utf8_sender_gets_the_notice_through_a_smarthost_offering_smtputf8(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, utf8_sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(utf8_sink))
    reference = await file_utf8_filing(gw)
    await run_worker(gw)
    (received,) = await utf8_sink.wait_for(1)
    job = await job_state(gw, "delivered")

    assert received.recipients == (UTF8_SENDER,)
    assert received.mail_from == "<>"
    # email's bytes parser reads 8-bit headers as surrogates: parse the UTF-8 text instead.
    notice = email.message_from_string(received.data.decode(), policy=email.policy.SMTPUTF8)
    assert notice["To"] == UTF8_SENDER
    (to,) = notice["To"].addresses
    assert (to.username, to.domain) == ("josé", "bufete.example")
    assert b"To: jos\xc3\xa9@bufete.example\r\n" in received.data  # RFC 6532 §3.2, not 2047
    plain = notice.get_body(("plain",))
    assert plain is not None
    assert reference in plain.get_content()
    key, _ = ensure_key(gw.notices)
    assert dkimpy.verify(
        received.data, dnsfunc=lambda name, timeout=5: txt_record(key.private_pem).encode()
    )
    assert job.attempts == 1


async def test_a_smarthost_without_smtputf8_fails_the_notice_at_once_and_says_why(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, ascii_sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(ascii_sink))
    await file_utf8_filing(gw)
    await run_worker(gw)
    job = await job_state(gw, "failed")

    assert job.attempts == 1  # not retried until max_age
    assert NOT_OFFERED in (job.last_reply or "")
    (attempt,) = gw.attempts(job.id)
    assert (attempt.outcome, attempt.host, attempt.code) == ("failed", "127.0.0.1", 0)
    assert NOT_OFFERED in attempt.reply
    assert ascii_sink.attempts == 0  # nothing reached DATA
    shown = queue_show(gw, job.id)
    assert NOT_OFFERED in shown
    assert "failed" in shown


async def test_an_ascii_sender_still_reaches_a_server_without_smtputf8(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, ascii_sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(ascii_sink))
    await file_utf8_filing(gw, sender="paralegal@lawfirm.example")
    await run_worker(gw)
    (received,) = await ascii_sink.wait_for(1)
    await job_state(gw, "delivered")
    assert received.recipients == ("paralegal@lawfirm.example",)


async def test_file_mode_writes_the_utf8_envelope_and_headers(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    gw = await start_gateway(delivery={"mode": "file", "outbox_dir": str(outbox), **FAST_RETRY})
    await file_utf8_filing(gw)
    await run_worker(gw)
    await job_state(gw, "delivered")
    (written,) = outbox.iterdir()
    data = written.read_bytes()
    envelope = b"X-Envelope-From: <>\r\nX-Envelope-To: <jos\xc3\xa9@bufete.example>\r\n"
    assert data.startswith(envelope)
    assert b"\r\nTo: jos\xc3\xa9@bufete.example\r\n" in data


@pytest.mark.parametrize("offers_smtputf8", [True, False])
async def test_mx_mode_sends_with_smtputf8_only_where_it_is_offered(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, offers_smtputf8: bool
) -> None:
    listener = await start_sink("127.0.0.2", smtputf8=offers_smtputf8)
    zone: Zone = {
        ("bufete.example", "MX"): [(10, "mx.bufete.example")],
        ("mx.bufete.example", "A"): ["127.0.0.2"],
    }
    try:
        async with DnsServer(zone) as dns:
            gw = await start_gateway(**mx_mode(dns.port, listener.port))
            await file_utf8_filing(gw)
            await run_worker(gw)
            if offers_smtputf8:
                (received,) = await listener.wait_for(1)
                assert received.recipients == (UTF8_SENDER,)
                await job_state(gw, "delivered")
            else:
                job = await job_state(gw, "failed")
                assert job.attempts == 1
                assert (job.last_reply or "").startswith(
                    f"mx.bufete.example: the server {NOT_OFFERED}"
                )
                assert listener.attempts == 0
    finally:
        listener.close()


async def test_mx_mode_passes_over_an_exchanger_without_smtputf8_to_one_that_offers_it(
    start_gateway: GatewayFactory, run_worker: WorkerFactory
) -> None:
    # RFC 5321 §5.1: the exchangers in preference order. The first cannot take a UTF-8
    # envelope (RFC 6531 §3.2), the second can: the notice goes there, at the first try.
    plain = await start_sink("127.0.0.2")
    utf8 = await start_sink("127.0.0.3", plain.port, smtputf8=True)
    zone: Zone = {
        ("bufete.example", "MX"): [(10, "mx1.bufete.example"), (20, "mx2.bufete.example")],
        ("mx1.bufete.example", "A"): ["127.0.0.2"],
        ("mx2.bufete.example", "A"): ["127.0.0.3"],
    }
    try:
        async with DnsServer(zone) as dns:
            gw = await start_gateway(**mx_mode(dns.port, plain.port))
            await file_utf8_filing(gw)
            await run_worker(gw)
            (received,) = await utf8.wait_for(1)
            assert received.recipients == (UTF8_SENDER,)
            job = await job_state(gw, "delivered")
            assert job.attempts == 1
            assert (plain.attempts, plain.connections) == (0, 1)  # asked, and passed over
    finally:
        plain.close()
        utf8.close()


async def test_a_utf8_senders_relay_goes_with_smtputf8_to_a_legacy_host_that_offers_it(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, utf8_sink: Sink
) -> None:
    gw = await start_gateway(
        clock_at=BEFORE_PORTAL,
        offices=[office(legacy_host=f"127.0.0.1:{utf8_sink.port}")],
        delivery=smarthost(utf8_sink),
    )
    await file_utf8_filing(gw)
    await run_worker(gw)
    (received,) = await utf8_sink.wait_for(1)
    await job_state(gw, "delivered")
    assert received.mail_from == UTF8_SENDER
    assert received.recipients == (RETIRED,)


async def test_a_relay_refused_for_want_of_smtputf8_is_bounced_to_the_utf8_sender(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, utf8_sink: Sink, ascii_sink: Sink
) -> None:
    gw = await start_gateway(
        clock_at=BEFORE_PORTAL,
        offices=[office(legacy_host=f"127.0.0.1:{ascii_sink.port}")],
        server={"trusted_networks": ["127.0.0.1/32"]},
        delivery=smarthost(utf8_sink),
    )
    await file_utf8_filing(gw)
    await run_worker(gw)
    (received,) = await utf8_sink.wait_for(1)

    (relay,) = gw.jobs(kind="relay")
    assert (relay.state, relay.attempts) == ("failed", 1)
    assert NOT_OFFERED in (relay.last_reply or "")
    assert received.recipients == (UTF8_SENDER,)
    report = email.message_from_string(received.data.decode(), policy=email.policy.SMTPUTF8)
    assert report["To"] == UTF8_SENDER
    assert report.get_content_type() == "multipart/report"
    human = next(report.iter_parts())
    assert NOT_OFFERED in human.get_content()
    await job_state(gw, "delivered")


@pytest.mark.parametrize(
    ("mail_from", "recipients", "expected"),
    [
        ("", ("paralegal@lawfirm.example",), False),
        ("", (UTF8_SENDER,), True),
        (UTF8_SENDER, (RETIRED,), True),
        ("clerk@bufete.example", (RETIRED, "a@b.example"), False),
        ("", ("a@b.example", "ü@b.example"), True),
    ],
)
def test_an_envelope_needs_smtputf8_when_any_address_is_not_ascii(
    mail_from: str, recipients: tuple[str, ...], *, expected: bool
) -> None:
    mail = OutgoingMail(mail_from, recipients, b"", "name")
    assert mail.has_utf8_envelope is expected
