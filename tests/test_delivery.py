"""Delivery: notices and relays leave through the real worker to real listeners on loopback.

Each test receives a filing over SMTP (so the job comes from a real record), then runs the
delivery worker against an aiosmtpd sink whose replies are scripted from the peer side.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
import trustme
from structlog.testing import capture_logs

from gateway.app import build_delivery
from gateway.delivery.worker import DeliveryWorker
from gateway.notices.dkim import ensure_key, txt_record
from gateway.notices.render import NoticeRenderer
from gateway.store.outbox import Job
from gateway.store.retention import purge_message
from tests.conftest import BEFORE_PORTAL, RETIRED, SENDER, Gateway, GatewayFactory, office
from tests.dnsserver import DnsServer, Zone
from tests.polling import eventually
from tests.sink import Sink, start_sink
from tests.smtpclient import message, reference_of, transaction

FAST_RETRY = {"retry_schedule": [60.0], "retry_jitter": 0.0, "poll_interval": 0.05}

WorkerFactory = Callable[[Gateway], Any]


@pytest.fixture
async def run_worker() -> AsyncIterator[WorkerFactory]:
    """Start the real delivery worker for a started gateway; stopped at the end."""
    running: list[tuple[DeliveryWorker, asyncio.Task[None]]] = []

    async def start(gw: Gateway) -> DeliveryWorker:
        key, _ = ensure_key(gw.notices)
        worker = build_delivery(gw.settings, gw.store, gw.clock, NoticeRenderer(gw.notices), key)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, task in running:
        await worker.stop(1.0)
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    listener = await start_sink()
    yield listener
    listener.close()


def smarthost(listener: Sink, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "smarthost",
        "smarthost": f"127.0.0.1:{listener.port}",
        "starttls": "opportunistic",
        **FAST_RETRY,
        **extra,
    }


async def file_a_filing(gw: Gateway, **kwargs: Any) -> str:
    _, final = await transaction(gw.port, [RETIRED], **kwargs)
    assert final is not None
    return reference_of(final) if "(ref " in final.text else ""


async def job_state(gw: Gateway, state: str, *, attempts: int = 0, within: float = 10.0) -> Job:
    """The first job in `state` with at least `attempts` attempts, once there is one."""

    def found() -> list[Job]:
        return [job for job in gw.jobs(state=state) if job.attempts >= attempts]

    rows = await eventually(found, within=within)
    return rows[0]


# -- notices through a smarthost ------------------------------------------------------------------


async def test_notice_reaches_the_sender_through_the_smarthost_signed_and_addressed_alone(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink))
    content = message(
        subject="Motion to continue A123456789", attachment=("motion.pdf", b"%PDF-1.7" * 300)
    )
    reference = await file_a_filing(gw, content=content)
    with capture_logs() as events:
        await run_worker(gw)
        (received,) = await sink.wait_for(1)
        job = await job_state(gw, "delivered")

    assert received.mail_from == "<>"  # null reverse path: no bounce of a bounce (RFC 3834 §3.3)
    assert received.recipients == (SENDER,)
    notice = email.message_from_bytes(received.data, policy=email.policy.default)
    assert notice["To"] == SENDER
    assert notice["Cc"] is None
    assert notice["Bcc"] is None
    assert notice["Auto-Submitted"] == "auto-replied"
    assert notice["In-Reply-To"] == "<filing-1@lawfirm.example>"
    assert str(notice["Subject"]).startswith("Auto: NOT FILED - Motion to continue")
    plain = notice.get_body(("plain",))
    assert plain is not None
    text = plain.get_content()
    assert reference in text
    assert "motion.pdf" in text
    assert "https://eservice.ice.gov/" in text
    assert "A-number: A123-456-789" in text  # recorded as A123456789, shown as people write it
    key, _ = ensure_key(gw.notices)
    assert dkimpy.verify(
        received.data, dnsfunc=lambda name, timeout=5: txt_record(key.private_pem).encode()
    )

    (attempt,) = gw.attempts(job.id)
    assert (attempt.outcome, attempt.code, attempt.host) == ("delivered", 250, "127.0.0.1")
    delivered = [e for e in events if e["event"] == "delivery.succeeded"]
    assert [(e["reference"], e["reply_code"], e["attempt"]) for e in delivered] == [
        (reference, 250, 1)
    ]


async def test_starttls_required_and_auth_reach_a_tls_smarthost(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    listener = await start_sink(tls=server_context, users={"gateway": "s3cret"})
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    secret = tmp_path / "password"
    secret.write_text("s3cret\n", encoding="utf-8")
    try:
        gw = await start_gateway(
            delivery=smarthost(
                listener,
                starttls="required",
                ca_file=str(ca_file),
                username="gateway",
                password_file=str(secret),
            )
        )
        await file_a_filing(gw)
        await run_worker(gw)
        (received,) = await listener.wait_for(1)
    finally:
        listener.close()
    assert received.tls is True
    assert received.login == "gateway"


async def test_required_starttls_that_is_not_offered_defers_and_sends_nothing_in_clear(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink, starttls="required"))
    await file_a_filing(gw)
    await run_worker(gw)
    job = await job_state(gw, "deferred")
    assert "STARTTLS is required" in (job.last_reply or "")
    assert sink.attempts == 0


# -- retries ---------------------------------------------------------------------------------------


async def test_temporary_failures_are_retried_and_delivered_once(
    start_gateway: GatewayFactory, run_worker: WorkerFactory
) -> None:
    listener = await start_sink(replies=["451 4.3.0 Try again later", "452 4.2.2 Mailbox full"])
    try:
        gw = await start_gateway(delivery=smarthost(listener))
        await file_a_filing(gw)
        worker = await run_worker(gw)
        for attempt, code in enumerate((451, 452), start=1):
            job = await job_state(gw, "deferred", attempts=attempt)
            assert (job.last_reply or "").startswith(f"127.0.0.1: {code} ")
            # The next try is due a minute after the failure: move the clock past it.
            gw.clock.now += timedelta(seconds=61)
            worker.wake()
        await listener.wait_for(1)
        job = await job_state(gw, "delivered")
    finally:
        listener.close()
    attempts = gw.attempts(job.id)
    assert [(a.outcome, a.code) for a in attempts] == [
        ("deferred", 451),
        ("deferred", 452),
        ("delivered", 250),
    ]
    assert len(listener.accepted) == 1
    assert job.attempts == 3


async def test_permanent_refusal_fails_at_once(
    start_gateway: GatewayFactory, run_worker: WorkerFactory
) -> None:
    listener = await start_sink(replies=["550 5.1.1 No such user"])
    try:
        gw = await start_gateway(delivery=smarthost(listener))
        await file_a_filing(gw)
        with capture_logs() as events:
            await run_worker(gw)
            job = await job_state(gw, "failed")
            # The failed state is committed before its event is logged: wait for the line too.
            await eventually(lambda: [e for e in events if e["event"] == "delivery.failed"])
    finally:
        listener.close()
    assert job.attempts == 1
    assert job.last_reply == "127.0.0.1: 550 5.1.1 No such user"
    (failed,) = [e for e in events if e["event"] == "delivery.failed"]
    assert (failed["reply_code"], failed["host"]) == (550, "127.0.0.1")


async def test_a_job_past_its_maximum_age_fails_and_says_why(
    start_gateway: GatewayFactory, run_worker: WorkerFactory
) -> None:
    listener = await start_sink(replies=["451 4.3.0 Try again later"] * 5)
    try:
        gw = await start_gateway(delivery=smarthost(listener, max_age=90.0))
        await file_a_filing(gw)
        worker = await run_worker(gw)
        await job_state(gw, "deferred")
        gw.clock.now += timedelta(seconds=61)  # second try at 61 s; a third would be past 90 s
        worker.wake()
        job = await job_state(gw, "failed")
    finally:
        listener.close()
    assert job.attempts == 2
    assert (job.last_reply or "").startswith("gave up after 2 attempts in 0:01:01; last: ")
    assert (job.last_reply or "").endswith("127.0.0.1: 451 4.3.0 Try again later")


async def test_unreachable_smarthost_defers_with_no_reply_code(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    port = sink.port
    sink.close()
    await sink.server.wait_closed() if sink.server else None
    gw = await start_gateway(
        delivery={"mode": "smarthost", "smarthost": f"127.0.0.1:{port}", **FAST_RETRY}
    )
    await file_a_filing(gw)
    await run_worker(gw)
    job = await job_state(gw, "deferred")
    (attempt,) = gw.attempts(job.id)
    assert attempt.code == 0
    assert attempt.reply.startswith("no answer")


# -- relays and files ------------------------------------------------------------------------------


async def test_before_the_cutoff_mail_is_relayed_unchanged_to_the_legacy_host(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    legacy = f"127.0.0.1:{sink.port}"
    gw = await start_gateway(
        clock_at=BEFORE_PORTAL, offices=[office(legacy_host=legacy)], delivery=smarthost(sink)
    )
    content = message(attachment=("brief.pdf", b"%PDF-1.4 brief" * 50))
    await file_a_filing(gw, content=content)
    await run_worker(gw)
    (received,) = await sink.wait_for(1)
    assert received.mail_from == SENDER
    assert received.recipients == (RETIRED,)
    head, _, _original = received.data.partition(b"\r\n\tby mx.test.example")
    assert head.startswith(b"Received: from client.lawfirm.example ([127.0.0.1])")
    (raw,) = gw.raw_copies()
    assert received.data.endswith(raw.raw)  # the original, byte for byte
    # Relayed, its raw copy is handed to retention ([storage] raw_retention_days, 90).
    await job_state(gw, "delivered")
    (kept,) = gw.raw_copies()
    assert kept.keep_until is not None
    assert kept.keep_until.date() == (BEFORE_PORTAL + timedelta(days=90)).date()


async def test_file_mode_writes_each_notice_as_a_complete_eml_file(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    gw = await start_gateway(delivery={"mode": "file", "outbox_dir": str(outbox), **FAST_RETRY})
    reference = await file_a_filing(gw)
    await run_worker(gw)
    job = await job_state(gw, "delivered")
    (written,) = outbox.iterdir()
    assert written.name == f"{reference}-{job.id}-notice.eml"
    data = written.read_bytes()
    assert data.startswith(b"X-Envelope-From: <>\r\nX-Envelope-To: <paralegal@lawfirm.example>\r\n")
    assert b"DKIM-Signature:" in data
    assert list(outbox.glob(".*")) == []  # no partial file left behind


async def test_per_destination_concurrency_is_bounded(
    start_gateway: GatewayFactory, run_worker: WorkerFactory
) -> None:
    listener = await start_sink()
    listener.stall_s = 0.2
    try:
        gw = await start_gateway(
            delivery=smarthost(listener, concurrency=10, per_domain_concurrency=2)
        )
        for i in range(6):
            await file_a_filing(
                gw, content=message(subject=f"Filing {i}", message_id=f"<f{i}@lawfirm.example>")
            )
        await run_worker(gw)
        async with asyncio.timeout(10):
            peak = 0
            while len(listener.accepted) < 6:
                peak = max(peak, len(gw.jobs(state="in-flight")))
                await asyncio.sleep(0.01)
    finally:
        listener.close()
    assert peak in (1, 2)  # never more than per_domain_concurrency at once
    assert list(gw.jobs()[0].recipients) == [SENDER]


# -- straight to the sender's mail exchangers ----------------------------------------------------

ZONE: Zone = {
    ("lawfirm.example", "MX"): [(10, "mx1.lawfirm.example"), (20, "mx2.lawfirm.example")],
    ("mx1.lawfirm.example", "A"): ["127.0.0.2"],
    ("mx2.lawfirm.example", "A"): ["127.0.0.3"],
    ("strict.example", "MX"): [(10, "mx.strict.example")],
    ("mx.strict.example", "A"): ["127.0.0.4"],
    ("nullmx.example", "MX"): [(0, ".")],
}


@pytest.fixture
async def mx_world() -> AsyncIterator[tuple[int, list[Sink]]]:
    """A DNS server for ZONE and listeners: mx1 tempfails, mx2 accepts, strict rejects."""
    first = await start_sink("127.0.0.2", replies=["421 4.7.0 Too busy, come back later"] * 10)
    port = first.port
    sinks = [
        first,
        await start_sink("127.0.0.3", port),
        await start_sink("127.0.0.4", port, replies=["550 5.7.1 We do not want your mail"]),
    ]
    async with DnsServer(ZONE) as dns:
        yield dns.port, sinks
    for listener in sinks:
        listener.close()


def mx_mode(dns_port: int, mx_port: int) -> dict[str, Any]:
    return {
        "delivery": {"mode": "mx", "mx_port": mx_port, "mx_internal_addresses": True, **FAST_RETRY},
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 2.0},
    }


async def test_mx_mode_falls_through_to_the_next_exchanger_after_a_temporary_failure(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, mx_world: tuple[int, list[Sink]]
) -> None:
    dns_port, (mx1, mx2, _) = mx_world
    gw = await start_gateway(**mx_mode(dns_port, mx2.port))
    await file_a_filing(gw)
    await run_worker(gw)
    (received,) = await mx2.wait_for(1)
    job = await job_state(gw, "delivered")
    assert received.recipients == (SENDER,)
    assert mx1.attempts == 1
    assert mx1.accepted == []
    (attempt,) = gw.attempts(job.id)
    assert (attempt.host, attempt.code) == ("mx2.lawfirm.example", 250)


@pytest.mark.parametrize(
    ("sender", "reply"),
    [
        ("clerk@nullmx.example", "domain accepts no mail"),
        ("clerk@strict.example", "mx.strict.example: 550 5.7.1 We do not want your mail"),
        ("clerk@missing.example", "no such domain"),
    ],
)
async def test_mx_mode_permanent_failures(
    start_gateway: GatewayFactory,
    run_worker: WorkerFactory,
    mx_world: tuple[int, list[Sink]],
    sender: str,
    reply: str,
) -> None:
    dns_port, sinks = mx_world
    gw = await start_gateway(**mx_mode(dns_port, sinks[0].port))
    await file_a_filing(gw, sender=sender)
    await run_worker(gw)
    job = await job_state(gw, "failed")
    assert job.attempts == 1
    assert reply in (job.last_reply or "")


async def test_mx_at_an_internal_address_is_never_connected_to_by_default(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, mx_world: tuple[int, list[Sink]]
) -> None:
    dns_port, (mx1, mx2, _) = mx_world
    settings = mx_mode(dns_port, mx2.port)
    settings["delivery"]["mx_internal_addresses"] = False
    gw = await start_gateway(**settings)
    await file_a_filing(gw)
    await run_worker(gw)
    job = await job_state(gw, "failed")
    assert "lawfirm.example are at internal addresses" in (job.last_reply or "")
    assert mx1.attempts == mx2.attempts == 0


async def test_notices_composed_in_a_separate_process_arrive_signed(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink, composer_processes=1))
    reference = await file_a_filing(gw)
    await run_worker(gw)
    (received,) = await sink.wait_for(1, within=30)
    assert reference.encode() in received.data
    assert received.data.startswith(b"DKIM-Signature:")


async def test_a_missing_record_fails_the_job_across_the_process_boundary(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink, composer_processes=1))
    await file_a_filing(gw)
    # An operator's mistake: the records go, their jobs stay.
    references = [m.reference for m in gw.messages()]
    gw.read(lambda conn: [purge_message(conn, r, should_keep_jobs=True) for r in references])
    await run_worker(gw)
    job = await job_state(gw, "failed", within=30)
    assert (job.last_reply or "").startswith("no record of message ")
    assert sink.attempts == 0


@pytest.mark.parametrize(("starttls", "delivered"), [("opportunistic", True), ("required", False)])
async def test_a_failed_tls_handshake_falls_back_to_clear_text_only_when_opportunistic(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, starttls: str, delivered: bool
) -> None:
    # The listener offers STARTTLS with a certificate nobody trusts: the handshake fails.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    listener = await start_sink(tls=server_context)
    try:
        gw = await start_gateway(delivery=smarthost(listener, starttls=starttls))
        await file_a_filing(gw)
        await run_worker(gw)
        if delivered:
            (received,) = await listener.wait_for(1)
            assert received.tls is False
        else:
            job = await job_state(gw, "deferred")
            assert "STARTTLS failed" in (job.last_reply or "")
            assert listener.accepted == []
    finally:
        listener.close()


@pytest.mark.parametrize(("source", "bounced"), [(None, True), ("127.0.0.2", False)])
async def test_a_relay_refused_for_good_is_reported_to_an_authenticated_sender_only(
    start_gateway: GatewayFactory,
    run_worker: WorkerFactory,
    sink: Sink,
    source: str | None,
    bounced: bool,
) -> None:
    legacy = await start_sink(replies=["550 5.1.1 <occ-chicago-filings>: no such user"])
    try:
        gw = await start_gateway(
            clock_at=BEFORE_PORTAL,
            offices=[office(legacy_host=f"127.0.0.1:{legacy.port}")],
            server={"trusted_networks": ["127.0.0.1/32"]},
            delivery=smarthost(sink),
        )
        _, final = await transaction(gw.port, [RETIRED], message(), source=source)
        assert final is not None
        assert final.code == 250  # accepted for the legacy host, before the cutoff
        await run_worker(gw)
        await job_state(gw, "failed")
        if bounced:
            (received,) = await sink.wait_for(1)
            assert received.recipients == (SENDER,)
            assert received.mail_from == "<>"
            report = email.message_from_bytes(received.data, policy=email.policy.default)
            assert report.get_content_type() == "multipart/report"
            human, status, headers = report.iter_parts()
            assert "could not be delivered" in human.get_content()
            assert status.get_content_type() == "message/delivery-status"
            text = status.as_string()
            assert "Final-Recipient: rfc822; occ-chicago-filings@occ-chicago.example" in text
            assert "Status: 5.1.1" in text
            assert "Diagnostic-Code: smtp; 550 5.1.1" in text
            assert headers.get_content_type() == "text/rfc822-headers"
            assert report["Auto-Submitted"] == "auto-replied"
            await job_state(gw, "delivered")
        else:
            # A bounce is queued in the very write that failed the relay: it would be there.
            assert gw.jobs(kind="bounce") == []
            assert sink.accepted == []
    finally:
        legacy.close()
