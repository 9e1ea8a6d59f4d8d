"""The operator commands' store on both backends: `gateway queue` (interface.OperatorQueue)
and `gateway postmaster` (interface.PostmasterBox), through store/backend.py as the commands
open them, beside stores ("nodes") that record, claim and finish jobs (the `backend` fixture of
test_store_contract.py). The PostgreSQL-only part is how a change meets a node's transaction
on the same job: it waits for it, then sees what the node did, and gives up in time."""

from __future__ import annotations

import asyncio
import io
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.clock import make_clock
from gateway.config import GatewaySettings, load_settings
from gateway.errors import StoreError
from gateway.ops.queue import QueueRequest, run_queue
from gateway.smtp.postmaster import PostmasterRequest, forward_jobs, run_postmaster
from gateway.store.backend import StoreLocation, open_postmaster, open_queue
from gateway.store.interface import OperatorQueue, PostmasterBox
from gateway.store.messages import RecipientRecord
from gateway.store.outbox import Attempt
from gateway.store.postgres.operator import PgQueue
from gateway.store.postgres.outbox import PgOutbox
from gateway.store.postgres.store import PgStore
from gateway.store.queueactions import JobFilter, QueueAction, lease_node
from gateway.store.schema import SchemaTooNewError
from gateway.vocabulary import JobKind, JobState
from tests.postgres import PostgresServer, postgres
from tests.test_serve_process import write_config

# NOW: the contract's records (relay_record) arrive then; a clock of our own, read when this
# module is imported, would drift from it by however long collection took.
from tests.test_store_contract import BOUND_S, NOW, Backend, backend, relay_record

__all__ = ["backend", "postgres"]

T = TypeVar("T")


class _Closes(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closes)  # a store view opened for one command

_databases = itertools.count(1)
OPERATOR = "ops@agency.example"


def location(backend: Backend, node: str = "ops1") -> StoreLocation:
    return StoreLocation(backend.path or Path("unused"), node, backend.dsn)


async def operate(backend: Backend, work: Callable[[OperatorQueue], T]) -> T:
    """One operator command's work on a queue of its own, in a thread (it blocks)."""
    return await asyncio.to_thread(
        _closing, lambda: open_queue(location(backend), writable=True), work
    )


async def in_box(backend: Backend, work: Callable[[PostmasterBox], T]) -> T:
    """One `gateway postmaster` command's work, as operate()."""
    return await asyncio.to_thread(
        _closing, lambda: open_postmaster(location(backend), writable=True), work
    )


def _closing(opened: Callable[[], C], work: Callable[[C], T]) -> T:
    view = opened()
    try:
        return work(view)
    finally:
        view.close()


def change(action: QueueAction, *ids: int) -> Callable[[OperatorQueue], list[int]]:
    def work(queue: OperatorQueue) -> list[int]:
        return queue.change_jobs(action, JobFilter(ids=ids), now=NOW, operator="alice")

    return work


def settings_for(backend: Backend, tmp_path: Path) -> GatewaySettings:
    """The operator's config on that store: the file in tmp_path/state, or the shared URL
    (its password from the environment, as the config file may not hold one)."""
    config = write_config(tmp_path, name="operator.toml")
    environ = {"GATEWAY_SERVER__NODE": "ops1"}
    if backend.dsn is not None:
        parts = conninfo_to_dict(backend.dsn)
        environ["GATEWAY_STORAGE__PASSWORD"] = str(parts.pop("password"))
        text = config.read_text(encoding="utf-8")
        url = make_conninfo("", **parts)
        config.write_text(text.replace("[storage]\n", f'[storage]\nurl = "{url}"\n', 1))
    return load_settings(config, environ)


def queue_command(settings: GatewaySettings, action: str, *ids: int) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    request = QueueRequest(action, ids, every=action == "list")
    code = run_queue(settings, request, clock=make_clock(None), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def cell(header: str, row: str, column: str) -> str:
    """The value in `row` of the table's `column` (the cells line up under their names)."""
    return row[header.index(f" {column} ") + 1 :].split()[0]


async def leased_by_mx2(backend: Backend, *, jobs: int = 2) -> list[int]:
    """A filing recorded through mx1 with `jobs` relay jobs, the first leased by mx2's worker;
    returns the jobs' ids."""
    mx1, mx2 = await backend.open_store("mx1"), await backend.open_store("mx2")
    record = relay_record(jobs=jobs)
    async with asyncio.timeout(BOUND_S):
        await mx1.record_message(record)
        outbox = backend.outbox(mx2, "mx2:4242:1")
        await outbox.claim(NOW, limit=1, lease_s=300, busy={}, per_route=9)
        return [job.id for job in await backend.jobs(mx1, record.reference)]


@pytest.mark.parametrize(
    ("owner", "node"),
    [
        ("mx2:4242:7f3a", "mx2"),  # one serving process
        ("mx2/w1/4242:7f3a", "mx2"),  # a supervisor's worker slot
        ("mx-occ.agency.example:17:ab", "mx-occ.agency.example"),  # named by its FQDN
    ],
)
def test_a_lease_owner_names_its_node(owner: str, node: str) -> None:
    assert lease_node(owner) == node


# -- gateway queue ---------------------------------------------------------------------------


async def test_the_listing_names_who_queued_each_job_and_whose_attempt_is_out(
    backend: Backend,
) -> None:
    first, second = await leased_by_mx2(backend)
    listed = await operate(backend, lambda queue: queue.list_jobs(JobFilter()))
    one = await operate(backend, lambda queue: queue.read_job(first))
    missing = await operate(backend, lambda queue: queue.read_job(first + 99))

    assert [(q.job.id, q.job.state) for q in listed] == [
        (first, JobState.IN_FLIGHT),
        (second, JobState.QUEUED),
    ]
    # The shared store says which node queued a job; the SQLite file has only its own.
    queued_on = "mx1" if backend.dsn is not None else None
    assert [q.node for q in listed] == [queued_on, queued_on]
    assert [q.lease_owner for q in listed] == ["mx2:4242:1", None]
    leased = listed[0]
    assert leased.lease_owner is not None
    assert lease_node(leased.lease_owner) == "mx2"
    assert leased.lease_until is not None
    assert leased.lease_until > NOW
    assert one == leased
    assert missing is None


async def test_queue_list_and_show_name_the_nodes_on_a_shared_store(
    backend: Backend, tmp_path: Path
) -> None:
    first, _ = await leased_by_mx2(backend)
    settings = settings_for(backend, tmp_path)
    code, listed, err = await asyncio.to_thread(queue_command, settings, "list")
    _, shown, _ = await asyncio.to_thread(queue_command, settings, "show", first)

    assert (code, err) == (0, "")
    header, leased, queued = listed.splitlines()[:3]
    if backend.dsn is None:
        assert "NODE" not in header
        assert "attempt out: mx2:4242:1 (lease until" in shown
        return
    assert header.split()[7:9] == ["NODE", "LEASE"]  # after NEXT (UTC)
    assert [cell(header, leased, "NODE"), cell(header, leased, "LEASE")] == ["mx1", "mx2"]
    assert [cell(header, queued, "NODE"), cell(header, queued, "LEASE")] == ["mx1", "-"]
    assert "queued on: mx1" in shown
    assert "attempt out: mx2:4242:1 (lease until" in shown


async def test_a_hold_on_a_job_in_flight_on_another_node_waits_for_its_attempt(
    backend: Backend, tmp_path: Path
) -> None:
    (first,) = await leased_by_mx2(backend, jobs=1)
    mx2 = backend.opened[1]
    outbox = backend.outbox(mx2, "mx2:4242:1")
    (job,) = [q.job for q in await operate(backend, lambda q: q.list_jobs(JobFilter()))]

    assert await operate(backend, change(QueueAction.HOLD, first)) == [first]
    # A dry run counts what the change would do: held, but still out on its attempt.
    matched = await operate(backend, lambda q: q.matching_jobs(QueueAction.DELETE, JobFilter()))
    assert matched == []
    assert await operate(backend, change(QueueAction.DELETE, first)) == []  # still out
    refused = await asyncio.to_thread(
        queue_command, settings_for(backend, tmp_path), "delete", first
    )
    later = NOW + timedelta(minutes=5)
    async with asyncio.timeout(BOUND_S):
        assert await outbox.claim(later, limit=1, lease_s=300, busy={}, per_route=9) == []
        greylisted = Attempt(NOW, NOW, "legacy.example", 451, "4.3.0 later", JobState.DEFERRED)
        await outbox.finish(job, greylisted, next_attempt_at=NOW)
        assert await outbox.claim(later, limit=1, lease_s=300, busy={}, per_route=9) == []
    held = await operate(backend, lambda queue: queue.read_job(first))
    tried = await operate(backend, lambda queue: queue.job_attempts(first))
    assert await operate(backend, change(QueueAction.RELEASE, first)) == [first]
    async with asyncio.timeout(BOUND_S):
        (again,) = await outbox.claim(later, limit=1, lease_s=300, busy={}, per_route=9)

    assert refused[0] == 1
    assert f"job {first} not deleted: its attempt is under way on mx2" in refused[2]
    assert held is not None
    assert (held.job.state, held.job.attempts, held.lease_owner) == (JobState.HELD, 1, None)
    assert [replace(t, node=None) for t in tried] == [greylisted]
    assert [t.node for t in tried] == ["mx2" if backend.dsn else None]
    assert again.id == first


async def test_an_operators_action_is_logged_once_by_one_of_the_nodes(backend: Backend) -> None:
    first, second = await leased_by_mx2(backend)
    held = await operate(backend, change(QueueAction.HOLD, first, second))
    mx1, mx2 = backend.opened
    polls = [backend.outbox(mx1, "mx1:1:1"), backend.outbox(mx2, "mx2:4242:1")]
    async with asyncio.timeout(BOUND_S):
        taken = await asyncio.gather(*(outbox.take_operator_actions(NOW) for outbox in polls))
        again = await asyncio.gather(*(outbox.take_operator_actions(NOW) for outbox in polls))

    assert held == [first, second]
    (action,) = [a for actions in taken for a in actions]
    assert (action.action, action.operator, action.job_ids) == (
        QueueAction.HOLD,
        "alice",
        (first, second),
    )
    assert action.filter == {"ids": [first, second]}
    assert again == [[], []]


async def test_the_filters_pick_the_same_jobs_on_both_backends(backend: Backend) -> None:
    first, second = await leased_by_mx2(backend)

    def pick(queue: OperatorQueue) -> dict[str, list[int]]:
        filters = {
            "all": JobFilter(),
            "recipient": JobFilter(recipient="CLERK1@occ.example"),
            "state": JobFilter(states=("queued", "deferred")),
            "kind": JobFilter(kinds=(JobKind.NOTICE,)),
            "since": JobFilter(since=NOW + timedelta(days=1)),
            "ids": JobFilter(ids=(second, 999)),
        }
        return {name: [q.job.id for q in queue.list_jobs(f)] for name, f in filters.items()}

    found = await operate(backend, pick)
    deletable = await operate(
        backend, lambda q: q.matching_jobs(QueueAction.DELETE, JobFilter(states=("in-flight",)))
    )
    assert found == {
        "all": [first, second],
        "recipient": [second],
        "state": [second],
        "kind": [],
        "since": [],
        "ids": [second],
    }
    assert deletable == []  # in-flight is not a state delete applies to: nothing, not all


async def test_a_change_to_a_store_of_a_newer_version_is_refused_and_changes_nothing(
    backend: Backend,
) -> None:
    first, _ = await leased_by_mx2(backend)
    if backend.dsn is None:
        assert backend.path is not None
        with closing(sqlite3.connect(backend.path)) as conn, conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    else:
        with psycopg.connect(backend.dsn, autocommit=True) as shared:
            shared.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(SchemaTooNewError, match="version 99"):
        await operate(backend, change(QueueAction.HOLD, first))
    still = await operate(backend, lambda queue: queue.read_job(first))
    assert still is not None
    assert still.job.state == JobState.IN_FLIGHT


# -- gateway postmaster ----------------------------------------------------------------------


async def test_postmaster_mail_is_listed_shown_and_forwarded_on_both_backends(
    backend: Backend, tmp_path: Path
) -> None:
    mx2 = await backend.open_store("mx2")
    to_postmaster = RecipientRecord(
        "postmaster@occ.example", "postmaster", "accept", "postmaster", NOW
    )
    record = replace(relay_record(jobs=0), recipients=(to_postmaster,), raw=b"Subject: hi\r\n\r\nx")
    other = relay_record()  # to a retired address: not postmaster's
    async with asyncio.timeout(BOUND_S):
        await mx2.record_message(record)
        await mx2.record_message(other)
    settings = settings_for(backend, tmp_path)
    forwards = forward_jobs([OPERATOR])

    later = NOW + timedelta(hours=1)
    before = await in_box(backend, lambda box: box.find_mail(since=None, limit=10))
    newer = await in_box(backend, lambda box: box.find_mail(since=later, limit=10))
    ids = await in_box(backend, lambda box: box.queue_forward(record.reference, forwards, later))
    none = await in_box(
        backend, lambda box: box.queue_forward("20170913-NOSUCHREFERENC", forwards, NOW)
    )
    after = await in_box(backend, lambda box: box.read_mail(record.reference))
    raw = await in_box(backend, lambda box: box.read_raw(record.reference))
    out, err, data = io.StringIO(), io.StringIO(), io.BytesIO()
    shown = run_postmaster(
        settings.postmaster,
        PostmasterRequest("show", reference=record.reference),
        store=StoreLocation.from_settings(settings),
        now=NOW,
        out=out,
        out_bytes=data,
        err=err,
    )

    assert [m.reference for m in before] == [record.reference]
    assert (before[0].has_raw, before[0].forwards) == (True, ())
    assert newer == []
    assert none == []
    assert raw == record.raw
    assert after is not None
    (job_id,) = ids
    assert after.forwards == ((job_id, "queued", OPERATOR),)
    (forward,) = await backend.jobs(mx2, record.reference)
    # Due at once: at the message's arrival (test_store_contract's NOW, which this module's
    # NOW equals only when both were imported in the same second), before the forward.
    expected = ("forward", "", record.received_at)
    assert (forward.kind, forward.mail_from, forward.next_attempt_at) == expected
    assert (shown, err.getvalue()) == (0, "")
    assert f"forward job {job_id}: queued to {OPERATOR}" in out.getvalue()


# -- PostgreSQL: an operator's change and a node's transaction on the same job ----------------


@pytest.fixture
async def shared(postgres: PostgresServer) -> AsyncIterator[Backend]:
    dsn = await asyncio.to_thread(postgres.create_database, f"operator_{next(_databases)}")
    chosen = Backend("postgres", dsn=dsn)
    try:
        yield chosen
    finally:
        await chosen.close()


def claim_half_way(dsn: str, job_id: int) -> psycopg.Connection[tuple[object, ...]]:
    """A node's claim of `job_id` caught before its COMMIT: the row locked and leased to mx2,
    as postgres/outbox.py's claim leaves it. The caller commits or rolls back."""
    node = psycopg.connect(dsn)
    node.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
    node.execute(
        "UPDATE jobs SET state = 'in-flight', lease_owner = 'mx2:4242:1',"
        " lease_until = now() + interval '5 minutes' WHERE id = %s",
        (job_id,),
    )
    return node


async def test_a_change_waits_for_a_nodes_claim_then_sees_the_job_leased(
    shared: Backend,
) -> None:
    store = await shared.open_store("mx1")
    record = relay_record()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        (job,) = await shared.jobs(store, record.reference)
    assert shared.dsn is not None
    node = claim_half_way(shared.dsn, job.id)
    try:
        deleting = asyncio.create_task(operate(shared, change(QueueAction.DELETE, job.id)))
        holding = asyncio.create_task(operate(shared, change(QueueAction.HOLD, job.id)))
        await asyncio.sleep(1.0)
        waited = (deleting.done(), holding.done())
        node.commit()
        async with asyncio.timeout(BOUND_S):
            deleted, held = await deleting, await holding
    finally:
        node.close()
    after = await operate(shared, lambda queue: queue.read_job(job.id))

    assert waited == (False, False)  # neither went ahead of the claim under way
    # The queued job it would have deleted had become an attempt under way: left alone. The
    # hold applies to a job in flight, and keeps the lease for the attempt's finish().
    assert (deleted, held) == ([], [job.id])
    assert after is not None
    assert (after.job.state, after.lease_owner) == (JobState.HELD, "mx2:4242:1")


async def test_a_change_gives_up_in_time_and_changes_nothing_while_a_node_holds_the_row(
    shared: Backend,
) -> None:
    store = await shared.open_store("mx1")
    assert isinstance(store, PgStore)
    record = relay_record()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        (job,) = await shared.jobs(store, record.reference)
    assert shared.dsn is not None
    dsn = shared.dsn

    def hold() -> list[int]:
        queue = PgQueue(dsn, node="ops1", lock_wait_s=0.5)
        try:
            return queue.change_jobs(
                QueueAction.HOLD, JobFilter(ids=(job.id,)), now=NOW, operator="alice"
            )
        finally:
            queue.close()

    node = claim_half_way(dsn, job.id)
    try:
        with pytest.raises(StoreError, match=r"locked for over 0.5 s; nothing was changed"):
            await asyncio.to_thread(hold)
    finally:
        node.rollback()
        node.close()
    async with asyncio.timeout(BOUND_S):
        journal = await PgOutbox(store, owner="mx1:1:1").take_operator_actions(NOW)
        (unchanged,) = await shared.jobs(store, record.reference)
    assert journal == []
    assert unchanged.state == JobState.QUEUED
