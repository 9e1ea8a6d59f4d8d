"""Metrics: what the gateway counts, in Prometheus terms.

Counters are fed by the audit log: `EventMetrics.observe` is a structlog processor that sees
every event, so the SMTP and delivery code make no metrics calls and a count can never
disagree with the audit log it came from. The outbox gauges are read from the store when
scraped, in one read (the SQLite file read-only, or the shared PostgreSQL, whose queue every
node reports alike); the scrape runs in a thread (health.py), never on the event loop.
Everything goes into the CollectorRegistry given, one per process (app.py builds it), never
prometheus_client's global REGISTRY.

This module serves nothing (health.py does) and never writes to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from structlog.typing import EventDict, WrappedLogger

from gateway import __version__
from gateway.clock import Clock
from gateway.store.interface import QueueGauges
from gateway.vocabulary import NOTICE_KINDS, JobKind, NoticeStatusKind, Outcome

__all__ = [
    "DURATION_BUCKETS",
    "JOB_KINDS",
    "EventMetrics",
    "OutboxCollector",
    "new_registry",
]

# Seconds one delivery attempt takes: a local file write, up to a slow remote MX that uses
# its connect_timeout and command_timeouts.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# Every kind, from the one list of them: a kind added there gets its series here too.
JOB_KINDS = tuple(JobKind)
_OUTCOMES = tuple(Outcome)
_NOTICE_STATUSES = (
    NoticeStatusKind.SUPPRESSED,
    NoticeStatusKind.QUEUED,
    NoticeStatusKind.DELIVERED,
    NoticeStatusKind.DEFERRED,
    NoticeStatusKind.FAILED,
)
# delivery event -> (deliveries outcome, notices status)
_DELIVERY_EVENTS = {
    "delivery.succeeded": ("succeeded", NoticeStatusKind.DELIVERED),
    "delivery.deferred": ("deferred", NoticeStatusKind.DEFERRED),
    "delivery.failed": ("failed", NoticeStatusKind.FAILED),
}
# Events that mean something of ours went wrong; each is alert-worthy.
_ERROR_EVENTS = (
    "smtp.session.failed",
    "store.write_failed",
    "store.purge_failed",
    "outbox.claim_failed",
    "outbox.update_failed",
    "outbox.lease_lost",
    "delivery.crashed",
)
# store.records_purged keys that count rows, which are the store's table names.
_PURGED_TABLES = (
    "messages",
    "message_recipients",
    "raw_messages",
    "jobs",
    "attempts",
    "refusals",
)


def new_registry() -> CollectorRegistry:
    """A registry for one process, with the usual process_* and python_info metrics.

    No `*_created` series: they double the series of every counter and histogram, and
    Prometheus reads a counter's start from its resets anyway. prometheus_client has this
    as a process-wide switch only (no registry option as of 0.26); a gateway process has one
    registry, so turning it off here, where that registry is made, is the narrowest place.
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it unannotated
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class EventMetrics:
    """The counters, and the structlog processor that keeps them from the audit events."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        offices: Iterable[str] = (),
        count_sessions: bool = False,
    ) -> None:
        self.registry = registry
        # The configured offices' names: their message series read 0 from the start.
        self.offices = ("", *offices)
        Info("gateway_build", "The running gateway.", registry=registry).info(
            {"version": __version__}
        )
        self.connections = Counter(
            "gateway_smtp_connections", "SMTP connections opened.", registry=registry
        )
        self.connections_refused = Counter(
            "gateway_smtp_connections_refused",
            "SMTP connections cut by a limit or the shutdown, by reason.",
            ["reason"],
            registry=registry,
        )
        self.messages = Counter(
            "gateway_smtp_messages",
            "Messages answered at the end of DATA, by outcome (accepted, rejected, deferred)"
            " and office (that of the retired or filing addresses written to; empty for none).",
            ["outcome", "office"],
            registry=registry,
        )
        self.messages_refused = Counter(
            "gateway_smtp_messages_refused",
            "Messages rejected or deferred at the end of DATA, by reason and office.",
            ["reason", "office"],
            registry=registry,
        )
        self.refusals = Counter(
            "gateway_smtp_recipients_refused",
            "Recipients refused at RCPT, by reason and office (empty: no office's address).",
            ["reason", "office"],
            registry=registry,
        )
        self.recipients_deferred = Counter(
            "gateway_smtp_recipients_deferred",
            "Recipients answered 452 at RCPT (to be sent again), by reason and office.",
            ["reason", "office"],
            registry=registry,
        )
        self.notices = Counter(
            "gateway_notices",
            "Notices and advisories by status (suppressed, queued, delivered, deferred, failed).",
            ["status"],
            registry=registry,
        )
        self.suppressions = Counter(
            "gateway_notices_suppressed",
            "Notices not sent, by reason (RFC 3834, unauthenticated sender, limits).",
            ["reason"],
            registry=registry,
        )
        self.enqueued = Counter(
            "gateway_outbox_enqueued",
            "Jobs queued in the outbox, by kind (relay, forward, notice, advisory, bounce).",
            ["kind"],
            registry=registry,
        )
        self.deliveries = Counter(
            "gateway_deliveries",
            "Delivery attempts by job kind and outcome (succeeded, deferred, failed).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "gateway_delivery_duration_seconds",
            "Time one delivery attempt took, by job kind and outcome.",
            ["kind", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "gateway_errors",
            "Failures of the gateway's own (each also an audit event), by event.",
            ["event"],
            registry=registry,
        )
        self.purged = Counter(
            "gateway_store_purged_rows",
            "Rows deleted by retention, by table.",
            ["table"],
            registry=registry,
        )
        # Under a supervisor the open sessions are counted here, from the events, as a gauge
        # summed over the live workers (a dead one's share goes with it); alone, the process
        # reads its own session table at scrape time (OutboxCollector) instead.
        self.sessions_open: Gauge | None = None
        if count_sessions:
            self.sessions_open = Gauge(
                "gateway_smtp_sessions_open",
                "SMTP sessions open now.",
                registry=registry,
                multiprocess_mode="livesum",
            )
        self._handlers: Mapping[str, Callable[[EventDict], None]] = {
            "smtp.session.opened": self._session_opened,
            "smtp.session.closed": self._session_closed,
            "smtp.session.refused": self._connection_refused,
            "smtp.reply.sent": self._reply_sent,
            "smtp.recipient.refused": self._recipient_refused,
            "smtp.recipient.deferred": self._recipient_deferred,
            "notice.suppressed": self._notice_suppressed,
            "outbox.enqueued": self._enqueued,
            **dict.fromkeys(_DELIVERY_EVENTS, self._delivered),
            **dict.fromkeys(_ERROR_EVENTS, self._error),
            "store.raw_purged": self._raw_purged,
            "store.records_purged": self._records_purged,
        }
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        # Series that exist from the start read 0, not "no data", until the first event.
        for message_outcome in _OUTCOMES:
            for office in self.offices:
                self.messages.labels(message_outcome, office)
        for status in _NOTICE_STATUSES:
            self.notices.labels(status)
        for kind in JOB_KINDS:
            self.enqueued.labels(kind)
            for outcome, _status in _DELIVERY_EVENTS.values():
                self.deliveries.labels(kind, outcome)
                self.delivery_seconds.labels(kind, outcome)
        for event in _ERROR_EVENTS:
            self.errors.labels(event)

    def observe(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        """A structlog processor: count the event, pass it on unchanged.

        It runs inside every log call, on whatever thread logs, so it must never raise:
        values are checked, never assumed.
        """
        handle = self._handlers.get(_label(event_dict.get("event")))
        if handle is not None:
            handle(event_dict)
        return event_dict

    def _session_opened(self, _event: EventDict) -> None:
        self.connections.inc()
        if self.sessions_open is not None:
            self.sessions_open.inc()

    def _session_closed(self, _event: EventDict) -> None:
        if self.sessions_open is not None:
            self.sessions_open.dec()

    def _connection_refused(self, event: EventDict) -> None:
        self.connections_refused.labels(_label(event.get("reason"))).inc()

    def _reply_sent(self, event: EventDict) -> None:
        office = _label(event.get("office"))
        self.messages.labels(_label(event.get("outcome")), office).inc()
        if event.get("reason") is not None:
            self.messages_refused.labels(_label(event.get("reason")), office).inc()

    def _recipient_refused(self, event: EventDict) -> None:
        self.refusals.labels(_label(event.get("reason")), _label(event.get("office"))).inc()

    def _recipient_deferred(self, event: EventDict) -> None:
        reason, office = _label(event.get("reason")), _label(event.get("office"))
        self.recipients_deferred.labels(reason, office).inc()

    def _notice_suppressed(self, event: EventDict) -> None:
        self.notices.labels(NoticeStatusKind.SUPPRESSED).inc()
        self.suppressions.labels(_label(event.get("reason"))).inc()

    def _enqueued(self, event: EventDict) -> None:
        kind = _label(event.get("job_kind"))
        self.enqueued.labels(kind).inc()
        if kind in NOTICE_KINDS:
            self.notices.labels(NoticeStatusKind.QUEUED).inc()

    def _delivered(self, event: EventDict) -> None:
        outcome, status = _DELIVERY_EVENTS[_label(event.get("event"))]
        kind = _label(event.get("kind"))
        self.deliveries.labels(kind, outcome).inc()
        if kind in NOTICE_KINDS:
            self.notices.labels(status).inc()
        duration = event.get("duration_s")
        if isinstance(duration, int | float) and duration >= 0:
            self.delivery_seconds.labels(kind, outcome).observe(duration)

    def _error(self, event: EventDict) -> None:
        self.errors.labels(_label(event.get("event"))).inc()

    def _raw_purged(self, event: EventDict) -> None:
        self.purged.labels("raw_messages").inc(_count(event.get("count")))

    def _records_purged(self, event: EventDict) -> None:
        for table in _PURGED_TABLES:
            self.purged.labels(table).inc(_count(event.get(table)))


# ---------------------------------------------------------------------------------------------
# Read at scrape time

# On a shared store every node reads the one queue: its gauges are the same on every node.
_SHARED = (
    " On a shared PostgreSQL store: the whole queue, every node reporting the same figure;"
    " take max() across nodes, never sum()."
)


class OutboxCollector(Collector):
    """Gauges read when scraped: jobs by state, the oldest waiting job's age, open sessions;
    on a shared store also the jobs by the node that queued them.

    collect() blocks on the store (one read); call it (generate_latest) in a thread.

    Raises (from collect):
        StoreError: the store cannot be read.
    """

    def __init__(
        self,
        gauges: QueueGauges,
        clock: Clock,
        *,
        open_sessions: Callable[[], int] | None,
        is_shared: bool = False,
    ) -> None:
        self.gauges = gauges
        self.clock = clock
        # None: the sessions gauge is another collector's (a supervisor sums its workers').
        self.open_sessions = open_sessions
        self.is_shared = is_shared

    def describe(self) -> Iterable[Metric]:
        # Declared without reading the store, so registering does no I/O.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        depth = self.gauges.read_depth()
        families = {family.name: family for family in self._families()}
        for state, count in depth.by_state().items():
            families["gateway_outbox_jobs"].add_metric([state.value], count)
        age = 0.0
        if depth.oldest_waiting is not None:
            age = max(0.0, (self.clock() - depth.oldest_waiting).total_seconds())
        families["gateway_outbox_oldest_job_age_seconds"].add_metric([], age)
        if self.is_shared:
            for (node, state), count in sorted(depth.jobs.items(), key=str):
                families["gateway_outbox_node_jobs"].add_metric([node or "", state.value], count)
        if self.open_sessions is not None:
            families["gateway_smtp_sessions_open"].add_metric([], self.open_sessions())
        return list(families.values())

    def _families(self) -> list[GaugeMetricFamily]:
        shared = _SHARED if self.is_shared else ""
        families = [
            GaugeMetricFamily(
                "gateway_outbox_jobs",
                "Jobs in the outbox by state (queued, in-flight, deferred, held, failed)." + shared,
                labels=["state"],
            ),
            GaugeMetricFamily(
                "gateway_outbox_oldest_job_age_seconds",
                "Age of the oldest job still to be delivered (0: none waiting)." + shared,
            ),
        ]
        if self.is_shared:
            families.append(
                GaugeMetricFamily(
                    "gateway_outbox_node_jobs",
                    "Jobs in the shared outbox by the node that queued them, and state (any node"
                    " may deliver them). Every node reports every node's share: sum() over node"
                    " within one scrape gives the whole queue; take max() across nodes.",
                    labels=["node", "state"],
                )
            )
        if self.open_sessions is not None:
            families.append(
                GaugeMetricFamily("gateway_smtp_sessions_open", "SMTP sessions open now.")
            )
        return families
