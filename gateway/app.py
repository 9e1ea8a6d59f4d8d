"""Composition root: builds the store, the server, the delivery worker and the clock, and owns
startup and shutdown.

`serve()` is what `gateway serve` runs. Shutdown on SIGTERM/SIGINT: stop accepting, let the
sessions in flight finish within server.drain_timeout (the rest get 421), give deliveries in
flight the same time (the rest go back to the queue), commit what is pending, exit 0.

SIGHUP reopens the audit log and reloads: the config file and templates are read again and,
if they load, serve the sessions that connect from then on (reload.py says what changed and
what waits for a restart); if not, the old ones go on serving. SIGUSR1 only reopens the log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from structlog.typing import Processor

from gateway import __version__
from gateway.audit.chain import ChainedLog, anchored
from gateway.audit.log import configure_logging
from gateway.clock import Clock, make_clock
from gateway.config import GatewaySettings, ServerSettings
from gateway.delivery.composer import ComposerSettings, make_composer
from gateway.delivery.transport import FileSender, MailSender, SmtpSender
from gateway.delivery.worker import DeliveryWorker
from gateway.dns_lookup.mx import DnsMxResolver
from gateway.errors import ConfigError, GatewayError
from gateway.http.health import Endpoint, Readiness, start_endpoint
from gateway.http.metrics import EventMetrics, OutboxCollector, new_registry
from gateway.notices.context import NoticeContext
from gateway.notices.dkim import DkimKey, ensure_key, zone_record
from gateway.notices.render import NoticeRenderer
from gateway.reload import templates_digest
from gateway.reloader import HangupSignals, Reloader
from gateway.smtp.eventloop import loop_factory
from gateway.smtp.receiving import ReceiveSettings
from gateway.smtp.server import Serving, Sessions, start_server
from gateway.store.db import Store
from gateway.store.outbox import Outbox
from gateway.store.retention import purge_periodically

__all__ = ["Parts", "build_delivery", "check_state_dir", "serve", "tls_context", "watch_log"]

log = structlog.get_logger()


def tls_context(server: ServerSettings) -> ssl.SSLContext | None:
    """A server context for STARTTLS, or None when no certificate is configured.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    if server.tls_cert is None or server.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("server.tls_cert", f"cannot load certificate/key: {exc}") from exc
    return context


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


def prepare(settings: GatewaySettings, *, as_of: str | None) -> Parts:
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
        EventMetrics(new_registry(), offices=[o.name for o in settings.offices])
        if settings.metrics.listen is not None
        else None
    )
    return Parts(clock, context, renderer, key, created, metrics)


def build_delivery(
    settings: GatewaySettings,
    store: Store,
    clock: Clock,
    renderer: NoticeRenderer,
    key: DkimKey | None,
) -> DeliveryWorker:
    """The delivery worker for the configured mode."""
    sender: MailSender
    if settings.delivery.mode == "file":
        sender = FileSender(settings.delivery.outbox_dir)
    else:
        resolver = DnsMxResolver(settings.dns) if settings.delivery.mode == "mx" else None
        sender = SmtpSender(
            settings.delivery, local_hostname=settings.server.hostname, resolver=resolver
        )
    owner = f"{socket.gethostname()}:{os.getpid()}:{id(store):x}"
    composer = make_composer(ComposerSettings.from_settings(settings), renderer, key)
    return DeliveryWorker(
        settings.delivery,
        Outbox(store, owner=owner),
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
) -> int:
    """Run the gateway until SIGTERM or SIGINT; returns the exit status.

    `reread` reads the settings again from where `settings` came from, on SIGHUP; without
    it SIGHUP only reopens the audit log."""
    try:
        check_state_dir(settings.storage.state_dir)
    except OSError as exc:  # not a configuration error: the host's file system refuses
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        parts = prepare(settings, as_of=as_of)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return 2
    try:
        chain = configure_logging(settings.audit, observers=parts.observers)
    except OSError as exc:  # the log file cannot be opened, or another process writes it
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    if chain is not None:
        log.info("gateway.log.opened", log=settings.audit.log, continued=not chain.is_new)
    if parts.dkim_created:
        log.warning(
            "dkim.key_created",
            selector=parts.dkim_key.selector,
            domain=parts.dkim_key.domain,
            path=str(parts.dkim_key.path),
            dns_record=zone_record(parts.dkim_key),
        )
    every_s = settings.audit.checkpoint_interval
    try:
        # The chain's first line and its head over time, in the store (see chain.py).
        with (
            anchored(chain, settings.storage.database, every_s=every_s),
            asyncio.Runner(loop_factory=loop_factory(settings.server.event_loop)) as runner,
        ):
            runner.run(_serve(settings, parts, chain, as_of=as_of, reread=reread))
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
) -> None:
    # Signals are caught before anything is announced: a SIGTERM sent the moment an
    # orchestrator sees `gateway.listening` must drain, not kill, and a SIGHUP (whose default
    # is to end the process) must reload.
    loop = asyncio.get_running_loop()
    stop = _StopSignal(loop)
    hangups = HangupSignals(loop)
    store = Store(settings.storage.database)
    await store.open()
    sessions = Sessions(limit=settings.server.max_connections)
    receiving = ReceiveSettings.from_settings(settings)
    serving = Serving(receiving, store, parts.clock)
    endpoint: Endpoint | None = None
    try:
        # No reuse_port: one SMTP process per store (see start_server and issue 10, item 4).
        servers = await start_server(
            receiving,
            store,
            clock=parts.clock,
            sessions=sessions,
            tls_context=parts.tls,
            audit=chain,
            serving=serving,
        )
        worker = build_delivery(settings, store, parts.clock, parts.renderer, parts.dkim_key)
        templates = await asyncio.to_thread(templates_digest, settings)
        reloader = Reloader(settings, templates, serving, worker, parts.dkim_key, reread)
        readiness = Readiness(
            settings.metrics,
            servers=servers,
            store=store,
            worker=worker,
            clock=parts.clock,
            audit=chain,
        )
        endpoint = await _start_endpoint(settings, parts, readiness, servers, sessions)
        log.info(
            "gateway.started",
            version=__version__,
            offices=[o.name for o in settings.offices],
            as_of=as_of,
            state_dir=str(settings.storage.state_dir),
            delivery=settings.delivery.mode,
        )
        # Before gateway.listening, which tests and orchestrators take as "up".
        if endpoint is not None:
            log.info("gateway.metrics.listening", host=endpoint.host, port=endpoint.port)
        for server in servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                log.info("gateway.listening", host=host, port=port)
        async with asyncio.TaskGroup() as tasks:
            readiness.delivery_task = tasks.create_task(worker.run(), name="delivery")
            housekeeping = [
                tasks.create_task(
                    purge_periodically(store, parts.clock, settings.storage), name="retention"
                )
            ]
            if chain is not None:
                housekeeping.append(tasks.create_task(watch_log(chain), name="audit-log"))
            housekeeping.append(tasks.create_task(hangups.serve(reloader, chain), name="signals"))
            reason = await stop.wait()
            log.info("gateway.stopping", reason=reason, sessions=len(sessions.live))
            for server in servers:
                server.close()
            deadline = settings.server.drain_timeout
            cut, _ = await asyncio.gather(sessions.drain(deadline), worker.stop(deadline))
            for task in housekeeping:
                task.cancel()
        log.info("gateway.stopped", sessions_cut=cut)
    finally:
        if endpoint is not None:
            await endpoint.close()
        stop.remove()
        hangups.remove()
        await store.close()


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
) -> Endpoint | None:
    """Serve /metrics, /healthz and /readyz, unless [metrics] listen is off.

    Raises:
        OSError: the metrics address cannot be bound; the SMTP servers are closed first.
    """
    if parts.metrics is None or settings.metrics.listen is None:
        return None
    outbox = OutboxCollector(
        settings.storage.database, parts.clock, open_sessions=lambda: len(sessions.live)
    )
    parts.metrics.registry.register(outbox)
    try:
        return await start_endpoint(settings.metrics.listen, parts.metrics.registry, readiness)
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
        if not self._received.done():
            self._received.set_result(signal.Signals(signum).name)

    async def wait(self) -> str:
        return await self._received

    def remove(self) -> None:
        for signum in self.SIGNALS:
            self._loop.remove_signal_handler(signum)
