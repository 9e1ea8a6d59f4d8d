"""One store, two backends: the same scenarios against the SQLite Store and the PgStore.

Each test takes `backend`, parametrized over `sqlite` (a file in tmp_path) and `postgres` (a
fresh database on the tests' real PostgreSQL server, tests/postgres.py): what a record,
the notice gate and the outbox promise holds alike on both, including for two stores ("two
nodes") writing at once. The PostgreSQL-only behaviour (restarts, migrations, the server's
settings) is in test_postgres_store.py.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.errors import LeaseLost, StoreError
from gateway.mail.evidence import Attachment, MessageFacts
from gateway.policy.answer import AnswerGroup, AnswerKind, Reply, ReplyKind
from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import Job, NoticeGate, Verdict
from gateway.store import outbox as sqlite_outbox
from gateway.store import queries as sqlite_queries
from gateway.store.db import Store, connect
from gateway.store.messages import (
    JobRecord,
    MessageRecord,
    NoticeCheck,
    RecipientRecord,
    RefusalRecord,
    new_reference,
)
from gateway.store.outbox import Attempt, Outbox
from gateway.store.postgres import queries as pg_queries
from gateway.store.postgres.outbox import PgOutbox
from gateway.store.postgres.store import PgStore
from gateway.store.queries import StoredMessage
from gateway.store.sentmail import describe_sent
from gateway.vocabulary import JobKind, JobState, NoticeStatus, NoticeStatusKind, Outcome
from tests.postgres import PostgresServer, postgres

__all__ = ["AnyStore", "Backend", "filing", "postgres", "relay_record"]

T = TypeVar("T")
BOUND_S = 60.0  # no scenario here takes a tenth of it; a hang fails instead of stalling
OFFICE = "occ-chicago"
SENDER = "attorney@lawfirm.example"
NOW = datetime.now(UTC).replace(microsecond=0)
UNLIMITED = 10**6

AnyStore = Store | PgStore
AnyOutbox = Outbox | PgOutbox
_databases = itertools.count(1)


# -- what a session hands the store --------------------------------------------------------------


def filing(
    *,
    at: datetime = NOW,
    sender: str = SENDER,
    message_id: str | None = None,
    limits: dict[NoticeScope, int] | None = None,
    window: timedelta = timedelta(days=1),
) -> tuple[MessageRecord, NoticeCheck]:
    """A filing to a retired address whose verdict queues a notice, with its notice check."""
    reference = new_reference(at)
    identity = message_id or f"<{reference}@lawfirm.example>"
    notice = Job(JobKind.NOTICE, "", (sender,), OFFICE)
    gate = NoticeGate(
        dedup_key=f"{sender}\n{identity}",
        dedup_since=at - window,
        hour=f"{at.astimezone(UTC):%Y-%m-%dT%H}",
        counters={
            NoticeScope.SENDER: sender,
            NoticeScope.DOMAIN: sender.rpartition("@")[2],
            NoticeScope.CLIENT: "192.0.2.7",
            NoticeScope.TOTAL: "*",
        },
        limits=limits or dict.fromkeys(NoticeScope, UNLIMITED),
    )
    verdict = Verdict(
        decisions=(),
        group=AnswerGroup(AnswerKind.RETIRED, OFFICE),
        reply=Reply(ReplyKind.RETIRED, OFFICE),
        outcome=Outcome.REJECTED,
        notice=NoticeStatus(NoticeStatusKind.QUEUED),
        jobs=(notice,),
        is_sender_authenticated=True,
        gate=gate,
    )
    replies = {r: f"{r.kind} {r.scope or ''} (ref {reference})" for r in verdict.possible_replies()}
    facts = MessageFacts(
        size=2048,
        sha256="ab" * 32,
        message_id=identity,
        subject="Motion to continue",
        date=None,
        from_header=sender,
        attachments=(Attachment("brief.pdf", "application/pdf", 1000),),
        a_numbers=("A123456789",),
    )
    record = MessageRecord(
        reference=reference,
        received_at=at,
        session_id="s1",
        peer_ip="192.0.2.7",
        peer_port=40000,
        helo="mail.lawfirm.example",
        tls="TLSv1.3",
        mail_from=sender,
        facts=facts,
        recipients=(
            RecipientRecord(
                "filings@occ.example", "retired", "reject-after-data", "retired", at, OFFICE
            ),
        ),
        outcome="rejected",
        reply="(not yet settled)",
        notice="queued",
        sender_authenticated=True,
    )
    return record, NoticeCheck(verdict, replies)


def relay_record(*, jobs: int = 1, route: str = "legacy.example:25") -> MessageRecord:
    """A filing relayed to the legacy system: `jobs` relay jobs, no notice gate."""
    record, _ = filing()
    relays = tuple(
        JobRecord(JobKind.RELAY, SENDER, (f"clerk{n}@occ.example",), OFFICE, route)
        for n in range(jobs)
    )
    return replace(record, jobs=relays, raw=b"Subject: x\r\n\r\nbody")


def refusal(at: datetime = NOW) -> RefusalRecord:
    return RefusalRecord(
        new_reference(at), at, "s2", "192.0.2.8", "mail.example", SENDER, "gone@occ.example",
        "gone", "550 5.1.1 gone", OFFICE, "gone",
    )  # fmt: skip


# -- the two backends -----------------------------------------------------------------------------


async def deliver_kept_notice(store: AnyStore, outbox: AnyOutbox, data: bytes) -> tuple[str, int]:
    """A filing recorded and its notice delivered by `outbox`, `data` kept as sent for it in
    the attempt's transaction; the filing's reference and the notice's job."""
    record, check = filing()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record, check)
        (job,) = await outbox.claim(datetime.now(UTC), limit=1, lease_s=60, busy={}, per_route=9)
        now = datetime.now(UTC)
        sent = describe_sent(
            data, job_id=job.id, reference=job.reference, kind=job.kind, sent_at=now
        )
        attempt = Attempt(now, now, "mx.lawfirm.example", 250, "2.0.0 ok", JobState.DELIVERED)
        await outbox.finish(job, attempt, sent=(sent, data))
    return record.reference, job.id


@dataclass
class Backend:
    """Opens stores ("nodes") on one shared record, and reads what they wrote."""

    name: str
    path: Path | None = None  # sqlite
    dsn: str | None = None  # postgres
    opened: list[AnyStore] = field(default_factory=list)

    async def open_store(self, node: str = "mx1") -> AnyStore:
        store: AnyStore = (
            PgStore(self.dsn, node=node, wait_s=2.0) if self.dsn else Store(self._file)
        )
        await store.open()
        self.opened.append(store)
        return store

    def outbox(self, store: AnyStore, owner: str) -> AnyOutbox:
        if isinstance(store, PgStore):
            return PgOutbox(store, owner=owner)
        # Beside other live workers, as `[server] workers` runs them: only this worker's own
        # earlier lives are stale (gateway/store/outbox.py recover()).
        return Outbox(store, owner=owner, incarnations=owner.rpartition(":")[0] + ":")

    async def message(self, store: AnyStore, reference: str) -> StoredMessage | None:
        if isinstance(store, PgStore):
            return await pg_queries.read_message(store, reference)
        return await self._read(lambda c: sqlite_queries.read_message(c, reference))

    async def jobs(self, store: AnyStore, reference: str) -> list[sqlite_outbox.Job]:
        if isinstance(store, PgStore):
            return await pg_queries.find_jobs(store, reference=reference)
        return await self._read(lambda c: sqlite_outbox.find_jobs(c, reference=reference))

    async def refusals(self, store: AnyStore) -> list[RefusalRecord]:
        if isinstance(store, PgStore):
            return await pg_queries.list_refusals(store)
        return await self._read(sqlite_queries.list_refusals)

    async def close(self) -> None:
        for store in self.opened:
            await store.close()

    @property
    def _file(self) -> Path:
        assert self.path is not None
        return self.path

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = connect(self._file, readonly=True)
            try:
                return query(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        chosen = Backend("sqlite", path=tmp_path / "state" / "gateway.sqlite3")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        name = f"contract_{next(_databases)}"
        chosen = Backend("postgres", dsn=await asyncio.to_thread(server.create_database, name))
    try:
        yield chosen
    finally:
        await chosen.close()


# -- records ---------------------------------------------------------------------------------------


async def test_a_record_is_readable_once_the_call_returns(backend: Backend) -> None:
    store = await backend.open_store()
    record = relay_record(jobs=2)
    async with asyncio.timeout(BOUND_S):
        stored = await store.record_message(record)
        read = await backend.message(store, record.reference)
        jobs = await backend.jobs(store, record.reference)
        await store.record_refusal(refused := refusal())
        refusals = await backend.refusals(store)
    assert stored == record
    assert read is not None
    assert (read.reference, read.received_at, read.mail_from) == (
        record.reference,
        record.received_at,
        SENDER,
    )
    assert read.recipients == ("filings@occ.example",)
    assert read.attachments == (Attachment("brief.pdf", "application/pdf", 1000),)
    assert read.a_numbers == ("A123456789",)
    assert (read.sender_authenticated, read.mime_truncated) == (True, False)
    assert [(j.kind, j.state, j.recipients) for j in jobs] == [
        (JobKind.RELAY, JobState.QUEUED, ("clerk0@occ.example",)),
        (JobKind.RELAY, JobState.QUEUED, ("clerk1@occ.example",)),
    ]
    assert refusals == [refused]


async def test_a_reference_recorded_twice_is_refused_with_a_store_error(backend: Backend) -> None:
    store = await backend.open_store()
    record = relay_record()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        with pytest.raises(StoreError):
            await store.record_message(record)
        assert len(await backend.jobs(store, record.reference)) == 1


async def test_the_same_filing_twice_within_the_window_gets_one_notice(backend: Backend) -> None:
    store = await backend.open_store()
    first, first_check = filing(message_id="<motion-1@lawfirm.example>")
    again, again_check = filing(message_id="<motion-1@lawfirm.example>")
    async with asyncio.timeout(BOUND_S):
        one = await store.record_message(first, first_check)
        two = await store.record_message(again, again_check)
        jobs = [await backend.jobs(store, r.reference) for r in (first, again)]
        stored = await backend.message(store, again.reference)
    assert (one.notice, one.duplicate_of) == ("queued", None)
    assert (two.notice, two.duplicate_of) == ("suppressed:duplicate", first.reference)
    assert [[j.kind for j in js] for js in jobs] == [[JobKind.NOTICE], []]
    # The repeat is still refused as any filing is, and recorded as answered.
    assert two.outcome == Outcome.REJECTED
    assert two.reply == again_check.replies[Reply(ReplyKind.RETIRED, OFFICE)]
    assert stored is not None
    assert (stored.notice, stored.duplicate_of) == ("suppressed:duplicate", first.reference)


async def test_the_same_filing_after_the_window_gets_a_notice_again(backend: Backend) -> None:
    store = await backend.open_store()
    later = NOW + timedelta(hours=2)
    first, first_check = filing(message_id="<m@x>", window=timedelta(hours=1))
    again, again_check = filing(message_id="<m@x>", at=later, window=timedelta(hours=1))
    async with asyncio.timeout(BOUND_S):
        await store.record_message(first, first_check)
        two = await store.record_message(again, again_check)
    assert (two.notice, two.duplicate_of, len(two.jobs)) == ("queued", None, 1)


async def test_a_senders_hourly_limit_holds(backend: Backend) -> None:
    store = await backend.open_store()
    limits = {**dict.fromkeys(NoticeScope, UNLIMITED), NoticeScope.SENDER: 3}
    async with asyncio.timeout(BOUND_S):
        stored = [await store.record_message(*filing(limits=limits)) for _ in range(5)]
        other = await store.record_message(*filing(limits=limits, sender="clerk@other.example"))
    assert [s.notice for s in stored] == ["queued"] * 3 + ["suppressed:rate-limit-sender"] * 2
    # A refusal that promises its notice is deferred instead (451), with no job.
    assert [(s.outcome, len(s.jobs)) for s in stored[3:]] == [(Outcome.DEFERRED, 0)] * 2
    assert stored[3].reply.startswith(f"{ReplyKind.RATE_LIMITED} {NoticeScope.SENDER}")
    assert other.notice == "queued"
    for s in stored[3:]:
        assert await backend.jobs(store, s.reference) == []


async def test_the_limit_holds_for_two_nodes_writing_at_once(backend: Backend) -> None:
    nodes = [await backend.open_store("mx1"), await backend.open_store("mx2")]
    limits = {**dict.fromkeys(NoticeScope, UNLIMITED), NoticeScope.SENDER: 5}
    filings = [filing(limits=limits) for _ in range(24)]
    async with asyncio.timeout(BOUND_S):
        stored = await asyncio.gather(
            *(nodes[n % 2].record_message(*f) for n, f in enumerate(filings))
        )
        notices = [
            j
            for s in stored
            for j in await backend.jobs(nodes[0], s.reference)
            if j.kind == JobKind.NOTICE
        ]
    assert sum(s.notice == "queued" for s in stored) == 5
    assert len(notices) == 5


async def test_the_same_filing_to_two_nodes_at_once_gets_one_notice(backend: Backend) -> None:
    nodes = [await backend.open_store("mx1"), await backend.open_store("mx2")]
    filings = [filing(message_id="<same@lawfirm.example>") for _ in range(6)]
    async with asyncio.timeout(BOUND_S):
        stored = await asyncio.gather(
            *(nodes[n % 2].record_message(*f) for n, f in enumerate(filings))
        )
    assert sorted(s.notice for s in stored) == ["queued"] + ["suppressed:duplicate"] * 5
    (first,) = (s.reference for s in stored if s.notice == "queued")
    assert {s.duplicate_of for s in stored if s.notice != "queued"} == {first}


# -- the outbox -----------------------------------------------------------------------------------


async def _queue_relays(
    backend: Backend, store: AnyStore, count: int, *, routes: int = 1
) -> set[int]:
    records = [relay_record(jobs=1, route=f"legacy{n % routes}.example:25") for n in range(count)]
    await asyncio.gather(*(store.record_message(r) for r in records))
    return {j.id for r in records for j in await backend.jobs(store, r.reference)}


async def test_two_outboxes_claiming_at_once_never_get_the_same_job(backend: Backend) -> None:
    nodes = [await backend.open_store("mx1"), await backend.open_store("mx2")]
    outboxes = [backend.outbox(nodes[0], "mx1:1:100"), backend.outbox(nodes[1], "mx2:1:200")]
    taken: list[list[int]] = [[], []]

    async def drain(n: int) -> None:
        for _ in range(100):  # 60 jobs in batches of 4: well under 100 rounds
            jobs = await outboxes[n].claim(
                datetime.now(UTC), limit=4, lease_s=300, busy={}, per_route=1000
            )
            taken[n].extend(j.id for j in jobs)
            if not jobs:
                return
            await asyncio.sleep(0)

    async with asyncio.timeout(BOUND_S):
        queued = await _queue_relays(backend, nodes[0], 60)
        await asyncio.gather(drain(0), drain(1))
    assert len(taken[0]) + len(taken[1]) == len(queued) == 60
    assert set(taken[0]) | set(taken[1]) == queued
    assert not set(taken[0]) & set(taken[1])


async def test_a_claim_keeps_to_the_per_route_limit(backend: Backend) -> None:
    store = await backend.open_store()
    outbox = backend.outbox(store, "mx1:1:100")
    async with asyncio.timeout(BOUND_S):
        await _queue_relays(backend, store, 6, routes=2)
        jobs = await outbox.claim(
            datetime.now(UTC), limit=10, lease_s=300, busy={"legacy0.example:25": 1}, per_route=2
        )
        assert await outbox.claim(NOW, limit=0, lease_s=300, busy={}, per_route=2) == []
    routes = sorted(j.route for j in jobs)
    assert routes == ["legacy0.example:25", "legacy1.example:25", "legacy1.example:25"]


async def test_a_live_lease_is_left_alone_and_an_expired_one_is_taken_over(
    backend: Backend,
) -> None:
    nodes = [await backend.open_store("mx1"), await backend.open_store("mx2")]
    alive, other = backend.outbox(nodes[0], "mx1:1:100"), backend.outbox(nodes[1], "mx2:1:200")
    async with asyncio.timeout(BOUND_S):
        await _queue_relays(backend, nodes[0], 2)
        (held,) = await alive.claim(datetime.now(UTC), limit=1, lease_s=300, busy={}, per_route=9)
        (brief,) = await alive.claim(datetime.now(UTC), limit=1, lease_s=0.2, busy={}, per_route=9)
        # While both leases run, the other node's recovery and claims leave them alone.
        assert await other.recover() == 0
        assert await other.claim(datetime.now(UTC), limit=5, lease_s=60, busy={}, per_route=9) == []
        await asyncio.sleep(0.5)
        await other.recover()
        taken = await other.claim(datetime.now(UTC), limit=5, lease_s=60, busy={}, per_route=9)
    assert [j.id for j in taken] == [brief.id]
    assert held.id != brief.id


async def test_a_renewed_lease_is_left_alone_past_its_first_term(backend: Backend) -> None:
    nodes = [await backend.open_store("mx1"), await backend.open_store("mx2")]
    alive, other = backend.outbox(nodes[0], "mx1:1:100"), backend.outbox(nodes[1], "mx2:1:200")
    async with asyncio.timeout(BOUND_S):
        await _queue_relays(backend, nodes[0], 1)
        (job,) = await alive.claim(datetime.now(UTC), limit=1, lease_s=0.6, busy={}, per_route=9)
        await asyncio.sleep(0.3)
        is_renewed = await alive.renew(job, datetime.now(UTC), lease_s=0.6)
        await asyncio.sleep(0.5)  # 0.8 s since the claim: the first term is over
        assert await other.recover() == 0
        taken = await other.claim(datetime.now(UTC), limit=5, lease_s=60, busy={}, per_route=9)
        await asyncio.sleep(0.5)  # the renewed term is over too: now it is anyone's
        later = await other.claim(datetime.now(UTC), limit=5, lease_s=60, busy={}, per_route=9)
    assert is_renewed
    assert taken == []
    assert [j.id for j in later] == [job.id]


async def test_a_lease_taken_over_is_not_renewed_released_or_overwritten_by_its_old_owner(
    backend: Backend,
) -> None:
    nodes = [await backend.open_store("mx1"), await backend.open_store("mx2")]
    old, new = backend.outbox(nodes[0], "mx1:1:100"), backend.outbox(nodes[1], "mx2:1:200")
    async with asyncio.timeout(BOUND_S):
        record = relay_record()
        await nodes[0].record_message(record)
        (job,) = await old.claim(datetime.now(UTC), limit=1, lease_s=0.2, busy={}, per_route=9)
        await asyncio.sleep(0.4)  # mx1 hangs past its lease; mx2 takes the job over
        (taken,) = await new.claim(datetime.now(UTC), limit=1, lease_s=300, busy={}, per_route=9)
        is_renewed = await old.renew(job, datetime.now(UTC), lease_s=300)
        now = datetime.now(UTC)
        late = Attempt(now, now, "legacy.example", 451, "4.3.0 later", JobState.DEFERRED)
        with pytest.raises(LeaseLost):
            await old.finish(job, late, next_attempt_at=now + timedelta(minutes=5))
        await old.release(job, now)
        (meanwhile,) = await backend.jobs(nodes[0], record.reference)
        sent = Attempt(now, now, "legacy.example", 250, "2.0.0 ok", JobState.DELIVERED)
        await new.finish(taken, sent)
        (after,) = await backend.jobs(nodes[0], record.reference)
    assert taken.id == job.id
    assert not is_renewed
    # mx2's attempt under way is untouched: still in flight, no attempt of mx1's recorded.
    assert (meanwhile.state, meanwhile.attempts, meanwhile.last_reply) == (
        JobState.IN_FLIGHT,
        0,
        None,
    )
    assert (after.state, after.attempts) == (JobState.DELIVERED, 1)
    assert after.last_reply == "legacy.example: 250 2.0.0 ok"


async def test_a_finished_attempt_moves_the_job_and_a_released_job_is_due_again(
    backend: Backend,
) -> None:
    store = await backend.open_store()
    outbox = backend.outbox(store, "mx1:1:100")
    record = relay_record(jobs=2)
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        first, second = await outbox.claim(
            datetime.now(UTC), limit=2, lease_s=300, busy={}, per_route=9
        )
        now = datetime.now(UTC)
        attempt = Attempt(now, now, "legacy.example", 250, "2.0.0 ok", JobState.DELIVERED)
        bounce = await outbox.finish(first, attempt, raw_keep_until=now + timedelta(days=7))
        await outbox.release(second, now)
        jobs = {j.id: j for j in await backend.jobs(store, record.reference)}
        again = await outbox.claim(datetime.now(UTC), limit=5, lease_s=300, busy={}, per_route=9)
    assert bounce is None
    assert (jobs[first.id].state, jobs[first.id].attempts) == (JobState.DELIVERED, 1)
    assert jobs[first.id].last_reply == "legacy.example: 250 2.0.0 ok"
    assert jobs[second.id].state == JobState.QUEUED
    assert [j.id for j in again] == [second.id]


async def test_a_failed_relay_bounces_to_its_authenticated_sender(backend: Backend) -> None:
    store = await backend.open_store()
    outbox = backend.outbox(store, "mx1:1:100")
    record = relay_record()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        (relay,) = await outbox.claim(datetime.now(UTC), limit=1, lease_s=300, busy={}, per_route=9)
        now = datetime.now(UTC)
        failed = Attempt(now, now, "legacy.example", 550, "5.1.1 no such user", JobState.FAILED)
        bounce = await outbox.finish(relay, failed, note="given up", bounce=True)
        jobs = await backend.jobs(store, record.reference)
    assert bounce is not None
    assert bounce.recipient == SENDER
    assert [(j.kind, j.state, j.about_job) for j in jobs] == [
        (JobKind.RELAY, JobState.FAILED, None),
        (JobKind.BOUNCE, JobState.QUEUED, relay.id),
    ]
    assert jobs[0].last_reply == "given up; last: legacy.example: 550 5.1.1 no such user"
    assert jobs[1].id == bounce.job_id


async def test_a_failed_relay_of_an_unauthenticated_sender_bounces_to_no_one(
    backend: Backend,
) -> None:
    store = await backend.open_store()
    outbox = backend.outbox(store, "mx1:1:100")
    record = replace(relay_record(), sender_authenticated=False)
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record)
        (relay,) = await outbox.claim(datetime.now(UTC), limit=1, lease_s=300, busy={}, per_route=9)
        now = datetime.now(UTC)
        failed = Attempt(now, now, "legacy.example", 550, "5.1.1 no such user", JobState.FAILED)
        bounce = await outbox.finish(relay, failed, bounce=True)
        jobs = await backend.jobs(store, record.reference)
    assert bounce is None  # a forged sender would get backscatter
    assert [(j.kind, j.state) for j in jobs] == [(JobKind.RELAY, JobState.FAILED)]
