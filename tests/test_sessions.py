"""SMTP sessions reused per destination server, over real loopback listeners.

The worker sends notices through the real SmtpSender to aiosmtpd sinks that count their
connections; servers that let a kept session go (a closed connection, a 421) are scripted
from the peer side. The reuse rules themselves are a pure function, tested with values.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from gateway.config import DeliverySettings
from gateway.delivery.sessions import SessionPool, is_reusable
from gateway.delivery.transport import OutgoingMail, SmtpSender
from gateway.store.outbox import PENDING_STATES, Job
from tests.conftest import SENDER, Gateway, GatewayFactory
from tests.polling import eventually
from tests.sink import Sink
from tests.smtpclient import message
from tests.test_delivery import WorkerFactory, file_a_filing, smarthost
from tests.test_delivery import run_worker as run_worker  # a fixture, shared
from tests.test_delivery import sink as sink  # a fixture, shared


@pytest.mark.parametrize(
    ("opened_at", "idle_since", "now", "expected"),
    [
        (0.0, 10.0, 12.0, True),  # idle 2 s, 12 s old
        (0.0, 10.0, 15.0, False),  # idle 5 s: let go
        (0.0, 297.0, 299.9, True),  # just under the age limit
        (0.0, 299.0, 300.0, False),  # 300 s old: not reused, however fresh its last use
    ],
)
def test_a_session_is_reused_only_while_briefly_idle_and_young(
    opened_at: float, idle_since: float, now: float, *, expected: bool
) -> None:
    assert (
        is_reusable(opened_at=opened_at, idle_since=idle_since, now=now, idle_s=5.0, age_s=300.0)
        is expected
    )


async def file_filings(gw: Gateway, count: int) -> None:
    for i in range(count):
        await file_a_filing(
            gw, content=message(subject=f"Filing {i}", message_id=f"<f{i}@lawfirm.example>")
        )


async def delivered_once_each(gw: Gateway, count: int) -> None:
    """Every job delivered, on record with exactly one attempt, and that one delivered."""

    def settled() -> list[Job] | None:
        jobs = gw.jobs()
        return jobs if all(j.state not in PENDING_STATES for j in jobs) else None

    jobs = await eventually(settled)
    assert len(jobs) == count
    for job in jobs:
        assert job.state == "delivered"
        assert [a.outcome for a in gw.attempts(job.id)] == ["delivered"]


async def test_notices_to_one_server_share_one_connection(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink, per_domain_concurrency=1))
    await file_filings(gw, 5)
    await run_worker(gw)
    received = await sink.wait_for(5)
    assert sink.connections == 1
    assert [r.recipients for r in received] == [(SENDER,)] * 5
    assert len({r.data for r in received}) == 5  # each notice its own, none sent twice
    await delivered_once_each(gw, 5)


async def test_concurrent_notices_use_no_more_connections_than_deliveries_at_once(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink, per_domain_concurrency=2))
    await file_filings(gw, 8)
    await run_worker(gw)
    await sink.wait_for(8)
    assert sink.connections <= 2
    await delivered_once_each(gw, 8)


@pytest.mark.parametrize("drop_at", ["RSET", "MAIL"])
async def test_a_kept_session_the_server_dropped_is_replaced_and_the_mail_sent_once(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink, drop_at: str
) -> None:
    sink.drop_at, sink.drops = drop_at, 2
    gw = await start_gateway(delivery=smarthost(sink, per_domain_concurrency=1))
    await file_filings(gw, 3)
    with capture_logs() as events:
        await run_worker(gw)
        received = await sink.wait_for(3)
        await delivered_once_each(gw, 3)
    # The first mail opened a session; the second and third each found theirs dropped.
    assert sink.connections == 3
    assert len({r.data for r in received}) == 3
    assert len(received) == 3
    succeeded = [e for e in events if e["event"] == "delivery.succeeded"]
    assert sorted(e["job_id"] for e in succeeded) == sorted(j.id for j in gw.jobs())
    assert not [e for e in events if e["event"] in ("delivery.deferred", "delivery.failed")]


async def test_a_421_on_a_kept_session_moves_the_mail_to_a_fresh_one(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    # The second mail's DATA gets 421 (the server is closing): it goes again, at once, on a
    # new connection, which the server answers 250.
    sink.replies = ["250 2.0.0 Accepted", "421 4.3.2 Shutting down"]
    gw = await start_gateway(delivery=smarthost(sink, per_domain_concurrency=1))
    await file_filings(gw, 2)
    await run_worker(gw)
    await sink.wait_for(2)
    assert sink.connections == 2
    assert sink.attempts == 3
    await delivered_once_each(gw, 2)


async def test_a_refusal_closes_the_session_and_the_next_mail_opens_another(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    sink.replies = ["550 5.7.1 Not this one"]
    gw = await start_gateway(delivery=smarthost(sink, per_domain_concurrency=1))
    await file_filings(gw, 2)
    await run_worker(gw)
    await sink.wait_for(1)
    await eventually(lambda: all(j.state not in PENDING_STATES for j in gw.jobs()))
    assert sorted(j.state for j in gw.jobs()) == ["delivered", "failed"]
    assert sink.connections == 2  # no mail after a refusal on the refused one's session


@pytest.fixture
async def sender_to(sink: Sink) -> AsyncIterator[SmtpSender]:
    settings = DeliverySettings.model_validate(smarthost(sink))
    sender = SmtpSender(
        settings,
        local_hostname="gateway.test.example",
        resolver=None,
        sessions=SessionPool(max_idle=4, idle_s=0.3),
    )
    yield sender
    await sender.close()


def outgoing(number: int, destination: str | None = None) -> OutgoingMail:
    data = f"From: a@occ-chicago.example\r\nSubject: {number}\r\n\r\nBody {number}\r\n"
    return OutgoingMail("", (SENDER,), data.encode(), f"mail-{number}", destination)


async def test_idle_sessions_are_closed_with_quit(sink: Sink, sender_to: SmtpSender) -> None:
    async with asyncio.timeout(10):
        await sender_to.send(outgoing(1))
        assert sink.open_connections == 1
        await eventually(lambda: sink.open_connections == 0)  # once idle for 0.3 s
        await sender_to.send(outgoing(2))
    assert sink.connections == 2


async def test_a_server_whose_sessions_all_expired_leaves_nothing_in_the_pool(
    sink: Sink,
) -> None:
    # In mx mode every sender domain's exchanger is a server of its own: over years the pool
    # must not keep an entry for each one it ever spoke to.
    pool = SessionPool(max_idle=4, idle_s=0.2)
    settings = DeliverySettings.model_validate(smarthost(sink))
    sender = SmtpSender(
        settings, local_hostname="gateway.test.example", resolver=None, sessions=pool
    )
    try:
        async with asyncio.timeout(10):
            for number, host in enumerate(("127.0.0.1", "localhost")):
                await sender.send(outgoing(number, destination=f"{host}:{sink.port}"))
            assert (pool.idle, pool.servers) == (2, 2)
            await eventually(lambda: pool.idle == 0)
            assert pool.servers == 0
    finally:
        await sender.close()


async def test_closing_the_sender_quits_its_kept_sessions(
    sink: Sink, sender_to: SmtpSender
) -> None:
    async with asyncio.timeout(10):
        await sender_to.send(outgoing(1))
        await sender_to.close()
        assert sink.open_connections == 0  # close() waited for the QUIT


async def test_mail_for_another_tls_requirement_never_shares_a_session(
    sink: Sink, sender_to: SmtpSender
) -> None:
    # The smarthost (STARTTLS with a verified certificate when offered) and a relay to the
    # same address and port (opportunistic TLS, no checks) are different sessions.
    async with asyncio.timeout(10):
        await sender_to.send(outgoing(1))
        await sender_to.send(outgoing(2, destination=f"127.0.0.1:{sink.port}"))
        await sender_to.send(outgoing(3))
        await sender_to.send(outgoing(4, destination=f"127.0.0.1:{sink.port}"))
    assert sink.connections == 2
    assert [r.data.split(b"\r\n")[1] for r in sink.accepted] == [
        b"Subject: 1",
        b"Subject: 2",
        b"Subject: 3",
        b"Subject: 4",
    ]


@pytest.mark.parametrize(
    ("pool", "connections"),
    [
        (SessionPool(max_idle=4, age_s=0.0), 4),  # each session too old to carry a second
        (SessionPool(max_idle=1), 3),  # one kept: the relay's session pushes out the first
        (SessionPool(max_idle=2), 2),
    ],
)
async def test_sessions_past_their_age_or_beyond_the_idle_limit_are_closed(
    sink: Sink, pool: SessionPool, connections: int
) -> None:
    settings = DeliverySettings.model_validate(smarthost(sink))
    sender = SmtpSender(settings, local_hostname="gw.test.example", resolver=None, sessions=pool)
    relay = f"127.0.0.1:{sink.port}"
    try:
        async with asyncio.timeout(10):
            for number, destination in enumerate([None, None, relay, None]):
                await sender.send(outgoing(number, destination))
    finally:
        await sender.close()
    assert sink.connections == connections
    assert len(sink.accepted) == 4
    assert sink.open_connections == 0
