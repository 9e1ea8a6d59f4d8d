"""The host's health and metrics under a supervisor: every worker's, as one answer.

With `[server] workers` above 1 the supervisor owns `[metrics] listen`. Its `/readyz` asks each
worker's own `/readyz` (a loopback port the worker reported when it started serving) and is
ready only when every worker is; its `/metrics` sums the workers' counters from the run's
metrics directory (prometheus_client's multiprocess mode, one file per process) and reads the
queue gauges from the store itself. Nothing here starts or stops a worker (supervisor.py does).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Info, PlatformCollector, ProcessCollector
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import __version__
from gateway.clock import Clock
from gateway.http.health import Check
from gateway.http.metrics import OutboxCollector
from gateway.store.interface import QueueGauges

__all__ = ["HostReadiness", "WorkerProbe", "host_registry"]


@dataclass(frozen=True, slots=True)
class WorkerProbe:
    """Where one worker answers /readyz now: its port, or None while it is not serving."""

    index: int
    port: int | None


class HostReadiness:
    """/readyz for the host: one check per worker, each that worker's own /readyz."""

    def __init__(self, probes: Callable[[], Sequence[WorkerProbe]], *, timeout_s: float) -> None:
        self._probes = probes
        # The worker's own store check waits up to ready_timeout; a little more for the hop.
        self._timeout_s = timeout_s

    async def check(self) -> list[Check]:
        """Every worker's readiness, asked at once."""
        probes = self._probes()
        client_timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        async with aiohttp.ClientSession(timeout=client_timeout) as client:
            return list(await asyncio.gather(*(self._ask(client, p) for p in probes)))

    async def _ask(self, client: aiohttp.ClientSession, probe: WorkerProbe) -> Check:
        part = f"worker-{probe.index}"
        if probe.port is None:
            return Check(part, False, "not serving (starting, or restarting after it ended)")
        try:
            async with client.get(f"http://127.0.0.1:{probe.port}/readyz") as response:
                body = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Check(part, False, f"no answer to /readyz: {type(exc).__name__}")
        return _worker_check(part, body)


def _worker_check(part: str, body: object) -> Check:
    """A worker's /readyz body, as one check of the host's."""
    if not isinstance(body, dict) or not isinstance(body.get("checks"), dict):
        return Check(part, False, "an answer to /readyz that is not the gateway's")
    checks: dict[str, dict[str, object]] = body["checks"]
    failing = [f"{name}: {c.get('detail')}" for name, c in checks.items() if not c.get("ok")]
    if body.get("ready") is True and not failing:
        return Check(part, True, "ready: " + ", ".join(sorted(checks)))
    return Check(part, False, "; ".join(failing) or "not ready")


def host_registry(
    metrics_dir: Path, gauges: QueueGauges, clock: Clock, *, is_shared: bool
) -> CollectorRegistry:
    """The supervisor's registry: the workers' counters summed (gauges by their own mode),
    the queue gauges read from the store (`is_shared`: PostgreSQL's, per node too), and the
    supervisor's own process metrics."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    registry.register(OutboxCollector(gauges, clock, open_sessions=None, is_shared=is_shared))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    # Info cannot be kept in multiprocess files; the supervisor states the one version.
    Info("gateway_build", "The running gateway.", registry=registry).info({"version": __version__})
    return registry
