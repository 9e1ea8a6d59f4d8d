"""Composition root: builds the store, the server, the delivery worker and the clock, and owns
startup and shutdown.

`serve()` is what `gateway serve` runs. Shutdown on SIGTERM/SIGINT: stop accepting, let the
sessions in flight finish within server.drain_timeout (the rest get 421), give deliveries in
flight the same time (the rest go back to the queue), commit what is pending, exit 0.

Under a supervisor (`[server] workers` above 1, supervisor.py) this runs as worker I of N:
it serves on the listeners passed down instead of binding, writes its own audit log (and
chain), answers /readyz on a loopback port of its own for the supervisor to ask, and tells
the supervisor that port once it serves. Its counters go to the supervisor's metrics
directory (prometheus_client's multiprocess mode), which serves them summed for the host.

SIGHUP reopens the audit log and reloads: the config file and templates are read again and,
if they load, serve the sessions that connect from then on (reload.py says what changed and
what waits for a restart); if not, the old ones go on serving. SIGUSR1 only reopens the log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from structlog.typing import Processor

from gateway import __version__
from gateway.audit.anchoring import anchored
from gateway.audit.chain import ChainedLog, worker_log
from gateway.audit.log import configure_logging
from gateway.clock import Clock, make_clock
from gateway.config import GatewaySettings
from gateway.delivery.composer import ComposerSettings, make_composer
from gateway.delivery.transport import FileSender, MailSender, SmtpSender
from gateway.delivery.worker import DeliveryWorker
from gateway.dns_lookup.mx import DnsMxResolver
from gateway.errors import ConfigError, GatewayError
from gateway.http.console import start_console
from gateway.http.health import Endpoint, Readiness, start_endpoint
from gateway.http.lookup import start_lookup
from gateway.http.metrics import EventMetrics, OutboxCollector, new_registry
from gateway.notices.context import NoticeContext
from gateway.notices.dkim import DkimKey, ensure_key, zone_record
from gateway.notices.render import NoticeRenderer
from gateway.reload import templates_digest
from gateway.reloader import HangupSignals, Reloader
from gateway.role import WORKER_ENDPOINT, WorkerRole, watch_parent
from gateway.smtp.eventloop import loop_factory
from gateway.smtp.listeners import adopt_listeners
from gateway.smtp.receiving import ReceiveSettings
from gateway.smtp.server import Serving, Sessions, start_server
from gateway.smtp.tls import tls_context
from gateway.store.backend import StoreLocation, make_queue, new_store, queue_gauges
from gateway.store.interface import RecordStore
from gateway.store.retention import purge_periodically

__all__ = [
    "Parts",
    "build_delivery",
    "check_state_dir",
    "log_opened",
    "prepare",
    "serve",
    "watch_log",
]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Parts:
    """What startup prepares before anything listens; all of it can fail with ConfigError."""

    clock: Clock
    tls: ssl.SSLContext | None
    renderer: NoticeRenderer
    dkim_key: DkimKey
    dkim_created: bool
    # This process's metrics, counted from the audit events; None when [metrics] is off.
    metrics: EventMetrics | None = None

    @property
    def observers(self) -> tuple[Processor, ...]:
        """The structlog processors to hand configure_logging()."""
        return () if self.metrics is None else (self.metrics.observe,)


def check_state_dir(state_dir: Path) -> None:
    """Create the state directory if need be, and make sure files can be written in it.

    Checked before anything else writes there (the DKIM key, the store), so that a read-only
    or unwritable directory is reported as what it is: a host that cannot run the gateway.

    Raises:
        OSError: the directory cannot be created or written; the message names it.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=state_dir):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise OSError(exc.errno, f"state directory {state_dir} is not writable: {why}") from exc


def prepare(
    settings: GatewaySettings, *, as_of: str | None, worker: WorkerRole | None = None
) -> Parts:
    """Check and build the parts that depend only on settings and files.

    Raises:
        ConfigError: a certificate, template set or DKIM key cannot be used.
    """
    clock = make_clock(as_of)
    context = tls_context(settings.server)
    notices = NoticeContext.from_settings(settings)
    renderer = NoticeRenderer(notices)  # compiles and trial-renders every office's templates
    key, created = ensure_key(notices)
    # A registry of this process's own: prometheus_client's default REGISTRY is a global.
    metrics = (
        EventMetrics(
            new_registry(),
            offices=[o.name for o in settings.offices],
            # Summed by the supervisor over the workers; one process counts its own live.
            count_sessions=worker is not None,
        )
        if settings.metrics.listen is not None
        else None
    )
    return Parts(clock, context, renderer, key, created, metrics)


def build_delivery(
    settings: GatewaySettings,
    store: RecordStore,
    clock: Clock,
    renderer: NoticeRenderer,
    key: DkimKey | None,
    *,
    slot: str | None = None,
) -> DeliveryWorker:
    """The delivery worker for the configured mode; `slot` names the worker process it runs
    in when several serve the store (their leases must not be taken for stale)."""
    sender: MailSender
    if settings.delivery.mode == "file":
        sender = FileSender(settings.delivery.outbox_dir)
    else:
        resolver = DnsMxResolver(settings.dns) if settings.delivery.mode == "mx" else None
        sender = SmtpSender(
            settings.delivery, local_hostname=settings.server.hostname, resolver=resolver
        )
    # Every worker process delivers (each with composers of its own), made safe by its leases:
    # recover() at start frees only those of this slot's earlier lives, never a live
    # sibling's (store/outbox.py). One delivering process would leave the signing, the
    # bound of notice throughput, to one core.
    incarnations = None if slot is None else f"{settings.server.node}/{slot}/"
    owner = f"{incarnations or settings.server.node + ':'}{os.getpid()}:{id(store):x}"
    composer = make_composer(ComposerSettings.from_settings(settings), renderer, key)
    outbox = make_queue(store, owner=owner, incarnations=incarnations)
    return DeliveryWorker(
        settings.delivery,
        outbox,
        composer,
        sender,
        clock,
        raw_retention_days=settings.storage.raw_retention_days,
    )


def serve(
    settings: GatewaySettings,
    *,
    as_of: str | None = None,
    reread: Callable[[], GatewaySettings] | None = None,
    worker: WorkerRole | None = None,
) -> int:
    """Run the gateway until SIGTERM or SIGINT; returns the exit status.

    `reread` reads the settings again from where `settings` came from, on SIGHUP; without
    it SIGHUP only reopens the audit log. With `worker`, serve as that worker of a
    supervisor (supervisor.py)."""
    try:
        check_state_dir(settings.storage.state_dir)
    except OSError as exc:  # not a configuration error: the host's file system refuses
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        parts = prepare(settings, as_of=as_of, worker=worker)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return 2
    audit = settings.audit
    if worker is not None:
        # A file and a chain per worker: one writer per file, each chain in order.
        audit = audit.model_copy(update={"log": worker_log(audit.log, worker.index)})
        structlog.contextvars.bind_contextvars(worker=worker.index)
    # Every audit line names the MX host that wrote it, as every record does.
    structlog.contextvars.bind_contextvars(node=settings.server.node)
    try:
        chain = configure_logging(
            audit,
            observers=parts.observers,
            shared_with=None if worker is None else worker.stdout_lock,
        )
    except OSError as exc:  # the log file cannot be opened, or another process writes it
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    log_opened(parts, chain, audit.log)
    every_s = settings.audit.checkpoint_interval
    try:
        # The chain's first line and its head over time, in the store (see chain.py).
        with (
            anchored(chain, StoreLocation.from_settings(settings), every_s=every_s),
            asyncio.Runner(loop_factory=loop_factory(settings.server.event_loop)) as runner,
        ):
            runner.run(_serve(settings, parts, chain, as_of=as_of, reread=reread, worker=worker))
    except (GatewayError, OSError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    settings: GatewaySettings,
    parts: Parts,
    chain: ChainedLog | None,
    *,
    as_of: str | None,
    reread: Callable[[], GatewaySettings] | None,
    worker: WorkerRole | None = None,
) -> None:
    # Signals are caught before anything is announced: a SIGTERM sent the moment an
    # orchestrator sees `gateway.listening` must drain, not kill, and a SIGHUP (whose default
    # is to end the process) must reload.
    loop = asyncio.get_running_loop()
    stop = _StopSignal(loop)
    hangups = HangupSignals(loop)
    store = new_store(StoreLocation.from_settings(settings))
    await store.open()
    sessions = Sessions(limit=settings.server.max_connections)
    receiving = ReceiveSettings.from_settings(settings)
    serving = Serving(receiving, store, parts.clock)
    endpoint: Endpoint | None = None
    receipts: Endpoint | None = None
    console: Endpoint | None = None
    try:
        # No reuse_port: a supervisor's workers share the sockets it bound (smtp/listeners.py).
        servers = await start_server(
            receiving,
            store,
            clock=parts.clock,
            sessions=sessions,
            tls_context=parts.tls,
            audit=chain,
            serving=serving,
            sockets=adopt_listeners(worker.listen_fds) if worker is not None else (),
        )
        slot = None if worker is None else worker.slot
        delivery = build_delivery(
            settings, store, parts.clock, parts.renderer, parts.dkim_key, slot=slot
        )
        templates = await asyncio.to_thread(templates_digest, settings)
        reloader = Reloader(settings, templates, serving, delivery, parts.dkim_key, reread)
        readiness = Readiness(
            settings.metrics,
            servers=servers,
            store=store,
            worker=delivery,
            clock=parts.clock,
            audit=chain,
        )
        endpoint = await _start_endpoint(settings, parts, readiness, servers, sessions, worker)
        # Under a supervisor the receipt page is the supervisor's, as the host's /metrics is.
        receipts = None if worker is not None else await start_lookup(settings, parts.clock)
        console = None if worker is not None else await start_console(settings, parts.clock)
        if console is not None:
            log.info("gateway.console.listening", host=console.host, port=console.port)
        _announce(settings, servers, endpoint, receipts, as_of=as_of, worker=worker)
        async with asyncio.TaskGroup() as tasks:
            readiness.delivery_task = tasks.create_task(delivery.run(), name="delivery")
            housekeeping = [tasks.create_task(hangups.serve(reloader, chain), name="signals")]
            if worker is None or worker.index == 1:
                # One purger per host is enough; several would only take turns at the lock.
                purge = purge_periodically(store, parts.clock, settings.storage)
                housekeeping.append(tasks.create_task(purge, name="retention"))
            if chain is not None:
                housekeeping.append(tasks.create_task(watch_log(chain), name="audit-log"))
            if worker is not None:
                watch = watch_parent(stop.trigger)
                housekeeping.append(tasks.create_task(watch, name="supervisor"))
            reason = await stop.wait()
            log.info("gateway.stopping", reason=reason, sessions=len(sessions.live))
            for server in servers:
                server.close()
            deadline = settings.server.drain_timeout
            cut, _ = await asyncio.gather(sessions.drain(deadline), delivery.stop(deadline))
            for task in housekeeping:
                task.cancel()
        log.info("gateway.stopped", sessions_cut=cut)
    finally:
        for http in (endpoint, receipts, console):
            if http is not None:
                await http.close()
        stop.remove()
        hangups.remove()
        await store.close()


def _announce(
    settings: GatewaySettings,
    servers: list[asyncio.Server],
    endpoint: Endpoint | None,
    receipts: Endpoint | None,
    *,
    as_of: str | None,
    worker: WorkerRole | None,
) -> None:
    """Log that the gateway serves; a worker tells its supervisor instead of logging where
    it listens (the supervisor logs gateway.listening once every worker serves)."""
    log.info(
        "gateway.started",
        version=__version__,
        offices=[o.name for o in settings.offices],
        as_of=as_of,
        state_dir=str(settings.storage.state_dir),
        delivery=settings.delivery.mode,
        **({} if worker is None else {"worker": worker.index, "workers": worker.count}),
    )
    if worker is not None:
        worker.tell_ready(0 if endpoint is None else endpoint.port)
        return
    # Before gateway.listening, which tests and orchestrators take as "up".
    if endpoint is not None:
        log.info("gateway.metrics.listening", host=endpoint.host, port=endpoint.port)
    if receipts is not None:
        log.info("gateway.lookup.listening", host=receipts.host, port=receipts.port)
    for server in servers:
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            log.info("gateway.listening", host=host, port=port)


def log_opened(parts: Parts, chain: ChainedLog | None, destination: str) -> None:
    """The first events of a process's log: the log itself, and a DKIM key made just now
    with the DNS record to publish for it (an operator must act on that one)."""
    if chain is not None:
        log.info("gateway.log.opened", log=destination, continued=not chain.is_new)
    if parts.dkim_created:
        log.warning(
            "dkim.key_created",
            selector=parts.dkim_key.selector,
            domain=parts.dkim_key.domain,
            path=str(parts.dkim_key.path),
            dns_record=zone_record(parts.dkim_key),
        )


async def watch_log(chain: ChainedLog, *, every_s: float = 1.0) -> None:
    """Retry a failing audit log every `every_s` seconds, so that the lines waiting get out
    (and sessions are served again) as soon as the disk takes them, even with no new event;
    log when it fails and when it recovers. Runs until cancelled."""
    failing = False
    while True:
        await asyncio.sleep(every_s)
        failure = chain.write_error
        if failure is None and not failing:
            continue
        if not failing:
            failing = True
            waiting, _ = chain.backlog
            # It waits in memory with the others, and is written when they are.
            log.error(
                "gateway.log.failed", log=chain.destination, error=str(failure), waiting=waiting
            )
        waiting, dropped = chain.backlog
        if await asyncio.to_thread(chain.retry):
            failing = False
            log.warning(
                "gateway.log.recovered", log=chain.destination, written=waiting, dropped=dropped
            )


async def _start_endpoint(
    settings: GatewaySettings,
    parts: Parts,
    readiness: Readiness,
    servers: list[asyncio.Server],
    sessions: Sessions,
    worker: WorkerRole | None = None,
) -> Endpoint | None:
    """Serve /metrics, /healthz and /readyz, unless [metrics] listen is off; a worker's on a
    loopback port for its supervisor, which owns [metrics] listen and reads the queue gauges
    itself.

    Raises:
        OSError: the metrics address cannot be bound; the SMTP servers are closed first.
    """
    if parts.metrics is None or settings.metrics.listen is None:
        return None
    gauges = None
    if worker is None:
        gauges = queue_gauges(StoreLocation.from_settings(settings))
        outbox = OutboxCollector(
            gauges,
            parts.clock,
            open_sessions=lambda: len(sessions.live),
            is_shared=settings.storage.is_shared,
        )
        parts.metrics.registry.register(outbox)
    address = settings.metrics.listen if worker is None else WORKER_ENDPOINT
    try:
        return await start_endpoint(
            address,
            parts.metrics.registry,
            readiness,
            on_close=None if gauges is None else gauges.close,
        )
    except OSError:
        for server in servers:
            server.close()
        raise


class _StopSignal:
    """SIGTERM and SIGINT, turned into an awaitable with the signal's name."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._received: asyncio.Future[str] = loop.create_future()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self.trigger(signal.Signals(signum).name)

    def trigger(self, reason: str) -> None:
        """Stop as a signal would, for `reason`."""
        if not self._received.done():
            self._received.set_result(reason)

    async def wait(self) -> str:
        return await self._received

    def remove(self) -> None:
        for signum in self.SIGNALS:
            self._loop.remove_signal_handler(signum)
