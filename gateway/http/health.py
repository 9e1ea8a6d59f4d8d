"""Health: whether the gateway is ready, and the HTTP endpoint that says so and serves metrics.

- `/healthz`: 200 while the process and its event loop answer at all.
- `/readyz`: 200 only when every SMTP listener is serving, the state store's writer commits a
  trivial write within `[metrics] ready_timeout`, the delivery worker's task runs and has
  looked at the queue within `[metrics] stall_after`, and the audit log (JSON) takes its
  lines; otherwise 503. Either way the JSON body
  names each part and what is wrong with it.
- `/metrics`: the registry in the Prometheus text format (OpenMetrics when asked for).

The endpoint is aiohttp's server on the gateway's own event loop: that it answers at all shows
the loop is not wedged (what the old SMTP NOOP health check showed), and the checks read the
live asyncio objects without crossing threads. The metrics are rendered in a thread, because
the outbox gauges read the store. Nothing here decides about mail; the only write is the store's
health-check row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gateway.audit.chain import ChainedLog
from gateway.clock import Clock
from gateway.config import ListenAddress, MetricsSettings
from gateway.delivery.worker import DeliveryWorker
from gateway.errors import StoreError
from gateway.store.interface import RecordStore

__all__ = ["Check", "Endpoint", "Readiness", "ReadinessCheck", "start_endpoint"]

# In-flight requests get this long when the endpoint closes; probes are quick or pointless.
_SHUTDOWN_S = 1.0


@dataclass(frozen=True, slots=True)
class Check:
    """One part's state: `detail` says what is wrong, or what was seen when all is well."""

    part: str  # "smtp", "store", "delivery"
    ok: bool
    detail: str


class ReadinessCheck(Protocol):
    """What /readyz asks: this process's parts (Readiness), or a host's workers (http/host.py)."""

    async def check(self) -> list[Check]: ...


class Readiness:
    """The checks behind /readyz, on the live parts of this process."""

    def __init__(
        self,
        settings: MetricsSettings,
        *,
        servers: Sequence[asyncio.Server],
        store: RecordStore,
        worker: DeliveryWorker,
        clock: Clock,
        audit: ChainedLog | None = None,
    ) -> None:
        self.settings = settings
        self.servers = servers
        self.store = store
        self.worker = worker
        self.clock = clock
        # The chained audit log (None for the console format, which is not checked).
        self.audit = audit
        # The task running worker.run(); set by whoever starts it (app.py's TaskGroup).
        self.delivery_task: asyncio.Task[None] | None = None

    async def check(self) -> list[Check]:
        """Every part's state, now."""
        checks = [self.smtp(), await self.state_store(), self.delivery()]
        return checks if self.audit is None else [*checks, self.audit_log(self.audit)]

    def smtp(self) -> Check:
        stopped = [server for server in self.servers if not server.is_serving()]
        if stopped or not self.servers:
            return Check("smtp", False, f"{len(stopped)} of {len(self.servers)} not serving")
        addresses = [_address(sock.getsockname()) for x in self.servers for sock in x.sockets]
        return Check("smtp", True, "serving on " + ", ".join(addresses))

    async def state_store(self) -> Check:
        if not self.store.is_alive():
            return Check("store", False, "the writer thread is not running")
        deadline = self.settings.ready_timeout
        try:
            async with asyncio.timeout(deadline):
                await self.store.ping(self.clock())
        except TimeoutError:
            return Check("store", False, f"no commit within {deadline:g} s")
        except StoreError as exc:
            return Check("store", False, str(exc))
        return Check("store", True, "commits")

    def delivery(self) -> Check:
        task = self.delivery_task
        if task is None:
            return Check("delivery", False, "the worker has not started")
        if task.done():
            return Check("delivery", False, "the worker has stopped")
        idle = time.monotonic() - self.worker.last_poll
        if idle > self.settings.stall_after:
            return Check("delivery", False, f"stalled: no look at the queue for {idle:.1f} s")
        return Check("delivery", True, f"looked at the queue {idle:.1f} s ago")

    def audit_log(self, audit: ChainedLog) -> Check:
        failure = audit.write_error
        if failure is None:
            return Check("audit", True, "writes")
        waiting, dropped = audit.backlog
        lost = f", {dropped} dropped" if dropped else ""
        why = failure.strerror or str(failure)
        return Check("audit", False, f"cannot write: {why}; {waiting} lines waiting{lost}")


def _address(name: tuple[Any, ...]) -> str:
    host, port = name[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The running HTTP endpoint: where it listens, and how to stop it."""

    runner: web.AppRunner
    host: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


class _Routes:
    def __init__(self, registry: CollectorRegistry, readiness: ReadinessCheck) -> None:
        self.registry = registry
        self.readiness = readiness

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(self, _request: web.Request) -> web.Response:
        checks = await self.readiness.check()
        ready = all(c.ok for c in checks)
        body = {
            "ready": ready,
            "failing": [c.part for c in checks if not c.ok],
            "checks": {c.part: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        try:
            body = await asyncio.to_thread(encode, self.registry)
        except StoreError as exc:  # the outbox gauges could not be read
            return web.Response(status=503, text=f"state store unreadable: {exc}\n")
        return web.Response(body=body, headers={"Content-Type": content_type})


async def start_endpoint(
    address: ListenAddress,
    registry: CollectorRegistry,
    readiness: ReadinessCheck,
    *,
    on_close: Callable[[], None] | None = None,
) -> Endpoint:
    """Bind `address` (port 0: any free port) and serve /healthz, /readyz and /metrics;
    `on_close` (the queue gauges' connection) runs in a thread once the endpoint is closed.

    Raises:
        OSError: the address cannot be bound.
    """
    routes = _Routes(registry, readiness)
    app = web.Application()
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app.router.add_get("/metrics", routes.metrics)
    if on_close is not None:
        app.on_cleanup.append(lambda _app: asyncio.to_thread(on_close))
    # No access log: probes every few seconds would drown the audit log, and aiohttp's
    # would be plain text on stdlib logging besides.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_S)
    await runner.setup()
    try:
        # One process owns [metrics] listen: the gateway, or under [server] workers the
        # supervisor, which answers for the host (http/host.py); each worker then serves its
        # own /readyz on a loopback port of its own, for the supervisor to ask.
        await web.TCPSite(runner, address.host, address.port).start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return Endpoint(runner, str(host), int(port))
