"""The delivery worker: claim a job, build its mail, send it, record the outcome.

Notices are rendered from the stored record (never from anything kept in memory), signed
with DKIM and sent with the null reverse path to the envelope sender alone. Relays carry the
original message unchanged below a Received header, to the office's legacy host. Retries and
giving up are decided by policy/decision.py; the queue is store/outbox.py; the wire transport.py.

Exactly once, in effect: a job is marked delivered in the one write right after the remote
side's 250, which also keeps a notice's bytes as sent (sentmail.py). A crash between that
250 and that write is the one window in which a mail may go out twice; the lease then
expires (or the next start recovers it) and the job is sent again. A write that fails while
the process lives (a full disk, a locked store) does not open that window: the outcome is
kept in memory and written again until the store takes it, and the worker does not take up
the job meanwhile, however long its lease has run out.

While an attempt composes and sends, the worker renews its lease every third of the lease
(`_KeptLease`), so an attempt may last longer than the lease, and another node or worker
takes the job only once this one stops renewing it (it died, hung, or lost the store for
longer than two renewals). A renewal that finds the lease another owner's stops the attempt;
an outcome that finds it so when recorded is not written over that owner's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TypeVar

import structlog

from gateway.clock import Clock
from gateway.config import DeliverySettings
from gateway.delivery.composer import Composer
from gateway.delivery.transport import Answer, MailSender, OutgoingMail
from gateway.errors import DeliveryDeferred, DeliveryError, LeaseLost, StoreError
from gateway.policy.decision import next_attempt_at
from gateway.store.interface import JobQueue
from gateway.store.messages import iso
from gateway.store.outbox import Attempt, Job, JobState
from gateway.store.queueactions import QueueAction
from gateway.store.sentmail import SentNotice, describe_sent, should_keep
from gateway.vocabulary import JobKind

__all__ = ["RENEW_FRACTION", "DeliveryWorker"]

log = structlog.get_logger()

# An operator's queue action -> its audit event (audit/log.py EVENTS).
_OPERATOR_EVENTS = {
    QueueAction.HOLD: "outbox.held",
    QueueAction.RELEASE: "outbox.released",
    QueueAction.FLUSH: "outbox.flushed",
    QueueAction.RETRY: "outbox.retried",
    QueueAction.DELETE: "outbox.deleted",
}

# Seconds between tries to record an outcome the store refused: the first, and the most.
_RECORD_RETRY_S = (0.5, 5.0)
# A lease is renewed when this much of it has gone: two renewals in a row may fail (the
# store away for a moment) before it runs out.
RENEW_FRACTION = 1 / 3
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Limits:
    concurrency: int
    per_route: int
    lease_s: float
    poll_s: float


class DeliveryWorker:
    """Runs until stop(): claims due jobs within the concurrency limits and delivers them."""

    def __init__(
        self,
        delivery: DeliverySettings,
        outbox: JobQueue,
        composer: Composer,
        sender: MailSender,
        clock: Clock,
        *,
        raw_retention_days: int,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = delivery
        # [storage] raw_retention_days: a relayed message's raw copy is kept this long once
        # its relay is done.
        self.raw_retention = timedelta(days=raw_retention_days)
        self.outbox = outbox
        self.composer = composer
        self.sender = sender
        self.clock = clock
        self.rng = rng or random.Random()
        self.limits = _Limits(
            delivery.concurrency,
            delivery.per_domain_concurrency,
            delivery.lease,
            delivery.poll_interval,
        )
        self._busy: Counter[str] = Counter()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        # time.monotonic() of the last look at the queue, for the health check: a worker that
        # stops looking (a claim that never returns) is wedged even though its task runs.
        self.last_poll = time.monotonic()

    def wake(self) -> None:
        """New work may be due: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        recovered = await self.outbox.recover()
        if recovered:
            log.warning("outbox.recovered", jobs=recovered)
        actions_looked = -math.inf  # time.monotonic() of the last look for operator actions
        while not self._stopping:
            # Cleared before the claim, not after: a slot freed while the claim is under way
            # is filled at once rather than at the next finish or poll.
            self._wake.clear()
            try:
                await self._claim_and_start()
                # After the claim, so that logging never holds up work already due; once a
                # poll, not at every wake (a draining backlog wakes the loop at every finish).
                if time.monotonic() - actions_looked >= self.limits.poll_s:
                    actions_looked = time.monotonic()
                    await self._log_operator_actions()
            except StoreError as exc:
                log.error("outbox.claim_failed", error=str(exc))
            self.last_poll = time.monotonic()
            try:
                async with asyncio.timeout(self.limits.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def stop(self, deadline: float) -> None:
        """Stop claiming; give jobs in flight `deadline` seconds, then put them back."""
        self._stopping = True
        self._wake.set()
        tasks = list(self._in_flight.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.sender.close()
        await asyncio.to_thread(self.composer.close)

    async def _log_operator_actions(self) -> None:
        # `gateway queue` journals its changes in the store; this process holds the audit log,
        # so it writes their events.
        for action in await self.outbox.take_operator_actions(self.clock()):
            log.info(
                _OPERATOR_EVENTS[action.action],
                action_id=action.id,
                operator=action.operator,
                requested_at=action.requested_at.isoformat(),
                jobs=list(action.job_ids),
                count=len(action.job_ids),
                filter=action.filter,
            )

    async def _claim_and_start(self) -> None:
        free = self.limits.concurrency - len(self._in_flight)
        jobs = await self.outbox.claim(
            self.clock(),
            limit=free,
            lease_s=self.limits.lease_s,
            busy=self._busy,
            per_route=self.limits.per_route,
        )
        for job in jobs:
            if self._stopping:
                # stop() began while the claim was under way and waits only for the jobs
                # started before it: this one goes back untouched, to be sent after restart
                # (it would otherwise meet the closed composer and be deferred for it).
                await self.outbox.release(job, self.clock())
                continue
            if job.id in self._in_flight:
                # Its outcome is still being recorded (its lease ran out meanwhile): sending
                # it again would be the duplicate the retried record is there to prevent.
                continue
            self._busy[job.route] += 1
            task = asyncio.create_task(self._attempt(job), name=f"deliver-{job.id}")
            self._in_flight[job.id] = task
            task.add_done_callback(functools.partial(self._finished, job))

    def _finished(self, job: Job, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(job.id, None)
        self._busy[job.route] -= 1
        if self._busy[job.route] <= 0:
            del self._busy[job.route]
        self._wake.set()  # a slot is free

    async def _attempt(self, job: Job) -> None:
        try:
            await self._try(job)
        except StoreError as exc:
            # The outcome could not be recorded: the lease runs out and the job is tried again.
            log.error(
                "outbox.update_failed", job_id=job.id, reference=job.reference, error=str(exc)
            )
        except Exception:  # our bug: the job stays leased, and is tried again when that ends
            log.exception("delivery.crashed", job_id=job.id, reference=job.reference)

    async def _try(self, job: Job) -> None:
        started = self.clock()
        try:
            async with _KeptLease(self.outbox, job, self.clock, lease_s=self.limits.lease_s):
                mail = await self.composer.compose(job, started)
                answer = await self.sender.send(mail)
        except LeaseLost:
            return  # another owner's job now: nothing of ours to record or give back
        except asyncio.CancelledError:
            await asyncio.shield(self.outbox.release(job, self.clock()))
            raise
        except DeliveryError as exc:
            await self._record_failure(job, started, exc)
        except Exception as exc:  # a bug of ours: keep the job, retry later, say so
            log.exception("delivery.crashed", job_id=job.id, reference=job.reference)
            await self._record_failure(job, started, DeliveryDeferred(f"internal error: {exc!r}"))
        else:
            await self._record_success(job, started, answer, mail)

    async def _record_success(
        self, job: Job, started: datetime, answer: Answer, mail: OutgoingMail
    ) -> None:
        attempt = Attempt(
            started, self.clock(), answer.host, answer.code, answer.reply, JobState.DELIVERED
        )
        sent = _kept(job, mail, attempt.finished_at)
        try:
            await self._until_recorded(
                job,
                lambda: self.outbox.finish(
                    job, attempt, raw_keep_until=self._raw_release(job, attempt), sent=sent
                ),
            )
        except LeaseLost:
            _log_lease_lost(job, self.outbox.owner, attempt)
            return
        _log_attempt("delivery.succeeded", job, attempt)

    async def _until_recorded(self, job: Job, write: Callable[[], Awaitable[T]]) -> T:
        """Run `write` until the store takes it: the mail has gone, the job must say so.

        Each failure is logged; stop() gives it the drain time like any job in flight."""
        delay, most = _RECORD_RETRY_S
        while True:
            try:
                return await write()
            except StoreError as exc:
                log.error(
                    "outbox.update_failed", job_id=job.id, reference=job.reference, error=str(exc)
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)

    def _raw_release(self, job: Job, attempt: Attempt) -> datetime | None:
        """When a finished relay's raw copy may go: it is evidence, but not for ever."""
        if job.kind is not JobKind.RELAY or attempt.outcome is JobState.DEFERRED:
            return None
        return attempt.finished_at + self.raw_retention

    async def _record_failure(self, job: Job, started: datetime, error: DeliveryError) -> None:
        finished = self.clock()
        due = None
        if isinstance(error, DeliveryDeferred):
            due = next_attempt_at(
                job.attempts + 1,
                created_at=job.created_at,
                now=finished,
                schedule=self.settings.retry_schedule,
                max_age_s=self.settings.max_age,
                jitter=self.settings.retry_jitter,
                spread=self.rng.uniform(-1.0, 1.0),
            )
        state = JobState.DEFERRED if due is not None else JobState.FAILED
        expired = state is JobState.FAILED and isinstance(error, DeliveryDeferred)
        note = None
        if expired:
            note = f"gave up after {job.attempts + 1} attempts in {_age(job, finished)}"
        attempt = Attempt(started, finished, error.host, error.code, error.reply, state)
        try:
            bounce = await self.outbox.finish(
                job,
                attempt,
                next_attempt_at=due,
                note=note,
                raw_keep_until=self._raw_release(job, attempt),
                bounce=job.kind is JobKind.RELAY and state is JobState.FAILED,
            )
        except LeaseLost:
            _log_lease_lost(job, self.outbox.owner, attempt)
            return
        event = "delivery.deferred" if state is JobState.DEFERRED else "delivery.failed"
        _log_attempt(
            event, job, attempt, note=note, next_attempt_at=None if due is None else iso(due)
        )
        if bounce is not None:
            log.info(
                "outbox.enqueued",
                reference=job.reference,
                job_kind=JobKind.BOUNCE,
                office=job.office,
                recipients=[bounce.recipient],
                destination=None,
                job_id=bounce.job_id,
                about_job=job.id,
            )


class _KeptLease:
    """Renews a job's lease while its block runs, every RENEW_FRACTION of the lease.

    A renewal the store cannot take is logged and tried again at the next turn. One that
    finds the lease another owner's logs it and stops the block, which then raises LeaseLost.
    """

    def __init__(self, outbox: JobQueue, job: Job, clock: Clock, *, lease_s: float) -> None:
        self._outbox = outbox
        self._job = job
        self._clock = clock
        self._lease_s = lease_s
        self._is_lost = False
        self._block: asyncio.Task[object] | None = None
        self._renewing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._block = asyncio.current_task()
        self._renewing = asyncio.create_task(self._renew(), name=f"lease-{self._job.id}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        assert self._block is not None  # entered
        assert self._renewing is not None
        self._renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewing
        # Our own cancel only (uncancel() reaches 0): a shutdown's cancel goes on through.
        if self._is_lost and exc_type is asyncio.CancelledError and self._block.uncancel() == 0:
            raise LeaseLost(f"job {self._job.id} is another owner's now") from exc

    async def _renew(self) -> None:
        every = self._lease_s * RENEW_FRACTION
        job = self._job
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            # On a fixed beat, however long the last renewal took: each has until the next.
            due += every
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                async with asyncio.timeout_at(due + every):
                    is_ours = await self._outbox.renew(job, self._clock(), lease_s=self._lease_s)
            except (StoreError, TimeoutError) as exc:
                error = str(exc) or "no answer from the store in time"
                log.error(
                    "outbox.update_failed", job_id=job.id, reference=job.reference, error=error
                )
                continue
            if not is_ours:
                self._is_lost = True
                _log_lease_lost(job, self._outbox.owner)
                assert self._block is not None
                self._block.cancel()
                return


def _kept(job: Job, mail: OutgoingMail, sent_at: datetime) -> tuple[SentNotice, bytes] | None:
    """What to keep of a delivered mail: the bytes as sent, for notices, advisories, bounces."""
    if not should_keep(job.kind):
        return None
    notice = describe_sent(
        mail.data, job_id=job.id, reference=job.reference, kind=job.kind, sent_at=sent_at
    )
    return notice, mail.data


def _log_lease_lost(job: Job, owner: str, attempt: Attempt | None = None) -> None:
    """outbox.lease_lost: found while sending (the attempt is stopped, nothing to tell of it)
    or when recording `attempt` (its outcome, host and reply code, kept by the log alone: the
    store keeps the new owner's state)."""
    told = (
        {}
        if attempt is None
        else {"outcome": attempt.outcome, "host": attempt.host, "reply_code": attempt.code}
    )
    during = "sending" if attempt is None else "recording"
    log.warning(
        "outbox.lease_lost",
        job_id=job.id,
        reference=job.reference,
        owner=owner,
        during=during,
        **told,
    )


def _log_attempt(event: str, job: Job, attempt: Attempt, **extra: str | None) -> None:
    """One audit event per attempt: who we talked to, what they said, how long it took."""
    level = log.info if attempt.outcome is JobState.DELIVERED else log.warning
    level(
        event,
        job_id=job.id,
        reference=job.reference,
        kind=job.kind,
        attempt=job.attempts + 1,
        recipients=list(job.recipients),
        host=attempt.host,
        reply_code=attempt.code,
        reply=attempt.reply,
        duration_s=round((attempt.finished_at - attempt.started_at).total_seconds(), 3),
        **extra,
    )


def _age(job: Job, now: datetime) -> str:
    age = now - job.created_at
    return f"{age.days}d {age.seconds // 3600}h" if age >= timedelta(days=1) else f"{age}"
