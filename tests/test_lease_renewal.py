"""Lease renewal: an attempt may outlast its lease, and its job stays its own while it runs.

The real worker sends to a real sink that stalls DATA for longer than the lease; beside it,
another owner of the same SQLite store (a sibling worker) claims what it can. The gateway's
clock runs with real time here, so the leases run out as they would in service. The two-node
case on PostgreSQL, and a killed owner's jobs handed over, are in test_two_nodes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from structlog.testing import capture_logs

from gateway.app import build_delivery
from gateway.delivery.worker import RENEW_FRACTION
from gateway.errors import StoreError
from gateway.notices.dkim import ensure_key
from gateway.notices.render import NoticeRenderer
from gateway.store.interface import JobQueue
from gateway.store.outbox import Job, Outbox
from gateway.vocabulary import JobState
from tests.conftest import FakeClock, GatewayFactory
from tests.polling import eventually
from tests.sink import Sink
from tests.test_delivery import (
    WorkerFactory,
    file_a_filing,
    job_state,
    run_worker,
    sink,
    smarthost,
)

__all__ = ["run_worker", "sink"]

LEASE_S = 1.5  # short, yet room for a renewal on a busy machine (each has half a second)
SIBLING = "mx/worker-2/4102:7f00"


@contextlib.asynccontextmanager
async def running(clock: FakeClock) -> AsyncIterator[None]:
    """The test's clock moves with real time while the block runs (leases run out)."""
    loop = asyncio.get_running_loop()
    start, at = loop.time(), clock.now

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.02)
            clock.now = at + timedelta(seconds=loop.time() - start)

    ticking = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking


async def test_an_attempt_longer_than_its_lease_keeps_its_job_and_is_delivered_once(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    sink.stall_s = 3 * LEASE_S  # the sink answers DATA only after three leases' time
    gw = await start_gateway(delivery=smarthost(sink, lease=LEASE_S))
    await file_a_filing(gw)
    sibling = Outbox(gw.store, owner=SIBLING)
    taken: list[Job] = []
    with capture_logs() as logs:
        async with running(gw.clock), asyncio.timeout(30):
            await run_worker(gw)
            await eventually(lambda: sink.attempts >= 1, within=10)
            while not sink.accepted:  # the sibling tries all through the stall
                taken += await sibling.claim(gw.clock(), limit=5, lease_s=60, busy={}, per_route=9)
                await asyncio.sleep(0.05)
            job = await job_state(gw, "delivered", attempts=1)
    assert taken == []
    assert sink.attempts == len(sink.accepted) == 1
    assert [a.outcome for a in gw.attempts(job.id)] == [JobState.DELIVERED]
    assert not [e for e in logs if e["event"] in ("outbox.lease_lost", "outbox.update_failed")]


async def test_a_lease_lost_during_the_attempt_stops_it_and_leaves_the_job_to_its_new_owner(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    sink.stall_s = 4 * LEASE_S
    gw = await start_gateway(delivery=smarthost(sink, lease=LEASE_S))
    reference = await file_a_filing(gw)
    with capture_logs() as logs:
        async with running(gw.clock), asyncio.timeout(30):
            await run_worker(gw)
            await eventually(lambda: sink.attempts >= 1, within=10)
            # The sibling's clock is an hour ahead: to it the lease has run out, and it takes
            # the job over (as a node would after this one's store was away too long).
            (taken,) = await Outbox(gw.store, owner=SIBLING).claim(
                gw.clock() + timedelta(hours=1), limit=1, lease_s=3600, busy={}, per_route=9
            )
            await eventually(
                lambda: [e for e in logs if e["event"] == "outbox.lease_lost"],
                within=10 * LEASE_S * RENEW_FRACTION,
            )
            await asyncio.sleep(sink.stall_s)  # past the stall: the sink would have answered
    (lost,) = [e for e in logs if e["event"] == "outbox.lease_lost"]
    assert lost["job_id"] == taken.id
    assert lost["reference"] == reference
    assert lost["during"] == "sending"
    assert lost["owner"] != SIBLING
    # The attempt was stopped before the sink answered: no mail, no outcome recorded, and
    # the job is still in flight as the sibling's, with no delivery event of the old owner.
    assert sink.accepted == []
    (job,) = gw.jobs(reference=reference)
    assert (job.state, job.attempts) == (JobState.IN_FLIGHT, 0)
    assert gw.attempts(job.id) == []
    assert not [e for e in logs if e["event"].startswith("delivery.")]


class _RenewalsRefused:
    """The worker's own outbox, with a store that refuses every renewal (as one this node
    has lost touch with would), and takes everything else."""

    def __init__(self, outbox: JobQueue) -> None:
        self._outbox = outbox
        self.owner = outbox.owner
        self.claim = outbox.claim
        self.recover = outbox.recover
        self.finish = outbox.finish
        self.release = outbox.release
        self.take_operator_actions = outbox.take_operator_actions

    async def renew(self, job: Job, now: datetime, *, lease_s: float) -> bool:
        raise StoreError("database is locked (test)")


async def test_an_outcome_found_lost_when_recorded_is_logged_and_not_written_over_the_new_owner(
    start_gateway: GatewayFactory, sink: Sink
) -> None:
    sink.stall_s = 3 * LEASE_S
    gw = await start_gateway(delivery=smarthost(sink, lease=LEASE_S))
    reference = await file_a_filing(gw)
    key, _ = ensure_key(gw.notices)
    worker = build_delivery(gw.settings, gw.store, gw.clock, NoticeRenderer(gw.notices), key)
    worker.outbox = _RenewalsRefused(worker.outbox)
    with capture_logs() as logs:
        async with running(gw.clock), asyncio.timeout(30):
            task = asyncio.create_task(worker.run())
            try:
                await eventually(lambda: sink.attempts >= 1, within=10)
                # The sibling's clock is an hour ahead: to it the lease has run out.
                (taken,) = await Outbox(gw.store, owner=SIBLING).claim(
                    gw.clock() + timedelta(hours=1), limit=1, lease_s=3600, busy={}, per_route=9
                )
                await sink.wait_for(1, within=10)  # the old owner's attempt went on
                await eventually(
                    lambda: [e for e in logs if e["event"] == "outbox.lease_lost"], within=5
                )
            finally:
                await worker.stop(1.0)
                await task
    refused = [e for e in logs if e["event"] == "outbox.update_failed"]
    assert refused
    assert {e["error"] for e in refused} == {"database is locked (test)"}
    (lost,) = [e for e in logs if e["event"] == "outbox.lease_lost"]
    assert (lost["during"], lost["outcome"], lost["reply_code"]) == ("recording", "delivered", 250)
    # The mail went out (that is the window a lost lease leaves), but the store says what the
    # new owner's attempt will: in flight, its lease, no attempt of the old owner's.
    (job,) = gw.jobs(reference=reference)
    assert job.id == taken.id
    assert (job.state, job.attempts) == (JobState.IN_FLIGHT, 0)
    assert gw.attempts(job.id) == []
    assert not [e for e in logs if e["event"] == "delivery.succeeded"]
