"""Composition root: builds the store, the server and the clock; owns startup and shutdown.

`serve()` is what `gateway serve` runs. Shutdown on SIGTERM/SIGINT: stop accepting, let the
sessions in flight finish within server.drain_timeout, cut the rest with 421, commit what is
pending, exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
import time
from datetime import UTC, datetime, timedelta

import structlog

from gateway import __version__
from gateway.audit import configure_logging
from gateway.config import GatewaySettings, ServerSettings
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.inbound import Clock, Sessions, start_server
from gateway.store import Store

__all__ = ["make_clock", "serve"]

log = structlog.get_logger()


def make_clock(as_of: str | None) -> Clock:
    """The gateway's clock: UTC now, or running on from `as_of` for rehearsals.

    Raises:
        ConfigError: `as_of` is not an ISO-8601 time with an offset.
    """
    if as_of is None:
        return lambda: datetime.now(UTC)
    try:
        start = datetime.fromisoformat(as_of)
    except ValueError as exc:
        raise ConfigError("--as-of", f"{as_of!r} is not an ISO-8601 date-time") from exc
    if start.tzinfo is None:
        raise ConfigError("--as-of", "needs an offset or Z, e.g. 2017-09-12T09:00:00-05:00")
    origin = time.monotonic()
    return lambda: (start + timedelta(seconds=time.monotonic() - origin)).astimezone(UTC)


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


def serve(settings: GatewaySettings, *, as_of: str | None = None) -> int:
    """Run the gateway until SIGTERM or SIGINT; returns the exit status."""
    try:
        clock = make_clock(as_of)
        context = tls_context(settings.server)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.audit)
    try:
        asyncio.run(_serve(settings, clock, context, as_of=as_of))
    except (GatewayError, OSError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    settings: GatewaySettings, clock: Clock, context: ssl.SSLContext | None, *, as_of: str | None
) -> None:
    # Signals are caught before anything is announced: a SIGTERM sent the moment an
    # orchestrator sees `gateway.listening` must drain, not kill.
    stop = _StopSignal(asyncio.get_running_loop())
    store = Store(settings.storage.database)
    await store.open()
    sessions = Sessions(limit=settings.server.max_connections)
    try:
        servers = await start_server(
            settings, store, clock=clock, sessions=sessions, tls_context=context
        )
        log.info(
            "gateway.started",
            version=__version__,
            offices=[o.name for o in settings.offices],
            as_of=as_of,
            state_dir=str(settings.storage.state_dir),
        )
        for server in servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                log.info("gateway.listening", host=host, port=port)
        async with asyncio.TaskGroup() as tasks:
            housekeeping = tasks.create_task(_purge_raw_periodically(store, clock))
            reason = await stop.wait()
            log.info("gateway.stopping", reason=reason, sessions=len(sessions.live))
            for server in servers:
                server.close()
            cut = await sessions.drain(settings.server.drain_timeout)
            housekeeping.cancel()
        log.info("gateway.stopped", sessions_cut=cut)
    finally:
        stop.remove()
        await store.close()


async def _purge_raw_periodically(store: Store, clock: Clock, *, every_s: float = 3600.0) -> None:
    """Drop retained raw messages past their retention; the records themselves stay."""
    while True:
        try:
            purged = await store.purge_expired_raw(clock())
        except StoreError as exc:
            log.error("store.purge_failed", error=str(exc))
        else:
            if purged:
                log.info("store.raw_purged", count=purged)
        await asyncio.sleep(every_s)


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
