"""Metrics and health over HTTP: a real gateway, real SMTP mail, a real scrape.

The whole gateway runs as `gateway serve` (tests/test_serve_process.py's harness) with
`[metrics] listen = "127.0.0.1:0"`; the bound port comes from its gateway.metrics.listening
event. /metrics is fetched with aiohttp's client and parsed with prometheus_client's own
parser. The readiness checks are driven in-process, where a part can be made to fail for real:
a stopped worker, a closed store, a closed listener, an operator's open write transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import build_delivery
from gateway.audit.log import configure_logging
from gateway.config import AuditSettings, load_settings
from gateway.delivery.worker import DeliveryWorker
from gateway.errors import ConfigError
from gateway.http.health import Endpoint, Readiness, start_endpoint
from gateway.http.metrics import EventMetrics, new_registry
from gateway.notices.render import NoticeRenderer
from gateway.store.db import Store
from tests.conftest import Gateway, GatewayFactory
from tests.polling import eventually
from tests.test_serve_process import (
    AFTER_CUTOFF,
    CHICAGO_OFFICE,
    LATER,
    LATER_OFFICE,
    RETIRED,
    SENDER,
    Attempt,
    ServeProcess,
    send,
    serving,
    smtp_session,
    write_config,
)

HTTP_TIMEOUT = 10.0
CHICAGO = CHICAGO_OFFICE
MESSAGES_REFUSED = "gateway_smtp_messages_refused_total"
RCPT_REFUSED = "gateway_smtp_recipients_refused_total"
DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------------------------------------
# HTTP and the exposition format


async def fetch(url: str) -> tuple[int, str, str]:
    """GET `url`: status, Content-Type and body."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def scrape(base: str) -> Samples:
    """Every sample of /metrics, parsed by prometheus_client, by (name, labels)."""
    status, content_type, text = await fetch(f"{base}/metrics")
    assert status == 200, text
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def ready(base: str) -> tuple[int, dict[str, Any]]:
    status, _, text = await fetch(f"{base}/readyz")
    body: dict[str, Any] = json.loads(text)
    return status, body


# ---------------------------------------------------------------------------------------------
# The whole gateway as a child process


METRICS_ON_ANY_PORT = '[metrics]\nlisten = "127.0.0.1:0"\n'


def metrics_config(tmp_path: Path, *, delivery: str = "", metrics: str = "") -> Path:
    """test_serve_process's config (metrics on a free port) with extra [delivery] and
    [metrics] keys."""
    config = write_config(tmp_path, edit=('mode = "file"\n', f'mode = "file"\n{delivery}'))
    text = config.read_text(encoding="utf-8")
    assert METRICS_ON_ANY_PORT in text
    config.write_text(text.replace(METRICS_ON_ANY_PORT, METRICS_ON_ANY_PORT + metrics), "utf-8")
    return config


def metrics_url(gateway: ServeProcess) -> str:
    # Logged before gateway.listening, so it is there once `serving` has yielded.
    event = gateway.find("gateway.metrics.listening")
    assert event is not None
    return f"http://{event['host']}:{event['port']}"


async def refused_rcpt(client: aiosmtplib.SMTP, recipient: str) -> int:
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await client.rcpt(recipient)
    return refused.value.code


async def test_a_scrape_counts_the_mail_sent_and_the_queue_it_left(tmp_path: Path) -> None:
    # The worker looks at the queue once at start and then not for an hour: what the sessions
    # queue stays queued, so the depth is exact.
    config = metrics_config(
        tmp_path, delivery="poll_interval = 3600\n", metrics="stall_after = 7200\n"
    )
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        base = metrics_url(served.gateway)
        async with smtp_session(served.port) as client, asyncio.timeout(30):
            refused = [await send(client, Attempt(n, SENDER, RETIRED)) for n in (1, 2, 3)]
            unanswered = await send(client, Attempt(4, "", RETIRED))
            relayed = await send(client, Attempt(5, SENDER, LATER))
            await client.quit()
        async with smtp_session(served.port) as client, asyncio.timeout(30):
            await client.mail(SENDER)
            codes = [
                await refused_rcpt(client, "nobody@occ-chicago.example"),
                await refused_rcpt(client, "someone@elsewhere.example"),
                await refused_rcpt(client, "another@elsewhere.example"),
            ]
            during = await scrape(base)  # while this second session is open
            await client.quit()
        assert await served.gateway.stop() == 0
        events = served.gateway

    assert [r.code for r in refused] == [550, 550, 550]
    assert (unanswered.code, relayed.code) == (550, 250)
    assert codes == [550, 554, 554]

    assert value(during, "gateway_smtp_connections_total") == 2
    assert value(during, "gateway_smtp_sessions_open") == 1
    assert value(during, "gateway_smtp_messages_total", outcome="rejected", office=CHICAGO) == 4
    assert (
        value(during, "gateway_smtp_messages_total", outcome="accepted", office=LATER_OFFICE) == 1
    )
    assert value(during, "gateway_smtp_messages_total", outcome="deferred", office=CHICAGO) == 0
    assert value(during, MESSAGES_REFUSED, reason="address-retired", office=CHICAGO) == 4
    assert value(during, RCPT_REFUSED, reason="no-such-mailbox", office=CHICAGO) == 1
    assert value(during, RCPT_REFUSED, reason="relay-denied", office="") == 2
    assert value(during, "gateway_notices_total", status="queued") == 3
    assert value(during, "gateway_notices_total", status="suppressed") == 1
    assert value(during, "gateway_notices_total", status="delivered") == 0
    assert value(during, "gateway_notices_suppressed_total", reason="null-sender") == 1
    assert value(during, "gateway_outbox_enqueued_total", kind="notice") == 3
    assert value(during, "gateway_outbox_enqueued_total", kind="relay") == 1
    assert value(during, "gateway_outbox_jobs", state="queued") == 4
    for state in ("in-flight", "deferred", "failed"):
        assert value(during, "gateway_outbox_jobs", state=state) == 0
    # The --as-of clock runs on in real time from the moment the jobs were created.
    assert 0 < value(during, "gateway_outbox_oldest_job_age_seconds") < 60
    assert value(during, "gateway_deliveries_total", kind="notice", outcome="succeeded") == 0
    assert value(during, "gateway_build_info", version="0.1.0") == 1
    # The counts are the audit log's, event for event.
    outcomes = [e["outcome"] for e in events.named("smtp.reply.sent")]
    assert outcomes.count("rejected") == 4
    assert [e["reason"] for e in events.named("notice.suppressed")] == ["null-sender"]


async def test_deliveries_are_counted_with_their_latency_and_empty_the_queue(
    tmp_path: Path,
) -> None:
    config = metrics_config(tmp_path, delivery="poll_interval = 0.1\n")
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        base = metrics_url(served.gateway)
        async with smtp_session(served.port) as client, asyncio.timeout(30):
            await send(client, Attempt(1, SENDER, RETIRED))
            await send(client, Attempt(2, SENDER, LATER))
            await client.quit()

        def both_delivered() -> list[dict[str, Any]]:
            found = served.gateway.named("delivery.succeeded")
            return found if len(found) == 2 else []

        delivered = await eventually(both_delivered, within=20)
        scraped = await scrape(base)
        readiness = await ready(base)
        alive = await fetch(f"{base}/healthz")
        assert await served.gateway.stop() == 0

    for kind in ("notice", "relay"):
        assert value(scraped, "gateway_deliveries_total", kind=kind, outcome="succeeded") == 1
        (event,) = [e for e in delivered if e["kind"] == kind]
        latency = {"kind": kind, "outcome": "succeeded"}
        assert value(scraped, "gateway_delivery_duration_seconds_count", **latency) == 1
        seconds = value(scraped, "gateway_delivery_duration_seconds_sum", **latency)
        assert seconds == pytest.approx(event["duration_s"])
    assert value(scraped, "gateway_notices_total", status="delivered") == 1
    for state in ("queued", "in-flight", "deferred", "failed"):
        assert value(scraped, "gateway_outbox_jobs", state=state) == 0
    assert value(scraped, "gateway_outbox_oldest_job_age_seconds") == 0
    assert readiness[0] == 200, readiness
    assert readiness[1]["ready"] is True
    assert alive[0] == 200


async def test_the_dockerfile_healthcheck_passes_against_a_ready_gateway(tmp_path: Path) -> None:
    # The HEALTHCHECK's own command, pointed at this gateway's port instead of 9125.
    match = re.search(r"^\s+CMD (\[.*\])$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert match is not None
    command: list[str] = json.loads(match[1])
    assert command[0] == "python"
    assert "/readyz" in command[-1]
    config = metrics_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        port = metrics_url(served.gateway).rpartition(":")[2]
        code = command[-1].replace(":9125/", f":{port}/")
        healthy = await run_python(code)
        assert await served.gateway.stop() == 0
    unhealthy = await run_python(code)  # nothing listens there any more
    assert healthy == 0
    assert unhealthy != 0


async def run_python(code: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    async with asyncio.timeout(HTTP_TIMEOUT):
        return await process.wait()


async def test_an_empty_metrics_listen_turns_the_endpoint_off(tmp_path: Path) -> None:
    config = write_config(tmp_path, edit=(METRICS_ON_ANY_PORT, '[metrics]\nlisten = ""\n'))
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        assert await served.gateway.stop() == 0
    assert served.gateway.find("gateway.metrics.listening") is None


# ---------------------------------------------------------------------------------------------
# Readiness, part by part, in-process


@dataclass
class Probe:
    gw: Gateway
    worker: DeliveryWorker
    task: asyncio.Task[None]
    endpoint: Endpoint

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.endpoint.port}"


ProbeFactory = Callable[..., Any]


@pytest.fixture
async def start_probe(start_gateway: GatewayFactory, tmp_path: Path) -> AsyncIterator[ProbeFactory]:
    """A real gateway's SMTP side, store and delivery worker, behind a real endpoint."""
    started: list[Probe] = []

    async def start(**metrics: Any) -> Probe:
        gw: Gateway = await start_gateway(
            metrics={"listen": "127.0.0.1:0", **metrics},
            delivery={"outbox_dir": str(tmp_path / "notices"), "poll_interval": 0.05},
        )
        worker = build_delivery(gw.settings, gw.store, gw.clock, NoticeRenderer(gw.notices), None)
        readiness = Readiness(
            gw.settings.metrics, servers=gw.servers, store=gw.store, worker=worker, clock=gw.clock
        )
        readiness.delivery_task = asyncio.create_task(worker.run())
        assert gw.settings.metrics.listen is not None
        endpoint = await start_endpoint(gw.settings.metrics.listen, new_registry(), readiness)
        probe = Probe(gw, worker, readiness.delivery_task, endpoint)
        started.append(probe)
        return probe

    yield start
    for probe in started:
        await probe.endpoint.close()
        await probe.worker.stop(1.0)
        await asyncio.wait_for(probe.task, 5)


async def test_readyz_is_200_when_listener_store_and_worker_are_alive(
    start_probe: ProbeFactory,
) -> None:
    probe: Probe = await start_probe()
    status, body = await ready(probe.base)
    assert status == 200
    assert body["ready"] is True
    assert body["failing"] == []
    checks = body["checks"]
    assert checks["smtp"] == {"ok": True, "detail": f"serving on 127.0.0.1:{probe.gw.port}"}
    assert checks["store"] == {"ok": True, "detail": "commits"}
    assert checks["delivery"]["ok"] is True


async def test_readyz_names_a_stopped_delivery_worker(start_probe: ProbeFactory) -> None:
    probe: Probe = await start_probe()
    await probe.worker.stop(1.0)
    await asyncio.wait_for(probe.task, 5)
    status, body = await ready(probe.base)
    assert status == 503
    assert body["failing"] == ["delivery"]
    assert body["checks"]["delivery"] == {"ok": False, "detail": "the worker has stopped"}
    alive, _, _ = await fetch(f"{probe.base}/healthz")
    assert alive == 200  # alive, just not ready


async def test_readyz_names_a_closed_store(start_probe: ProbeFactory) -> None:
    probe: Probe = await start_probe()
    await probe.gw.store.close()
    status, body = await ready(probe.base)
    assert status == 503
    assert body["failing"] == ["store"]
    assert body["checks"]["store"]["detail"] == "the writer thread is not running"


async def test_readyz_names_smtp_listeners_that_stopped_serving(
    start_probe: ProbeFactory,
) -> None:
    probe: Probe = await start_probe()
    for server in probe.gw.servers:
        server.close()
    status, body = await ready(probe.base)
    assert status == 503
    assert body["failing"] == ["smtp"]
    assert body["checks"]["smtp"] == {"ok": False, "detail": "1 of 1 not serving"}


async def test_an_operators_open_write_transaction_fails_store_then_worker_until_released(
    start_probe: ProbeFactory,
) -> None:
    probe: Probe = await start_probe(ready_timeout=0.2, stall_after=0.5)
    # Another writer of the same file (an operator's tool) holds its write transaction open,
    # as a sqlite3 shell left in BEGIN IMMEDIATE would: its write waits until released.
    operator, released = Store(probe.gw.settings.storage.database), threading.Event()
    await operator.open()
    try:
        holding = operator.write(lambda conn: released.wait())
        # The worker's next claim waits for the lock; once that outlasts stall_after, the
        # worker counts as stalled too.
        status, body = await ready_until(probe.base, lambda b: "delivery" in b["failing"])
        released.set()
        async with asyncio.timeout(10):
            await holding
        recovered, after = await ready_until(probe.base, lambda b: b["ready"])
    finally:
        released.set()
        await operator.close()
    assert status == 503
    assert body["failing"] == ["store", "delivery"]
    assert body["checks"]["store"] == {"ok": False, "detail": "no commit within 0.2 s"}
    assert body["checks"]["delivery"]["detail"].startswith("stalled: no look at the queue for ")
    assert recovered == 200
    assert after["failing"] == []


async def ready_until(
    base: str, wanted: Callable[[dict[str, Any]], bool], *, within: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """/readyz, asked again until its body is what the test waits for."""
    async with asyncio.timeout(within):
        while True:
            status, body = await ready(base)
            if wanted(body):
                return status, body
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Events in, counts out: the observer in a real structlog pipeline


@contextlib.contextmanager
def counting() -> Iterator[EventMetrics]:
    metrics = EventMetrics(new_registry())
    configure_logging(
        AuditSettings(format="json"), stream=io.StringIO(), observers=(metrics.observe,)
    )
    try:
        yield metrics
    finally:
        structlog.reset_defaults()


def registry_value(metrics: EventMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


DELIVERY_EVENTS = {
    "succeeded": ("delivery.succeeded", "succeeded", "delivered"),
    "deferred": ("delivery.deferred", "deferred", "deferred"),
    "failed": ("delivery.failed", "failed", "failed"),
}


@pytest.mark.parametrize(
    ("event", "outcome", "status"), DELIVERY_EVENTS.values(), ids=DELIVERY_EVENTS.keys()
)
def test_each_delivery_outcome_counts_once_with_its_duration(
    event: str, outcome: str, status: str
) -> None:
    with counting() as metrics:
        log = structlog.get_logger()
        log.warning(event, job_id=1, kind="notice", duration_s=2.0)
        log.warning(event, job_id=2, kind="relay", duration_s=None)  # no duration: not timed
    notice = {"kind": "notice", "outcome": outcome}
    relay = {"kind": "relay", "outcome": outcome}
    assert registry_value(metrics, "gateway_deliveries_total", **notice) == 1
    assert registry_value(metrics, "gateway_deliveries_total", **relay) == 1
    assert registry_value(metrics, "gateway_notices_total", status=status) == 1
    assert registry_value(metrics, "gateway_delivery_duration_seconds_sum", **notice) == 2.0
    assert registry_value(metrics, "gateway_delivery_duration_seconds_count", **relay) == 0


def test_our_failures_and_purges_are_counted_from_their_events() -> None:
    with counting() as metrics:
        log = structlog.get_logger()
        log.error("store.write_failed", reference="20170913-ABCDEFGHJK", error="disk full")
        log.error("delivery.crashed", job_id=3, reference="20170913-ABCDEFGHJK")
        log.warning("smtp.session.refused", reason="too-many-connections", reply="421 4.3.2")
        log.info("store.raw_purged", count=4)
        log.info("store.records_purged", messages=2, attempts=5, refusals=1)
    errors = "gateway_errors_total"
    assert registry_value(metrics, errors, event="store.write_failed") == 1
    assert registry_value(metrics, errors, event="delivery.crashed") == 1
    assert registry_value(metrics, errors, event="outbox.claim_failed") == 0
    refused = "gateway_smtp_connections_refused_total"
    assert registry_value(metrics, refused, reason="too-many-connections") == 1
    purged = "gateway_store_purged_rows_total"
    assert registry_value(metrics, purged, table="raw_messages") == 4
    assert registry_value(metrics, purged, table="messages") == 2
    assert registry_value(metrics, purged, table="attempts") == 5
    assert registry_value(metrics, purged, table="jobs") == 0


# ---------------------------------------------------------------------------------------------
# Configuration


def test_metrics_listen_from_the_environment_and_empty_turns_it_off() -> None:
    on = load_settings(environ={"GATEWAY_METRICS__LISTEN": "0.0.0.0:9125"})
    off = load_settings(environ={"GATEWAY_METRICS__LISTEN": ""})
    default = load_settings(environ={})
    assert on.metrics.listen is not None
    assert str(on.metrics.listen) == "0.0.0.0:9125"
    assert off.metrics.listen is None
    assert str(default.metrics.listen) == "127.0.0.1:9125"  # loopback unless asked


BAD_METRICS = {
    "listen-not-host-port": ({"GATEWAY_METRICS__LISTEN": "9125"}, "metrics.listen"),
    "ready-timeout-zero": ({"GATEWAY_METRICS__READY_TIMEOUT": "0"}, "metrics.ready_timeout"),
    "stall-under-two-polls": (
        {"GATEWAY_METRICS__STALL_AFTER": "3", "GATEWAY_DELIVERY__POLL_INTERVAL": "2"},
        "metrics.stall_after",
    ),
}


@pytest.mark.parametrize(("environ", "key"), BAD_METRICS.values(), ids=BAD_METRICS.keys())
def test_a_bad_metrics_setting_names_its_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as problem:
        load_settings(environ=environ)
    assert key in str(problem.value)
