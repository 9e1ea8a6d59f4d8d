"""Outbox.recover() at a worker's start: it frees only leases no live process holds.

Alone on the store, every other owner's lease is stale (the single-process gateway). Beside
other workers (`[server] workers` above 1), only those of this worker slot's earlier lives
are: a sibling's lease is an attempt under way, and freeing it would send the job twice.
"""

from __future__ import annotations

import pytest

from gateway.store.outbox import Job, Outbox, read_job
from gateway.vocabulary import JobState
from tests.conftest import Gateway, GatewayFactory
from tests.smtpclient import message
from tests.test_delivery import file_a_filing

LEASE_S = 600.0


async def leased_by(gw: Gateway, owner: str) -> Job:
    """A new filing's notice job, leased to `owner` (an attempt under way)."""
    # A filing of its own each time: the same one again would be a duplicate, with no notice.
    await file_a_filing(gw, content=message(message_id=f"<filing-for-{owner}@lawfirm.example>"))
    outbox = Outbox(gw.store, owner=owner)
    (job,) = await outbox.claim(gw.clock(), limit=1, lease_s=LEASE_S, busy={}, per_route=1)
    return job


def state_of(gw: Gateway, job: Job) -> JobState:
    found = gw.read(lambda conn: read_job(conn, job.id))
    assert found is not None
    return found.state


async def test_a_worker_restarting_takes_back_its_own_earlier_lives_leases_only(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway()
    mine_before = await leased_by(gw, "mx/worker-1/4101:7f00")  # worker 1, killed
    sibling = await leased_by(gw, "mx/worker-2/4102:7f00")  # worker 2, alive, sending
    restarted = Outbox(gw.store, owner="mx/worker-1/4242:7f00", incarnations="mx/worker-1/")

    assert await restarted.recover() == 1

    assert state_of(gw, mine_before) == JobState.QUEUED  # sent again, by whoever claims it
    assert state_of(gw, sibling) == JobState.IN_FLIGHT  # its attempt goes on, not twice


@pytest.mark.parametrize("other", ["mx:4101:7f00", "mx/worker-1/4101:7f00"])
async def test_a_single_process_takes_back_every_other_owners_lease(
    start_gateway: GatewayFactory, other: str
) -> None:
    # One serving process on the store: whoever else leased a job is gone.
    gw = await start_gateway()
    job = await leased_by(gw, other)
    assert await Outbox(gw.store, owner="mx:4242:7f00").recover() == 1
    assert state_of(gw, job) == JobState.QUEUED


async def test_a_worker_slot_prefix_does_not_match_a_longer_slot_number(
    start_gateway: GatewayFactory,
) -> None:
    # worker-1's prefix ends with its separator, so worker-10's leases are not its own.
    gw = await start_gateway()
    tenth = await leased_by(gw, "mx/worker-10/4110:7f00")
    first = Outbox(gw.store, owner="mx/worker-1/4242:7f00", incarnations="mx/worker-1/")
    assert await first.recover() == 0
    assert state_of(gw, tenth) == JobState.IN_FLIGHT
