"""The host's HTTP pages (the public receipt page, the operator console) served from a thread
of their own, at a lower CPU priority than the mail.

Under `[server] workers` the supervisor serves these pages while its workers serve SMTP; on a
machine with no idle core, a flood of lookups would take the CPU the workers need to keep
their promise (issue 13). Linux keeps a nice value per thread (sched(7)), and a thread made
by a niced thread starts with its value: the page thread lowers its own priority before its
event loop starts, so its store reader, its `to_thread` helpers and the HTTP parsing all run
at that priority, while the supervisor's main thread, which forks the workers (and restarts
them), keeps the priority it was started with; so do the workers, which an unprivileged
process could not raise again had they inherited a lower one. /metrics and /readyz stay on
the main thread: probes are answered at full priority.

The pages share the process with the supervisor's duties, which wait for the interpreter's
lock while a page holds it: a few milliseconds, the switch interval, or longer while the
kernel has the niced thread waiting for a CPU; restarting a worker and passing SIGTERM on
take a fraction of a second either way (tests/test_pagehost.py measures them under a flood).

This module starts and stops the thread; what the pages answer is lookup.py's and
console.py's. It decides nothing and serves no mail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.clock import Clock
from gateway.config import GatewaySettings
from gateway.http.console import start_console
from gateway.http.health import Endpoint
from gateway.http.lookup import start_lookup

__all__ = ["PAGES_NICE", "PageHost"]

# How much lower the pages' priority is: at nice 10 a busy thread gets about a tenth of the
# CPU time a nice-0 one gets when they compete (sched(7)'s weights, 1.25 per step), and all
# of an idle core. Nice 19 (about 1.5 %) measured no better for the mail on a shared machine
# (bench/README.md, "receipt.py") and would leave a busy host's page next to nothing.
PAGES_NICE = 10
# Time for the thread to start its loop, and for it to end once its pages are closed.
_THREAD_S = 10.0
_T = TypeVar("_T")


class PageHost:
    """The pages' thread and event loop; `start()` opens the pages there, `close()` ends it."""

    def __init__(self, *, nice: int = PAGES_NICE) -> None:
        self.nice = nice
        self.niced_to: int | None = None  # the thread's nice value once lowered (Linux only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pages: list[Endpoint] = []

    async def start(
        self, settings: GatewaySettings, clock: Clock
    ) -> tuple[Endpoint | None, Endpoint | None]:
        """Start the thread and open the receipt page and the console in it (each None when
        off); the thread ends again if either cannot open.

        Raises:
            OSError: an address cannot be bound (or the console's certificate read).
            ssl.SSLError: the console's certificate or key is not one.
        """
        ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
        # A thread starts with an empty context: the node bound for this process's events
        # goes along, so the pages' audit lines name it as the main thread's do.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._serve, ready), name="pages", daemon=True
        )
        self._thread.start()
        async with asyncio.timeout(_THREAD_S):
            self._loop = await asyncio.wrap_future(ready)
        try:
            receipts = await self._run(start_lookup(settings, clock))
            self._keep(receipts)
            console = await self._run(start_console(settings, clock))
            self._keep(console)
        except BaseException:
            await self.close()
            raise
        return receipts, console

    async def close(self) -> None:
        """Close the pages (each lets its requests in flight finish, briefly) and end the
        thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        for page in reversed(self._pages):
            await self._run(page.close())
        self._pages.clear()
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, _THREAD_S)
        self._loop = self._thread = None

    def _keep(self, page: Endpoint | None) -> None:
        if page is not None:
            self._pages.append(page)

    async def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def _serve(self, ready: concurrent.futures.Future[asyncio.AbstractEventLoop]) -> None:
        if sys.platform == "linux":
            # Linux: this thread only (and the threads it starts). Elsewhere nice is the
            # process's, and would reach the workers forked after it: left as it is.
            self.niced_to = os.nice(self.nice)
        loop = asyncio.new_event_loop()
        ready.set_result(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
