"""`gateway queue` next to Postfix's tools (issue 11, item 10): the CLI as a process on a real
store file; a real serving gateway delivering to a real SMTP sink while an operator holds,
releases and flushes its jobs; and the hold's lease safety on the store's own outbox."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.cli import main
from gateway.clock import make_clock
from gateway.ops.queue import QueueRequest, run_queue
from gateway.store.db import connect
from gateway.store.outbox import Attempt as JobAttempt  # the serve harness has an Attempt
from gateway.store.outbox import (
    Job,
    JobState,
    Outbox,
    find_jobs,
    read_job,
)
from gateway.store.queueactions import (
    JobFilter,
    QueueAction,
    change_jobs,
)
from tests.conftest import Gateway, GatewayFactory
from tests.polling import eventually
from tests.sink import Sink, start_sink
from tests.test_delivery import WorkerFactory, file_a_filing, smarthost
from tests.test_delivery import run_worker as run_worker  # a fixture, shared
from tests.test_delivery_process import smarthost_config
from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    Attempt,
    child_environment,
    database,
    read_store,
    send_batch,
    serving,
    smtp_session,
)

GREYLISTED = "451 4.3.0 Greylisted, try again"
SENDERS = ("first@lawfirm.example", "second@lawfirm.example", "third@lawfirm.example")


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str


async def queue_cli(config: Path, *args: str) -> Run:
    """`gateway queue ARGS` as a process, without blocking the loop the sink answers on."""
    return await gateway_cli(config, "queue", *args)


async def gateway_cli(config: Path, *args: str, env: Mapping[str, str] | None = None) -> Run:
    """`gateway ARGS --config CONFIG` as a process from the config's directory, with no
    GATEWAY_* setting but `env`'s, without blocking the loop the sink answers on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_environment(**(env or {})),
        cwd=config.parent,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def job(tmp_path: Path, job_id: int) -> Job:
    found = read_store(database(tmp_path), lambda conn: read_job(conn, job_id))
    assert found is not None
    return found


def in_state(tmp_path: Path, state: JobState) -> list[Job]:
    def query(conn: sqlite3.Connection) -> list[Job]:
        return find_jobs(conn, state=state)

    return read_store(database(tmp_path), query)


def config_with(tmp_path: Path, sink: Sink, *, retry: str) -> Path:
    config = smarthost_config(tmp_path, sink.port)
    text = config.read_text(encoding="utf-8").replace("retry_schedule = [0.5]", retry)
    config.write_text(text, encoding="utf-8")
    return config


async def deferred_store(tmp_path: Path) -> Path:
    """A store whose three notice jobs (one per sender) were each deferred for an hour by a
    real smarthost; the gateway has stopped. Returns the config."""
    sink = await start_sink(replies=[GREYLISTED] * len(SENDERS))
    config = config_with(tmp_path, sink, retry="retry_schedule = [3600]")
    try:
        async with serving(config, as_of=AFTER_CUTOFF) as served:
            async with smtp_session(served.port) as client:
                await send_batch(client, [Attempt(n, s, RETIRED) for n, s in enumerate(SENDERS)])
            await eventually(lambda: len(in_state(tmp_path, JobState.DEFERRED)) == 3, within=30)
            assert await served.gateway.stop() == 0
    finally:
        sink.close()
    return config


def job_of(tmp_path: Path, sender: str) -> int:
    jobs = read_store(database(tmp_path), find_jobs)
    return next(j.id for j in jobs if j.recipients == (sender,))


# ---------------------------------------------------------------------------------------------
# The CLI on a store file


async def test_list_shows_what_is_still_to_be_sent_unless_asked_for_more(tmp_path: Path) -> None:
    config = await deferred_store(tmp_path)
    first, second = job_of(tmp_path, SENDERS[0]), job_of(tmp_path, SENDERS[1])
    deleted = await queue_cli(config, "delete", str(first))
    held = await queue_cli(config, "hold", str(second))

    pending = await queue_cli(config, "list")
    every = await queue_cli(config, "list", "--all")
    only_held = await queue_cli(config, "list", "--state", "held")
    by_recipient = await queue_cli(config, "list", "--recipient", SENDERS[2].upper())
    relays = await queue_cli(config, "list", "--kind", "relay")
    future = await queue_cli(config, "list", "--since", "2999-01-01")
    past = await queue_cli(config, "list", "--since", "2000-01-01T00:00:00", "--state=deferred")
    bad = await queue_cli(config, "list", "--state", "stuck")

    assert deleted.out == f"job {first}: deleted (kept as evidence)\n"
    assert held.out == f"job {second}: held (not sent until released)\n"
    assert "2 jobs, 2 waiting" in pending.out  # like mailq: the deleted job is history
    assert SENDERS[0] not in pending.out
    assert "held" in pending.out
    assert "3 jobs, 2 waiting" in every.out
    assert "deleted" in every.out
    assert "1 jobs, 1 waiting" in only_held.out
    assert SENDERS[1] in only_held.out
    assert "1 jobs" in by_recipient.out
    assert SENDERS[2] in by_recipient.out
    assert relays.out == "no jobs match\n"
    assert future.out == "no jobs match\n"
    assert "1 jobs, 1 waiting" in past.out
    assert bad.code == 2
    assert "unknown state 'stuck'" in bad.err


async def test_hold_and_release_keep_a_jobs_place_in_the_retry_schedule(tmp_path: Path) -> None:
    config = await deferred_store(tmp_path)
    before = job(tmp_path, 1)
    held = await queue_cli(config, "hold", "1")
    again = await queue_cli(config, "hold", "1")
    middle = job(tmp_path, 1)
    released = await queue_cli(config, "release", "1")
    after = job(tmp_path, 1)

    assert (held.code, middle.state) == (0, JobState.HELD)
    assert (again.code, again.err) == (
        1,
        "gateway: job 1 not found, or not queued, deferred or in flight\n",
    )
    assert released.out == "job 1: released\n"
    # Tried once, so back to deferred with its next attempt where it was (postsuper -H).
    assert after.state == JobState.DEFERRED
    assert after.next_attempt_at == before.next_attempt_at


async def test_bulk_delete_by_filter_needs_yes_and_says_how_many(tmp_path: Path) -> None:
    config = await deferred_store(tmp_path)
    unconfirmed = await queue_cli(config, "delete", "--state", "deferred")
    still = in_state(tmp_path, JobState.DEFERRED)
    confirmed = await queue_cli(config, "delete", "--state", "deferred", "--yes")
    nothing = await queue_cli(config, "delete")

    assert unconfirmed.code == 1
    assert "3 jobs match (1, 2, 3); nothing deleted" in unconfirmed.err
    assert len(still) == 3
    assert confirmed.code == 0
    assert confirmed.out.splitlines()[-1].startswith("3 jobs deleted")
    assert {j.id for j in in_state(tmp_path, JobState.DELETED)} == {1, 2, 3}
    assert nothing.code == 2  # no ID, no filter: never "everything" by accident
    assert "needs job IDs, a filter" in nothing.err


async def test_bulk_retry_by_recipient_makes_only_that_job_due(tmp_path: Path) -> None:
    config = await deferred_store(tmp_path)
    target = job_of(tmp_path, SENDERS[1])
    retried = await queue_cli(config, "retry", "--recipient", SENDERS[1])

    assert retried.out.splitlines() == [
        f"job {target}: queued for delivery now",
        "1 jobs retried (of those queued, deferred or failed)",
    ]
    assert [j.id for j in in_state(tmp_path, JobState.QUEUED)] == [target]
    assert len(in_state(tmp_path, JobState.DEFERRED)) == 2


async def test_show_message_prints_the_notice_as_it_would_be_sent(tmp_path: Path) -> None:
    config = await deferred_store(tmp_path)
    target = job_of(tmp_path, SENDERS[0])
    shown = await queue_cli(config, "show-message", str(target))
    also = await queue_cli(config, "show", str(target), "--message")
    missing = await queue_cli(config, "show-message", "99")

    assert shown.code == 0, shown.err
    mail = message_from_bytes(shown.out.encode())
    assert mail["To"] is not None
    assert SENDERS[0] in mail["To"]
    assert mail["References"] == "<0.serve-test@lawfirm.example>"
    assert mail["DKIM-Signature"] is not None  # signed with the key the gateway made
    assert message_from_bytes(also.out.encode())["References"] == mail["References"]
    assert (missing.code, missing.err) == (1, "gateway: no job 99\n")


# ---------------------------------------------------------------------------------------------
# Beside a serving gateway and a real smarthost


async def test_a_held_job_is_not_sent_and_a_released_one_is(tmp_path: Path) -> None:
    # The first DATA hangs, so the job is in flight when it is held, then answers 451; with a
    # half-second retry the job would be due again at once, were it not held.
    sink = await start_sink(replies=[GREYLISTED])
    sink.stall_s = 4.0
    config = config_with(tmp_path, sink, retry="retry_schedule = [0.5]")
    try:
        async with serving(config, as_of=AFTER_CUTOFF) as served:
            async with smtp_session(served.port) as client:
                await send_batch(client, [Attempt(1, SENDERS[0], RETIRED)])
            await eventually(lambda: sink.attempts == 1, within=20)
            held = await queue_cli(config, "hold", "1")
            sink.stall_s = 0.0
            # The attempt under way finishes (deferred) and the job stays held: lease-safe.
            await eventually(lambda: job(tmp_path, 1).attempts == 1, within=20)
            # Absence can only be shown by waiting: many polls (0.05 s) past its due time.
            await asyncio.sleep(3.0)
            while_held = (sink.attempts, job(tmp_path, 1).state)
            released = await queue_cli(config, "release", "1")
            await sink.wait_for(1, within=20)
            await eventually(lambda: job(tmp_path, 1).state == JobState.DELIVERED, within=20)
            events = await served.gateway.event("outbox.released")
            assert await served.gateway.stop() == 0
            hold_event = served.gateway.find("outbox.held")
    finally:
        sink.close()

    assert held.out == "job 1: held (not sent until released)\n"
    assert while_held == (1, JobState.HELD)
    assert released.out == "job 1: released\n"
    assert SENDERS[0] in sink.accepted[0].recipients
    assert hold_event is not None
    assert (hold_event["jobs"], hold_event["count"], hold_event["filter"]) == ([1], 1, {"ids": [1]})
    assert hold_event["operator"]
    assert events["jobs"] == [1]


async def test_flush_sends_a_deferred_job_at_once(tmp_path: Path) -> None:
    sink = await start_sink(replies=[GREYLISTED])
    config = config_with(tmp_path, sink, retry="retry_schedule = [3600]")
    try:
        async with serving(config, as_of=AFTER_CUTOFF) as served:
            async with smtp_session(served.port) as client:
                await send_batch(client, [Attempt(1, SENDERS[0], RETIRED)])
            await eventually(lambda: in_state(tmp_path, JobState.DEFERRED), within=20)
            waiting = await queue_cli(config, "list")
            flushed = await queue_cli(config, "flush")
            await sink.wait_for(1, within=20)  # not in an hour: now
            await eventually(lambda: job(tmp_path, 1).state == JobState.DELIVERED, within=20)
            event = await served.gateway.event("outbox.flushed")
            empty = await queue_cli(config, "list")
            history = await queue_cli(config, "list", "--all")
            assert await served.gateway.stop() == 0
    finally:
        sink.close()

    assert "1 jobs, 1 waiting" in waiting.out
    assert flushed.out == "job 1: due now\n1 jobs flushed (of those deferred)\n"
    assert (event["jobs"], event["count"]) == ([1], 1)
    assert empty.out == "queue is empty\n"
    assert "delivered" in history.out


async def test_a_hold_on_a_store_no_worker_has_polled_is_kept_and_logged(
    start_gateway: GatewayFactory, run_worker: WorkerFactory
) -> None:
    # A hold taken before any worker has polled the store: the worker finds the journalled
    # action at its first look and logs it.
    sink = await start_sink()
    try:
        gw = await start_gateway(delivery=smarthost(sink))
        await file_a_filing(gw)
        (queued,) = gw.jobs(state="queued")
        out, err = io.StringIO(), io.StringIO()
        request = QueueRequest("hold", (queued.id,))
        code = run_queue(gw.settings, request, clock=make_clock(None), out=out, err=err)
        with capture_logs() as logs:
            await run_worker(gw)
            held = await eventually(lambda: [e for e in logs if e["event"] == "outbox.held"])
            await asyncio.sleep(1.0)  # twenty polls: a due job would have been sent by now
    finally:
        sink.close()

    assert (code, err.getvalue()) == (0, "")
    assert sink.attempts == 0
    assert gw.jobs(state="held") != []
    assert held[0]["jobs"] == [queued.id]
    assert held[0]["filter"] == {"ids": [queued.id]}


def operator(gw_database: Path, action: QueueAction, job_id: int) -> list[int]:
    with contextlib.closing(connect(gw_database)) as conn:
        return change_jobs(
            conn, action, JobFilter(ids=(job_id,)), now=datetime.now(UTC), operator="test"
        )


async def test_holding_a_job_in_flight_takes_effect_after_its_attempt(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway()
    await file_a_filing(gw)
    outbox = Outbox(gw.store, owner="worker-1")
    now = gw.clock()
    (leased,) = await outbox.claim(now, limit=1, lease_s=600, busy={}, per_route=1)
    database = gw.settings.storage.database

    assert operator(database, QueueAction.HOLD, leased.id) == [leased.id]
    # Released while its attempt is still out: back to that attempt, not to the queue.
    assert operator(database, QueueAction.RELEASE, leased.id) == [leased.id]
    assert gw.jobs(state="in-flight") != []
    assert operator(database, QueueAction.HOLD, leased.id) == [leased.id]
    assert operator(database, QueueAction.DELETE, leased.id) == []  # not while it is out
    assert await outbox.claim(now, limit=1, lease_s=600, busy={}, per_route=1) == []

    greylisted = JobAttempt(now, now, "mx.lawfirm.example", 451, "try later", JobState.DEFERRED)
    await outbox.finish(leased, greylisted, next_attempt_at=now)
    after = read_job_of(gw, leased.id)
    assert (after.state, after.attempts) == (JobState.HELD, 1)  # deferred, and still held
    assert await outbox.claim(now, limit=1, lease_s=600, busy={}, per_route=1) == []
    assert operator(database, QueueAction.RELEASE, leased.id) == [leased.id]
    assert read_job_of(gw, leased.id).state == JobState.DEFERRED
    (again,) = await outbox.claim(now, limit=1, lease_s=600, busy={}, per_route=1)
    assert again.id == leased.id


async def test_a_job_held_in_flight_stays_held_when_the_worker_gives_it_back(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway()
    await file_a_filing(gw)
    outbox = Outbox(gw.store, owner="worker-1")
    (leased,) = await outbox.claim(gw.clock(), limit=1, lease_s=600, busy={}, per_route=1)
    operator(gw.settings.storage.database, QueueAction.HOLD, leased.id)
    await outbox.release(leased, gw.clock())  # shutdown: the attempt did not run
    assert read_job_of(gw, leased.id).state == JobState.HELD
    assert await Outbox(gw.store, owner="worker-2").recover() == 0  # a restart leaves it held
    assert read_job_of(gw, leased.id).state == JobState.HELD


def read_job_of(gw: Gateway, job_id: int) -> Job:
    found = gw.read(lambda conn: read_job(conn, job_id))
    assert found is not None
    return found


async def test_the_same_commands_through_main_in_this_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = await deferred_store(tmp_path)
    capsys.readouterr()

    def gateway(*args: str) -> tuple[int, str, str]:
        code = main(["queue", *args, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err

    since = gateway("list", "--since", "2000-01-01", "--recipient", SENDERS[0], "--kind=notice")
    bad_since = gateway("list", "--since", "last tuesday")
    guard = gateway("delete", "--recipient", SENDERS[2])
    held = gateway("hold", "--all")
    released = gateway("release", "1", "2", "99")
    two_ids = gateway("show", "1", "2")
    shown = gateway("show-message", "1")

    assert since[0] == 0
    assert "1 jobs, 1 waiting" in since[1]
    assert bad_since[0] == 2
    assert "is not a date" in bad_since[2]
    assert guard[0] == 1
    assert "1 jobs match (3); nothing deleted" in guard[2]
    assert held[1].splitlines()[-1] == "3 jobs held (of those queued, deferred or in flight)"
    assert released[0] == 1  # one of the IDs could not be released
    assert released[1] == "job 1: released\njob 2: released\n"
    assert released[2] == "gateway: job 99 not found, or not held\n"
    assert two_ids[0] == 2
    assert "needs one job ID" in two_ids[2]
    assert shown[0] == 0
    assert "References: <0.serve-test@lawfirm.example>" in shown[1]
