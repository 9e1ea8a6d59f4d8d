"""The host's pages in a thread below the mail's CPU priority (http/pagehost.py): what
`ps -L -o tid,ni` shows an operator, in-process and under `gateway serve` with two workers,
and the supervisor's duties (restarting a killed worker, stopping on SIGTERM) kept prompt
while the receipt page is flooded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from gateway.config import LookupSettings
from gateway.http.pagehost import PAGES_NICE, PageHost
from tests.conftest import Gateway, GatewayFactory
from tests.smtpclient import transaction
from tests.test_serve_process import AFTER_CUTOFF, RETIRED, STOP_TIMEOUT, serving, write_config
from tests.test_workers import named, started_pid

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux threads")

# The flood: clients asking as fast as answers come, bounded in requests and in time.
FLOOD_CLIENTS = 8
FLOOD_REQUESTS = 30_000
FLOOD_S = 90.0
# How soon the supervisor, under the flood, must act: it logs that it is stopping at once on
# SIGTERM (the workers' drain comes after), and a killed worker serves again after the first
# backoff (0.5 s) plus a worker's start (interpreter, imports, store), slow on a busy machine.
SIGNAL_S = 2.0
RESTART_S = 30.0


def nices(pid: int | str = "self") -> dict[int, int]:
    """Each thread of process `pid` and its nice value, as `ps -L -o tid,ni` shows them."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that has just ended
            stat = (task / "stat").read_text(encoding="ascii", errors="replace")
            found[int(task.name)] = int(stat.rpartition(")")[2].split()[16])
    return found


async def get(port: int, path: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        client.get(f"http://127.0.0.1:{port}{path}") as got,
    ):
        return got.status, await got.text()


@dataclass
class Flood:
    """Lookups of one reference (and an unknown one) until stopped; the answers they got."""

    port: int
    reference: str
    statuses: dict[int, int] = field(default_factory=dict)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, index: int, budget: list[int]) -> None:
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.1.{index + 1}", 0))
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while budget[0] > 0 and not self.stopped.is_set():
                budget[0] -= 1
                ref = self.reference if budget[0] % 10 else "20170913-0000000000000"
                with contextlib.suppress(aiohttp.ClientError):  # the page closing at the end
                    async with session.get(f"http://127.0.0.1:{self.port}/ref/{ref}") as got:
                        await got.read()
                        self.statuses[got.status] = self.statuses.get(got.status, 0) + 1
                        self.answered.set()

    async def run(self) -> None:
        budget = [FLOOD_REQUESTS]
        async with asyncio.timeout(FLOOD_S):
            await asyncio.gather(*(self.client(i, budget) for i in range(FLOOD_CLIENTS)))


@contextlib.asynccontextmanager
async def flooding(port: int, reference: str) -> AsyncIterator[Flood]:
    flood = Flood(port, reference)
    task = asyncio.create_task(flood.run())
    try:
        async with asyncio.timeout(10):
            await flood.answered.wait()  # under way before anything is measured
        yield flood
    finally:
        flood.stopped.set()
        await task


# ---------------------------------------------------------------------------------------------
# In one process: the thread, its priority, and its end


@pytest.fixture
async def page_host() -> AsyncIterator[PageHost]:
    host = PageHost()
    yield host
    await host.close()


def with_lookup(gateway: Gateway, listen: str = "127.0.0.1:0") -> Gateway:
    lookup = LookupSettings.model_validate({"listen": listen})
    gateway.settings = gateway.settings.model_copy(update={"lookup": lookup})
    return gateway


async def test_the_pages_are_served_from_a_thread_of_lower_priority_than_the_caller(
    start_gateway: GatewayFactory, page_host: PageHost
) -> None:
    gateway = with_lookup(await start_gateway())
    before = nices()
    receipts, console = await page_host.start(gateway.settings, gateway.clock)
    assert receipts is not None
    assert console is None  # [console] listen is off
    status, _ = await get(receipts.port, "/ref/20170913-0000000000000")
    assert status == 404
    threads = nices()
    by_name = {t.name: t.native_id or 0 for t in threading.enumerate()}
    mine = threading.get_native_id()
    lowered = min(before[mine] + PAGES_NICE, 19)
    # The page thread, and the receipt reader it started, run PAGES_NICE below this thread.
    assert threads[by_name["pages"]] == lowered
    assert threads[by_name["receipts_0"]] == lowered
    assert page_host.niced_to == lowered
    assert threads[mine] == before[mine]  # the caller's own priority is left as it was


async def test_closing_ends_the_pages_and_their_thread(
    start_gateway: GatewayFactory, page_host: PageHost
) -> None:
    gateway = with_lookup(await start_gateway())
    receipts, _ = await page_host.start(gateway.settings, gateway.clock)
    assert receipts is not None
    await page_host.close()
    assert "pages" not in [t.name for t in threading.enumerate()]
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(receipts.port, "/receipt.css")
    await page_host.close()  # once more: nothing left to close


async def test_a_page_that_cannot_bind_says_so_and_leaves_no_thread(
    start_gateway: GatewayFactory, page_host: PageHost
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = with_lookup(await start_gateway(), f"127.0.0.1:{port}")
        with pytest.raises(OSError, match="address already in use"):
            await page_host.start(gateway.settings, gateway.clock)
    assert "pages" not in [t.name for t in threading.enumerate()]


# ---------------------------------------------------------------------------------------------
# `gateway serve` with two workers, the receipt page flooded


def config_with_lookup(tmp_path: Path) -> Path:
    config = write_config(tmp_path, workers=2)
    with config.open("a", encoding="utf-8") as out:
        # Each flooding client has an address of its own, within the most a client may ask.
        out.write('\n[lookup]\nlisten = "127.0.0.1:0"\nper_minute = 6000\nburst = 1000\n')
        out.write("total_per_second = 100000\n")
    return config


async def test_under_a_flood_of_lookups_the_supervisor_restarts_a_killed_worker_at_full_priority_and_stops_promptly(  # noqa: E501
    tmp_path: Path,
) -> None:
    async with serving(config_with_lookup(tmp_path), as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        supervisor = gateway.process.pid
        page_port = int((await gateway.first(named("gateway.lookup.listening")))["port"])
        async with asyncio.timeout(20):
            _, final = await transaction(served.port, [RETIRED])
        assert final is not None
        assert final.code == 550
        reference = final.text.rsplit("(ref ", 1)[1].rstrip(")").split(",")[0]

        async with flooding(page_port, reference) as flood:
            threads = nices(supervisor)
            base = threads[supervisor]  # the main thread: signals, workers, /metrics
            lowered = min(base + PAGES_NICE, 19)
            # The pages, and the reader they started; the rest keep the main thread's.
            assert sorted(set(threads.values())) == [base, lowered]
            assert list(threads.values()).count(lowered) >= 2
            for index in (1, 2):
                assert set(nices(started_pid(gateway, index)).values()) == {base}

            victim = started_pid(gateway, 1)
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            async with asyncio.timeout(RESTART_S):
                restarted = await gateway.first(named("gateway.worker.restarted", worker=1))
            took_restart = time.monotonic() - killed
            # Forked by the main thread, the new worker has the mail's priority, not the pages'.
            assert set(nices(int(restarted["pid"])).values()) == {base}

            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(SIGNAL_S):
                await gateway.first(named("gateway.supervisor.stopping"))
            took_signal = time.monotonic() - signalled
            async with asyncio.timeout(STOP_TIMEOUT):
                status = await gateway.finish()
            answered = dict(flood.statuses)

    assert status == 0, gateway.stderr
    assert took_restart < RESTART_S
    assert took_signal < SIGNAL_S
    assert answered.get(200, 0) > 0  # the page served throughout
    assert answered.get(404, 0) > 0
    assert set(answered) <= {200, 404}
    # The pages' audit lines carry the node as the supervisor's own do (the thread's context).
    node = gateway.named("gateway.supervisor.started")[0]["node"]
    looked = gateway.named("receipt.looked_up")
    assert looked
    assert {e["node"] for e in looked} == {node}
