"""The supervisor: `gateway serve` with `[server] workers` above 1.

It binds `[server] listen` once (smtp/listeners.py) and starts that many worker processes,
each `gateway serve --worker-index I ...` with the bound sockets passed down, which accept on
them: one accept queue per address, held here, so a worker that dies drops none of the
connections queued behind it. The first workers are forked from the supervisor, so that
they share the memory of its imported code (forking.py); a restarted one is a new
interpreter, `python -m gateway serve ...`. Each worker is a whole gateway (app.py): its own
event loop, store writer (group commit per process), delivery worker and composers, audit
log file and chain. The supervisor:

- restarts a worker that ends while it should be serving, after a delay that doubles from
  0.5 s up to 30 s while restarts follow each other quickly (a worker that served a minute
  starts again from 0.5 s), logging `gateway.worker.exited` and `gateway.worker.restarted`;
- passes SIGTERM and SIGINT on to every worker and waits for all (each drains as one process
  does), SIGHUP (each reloads) and SIGUSR1 (each reopens its log) likewise;
- owns `[metrics] listen`: /readyz is ready when every worker is, /metrics sums them
  (http/host.py); and the receipt page and the console, from a thread of lower CPU priority
  than the workers (http/pagehost.py);
- with `[audit] log = "-"`, shares its standard output with the workers, every process
  writing each line whole under a lock file of the run's (ChainedLog.to_stream), so lines of
  different processes never mix inside one line.

It serves no mail and writes no record; it decides nothing about a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog
from prometheus_client.multiprocess import mark_process_dead

from gateway import __version__
from gateway.app import Parts, check_state_dir, log_opened, prepare, watch_log
from gateway.audit.anchoring import anchored
from gateway.audit.chain import ChainedLog
from gateway.audit.log import configure_logging
from gateway.clock import Clock
from gateway.config import GatewaySettings
from gateway.errors import ConfigError, GatewayError
from gateway.forking import ForkedProcess, Main, can_fork, fork_worker, freeze_for_fork
from gateway.http.health import Endpoint, start_endpoint
from gateway.http.host import HostReadiness, WorkerProbe, host_registry
from gateway.http.pagehost import PageHost
from gateway.policy.restart import Backoff
from gateway.role import stdout_lock
from gateway.smtp.listeners import bind_listeners
from gateway.store.backend import StoreLocation, queue_gauges

__all__ = ["supervise"]

log = structlog.get_logger()

# A worker has this long from its start to serving (interpreter, imports, templates, store).
START_TIMEOUT_S = 60.0
# After SIGTERM, workers get their drain_timeout and this much more before SIGKILL.
STOP_GRACE_S = 10.0
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
# How a worker ends when asked to stop: drained (0), or by the signal itself when it came
# before the worker had its handlers (still starting).
_CLEAN = (0, -signal.SIGTERM, -signal.SIGINT)


class WorkerProcess(Protocol):
    """A worker's process: asyncio's, when started as a new interpreter, or forked."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    async def wait(self) -> int: ...
    def send_signal(self, signum: int) -> None: ...
    def kill(self) -> None: ...


@dataclass(slots=True)
class _Worker:
    """One worker slot: its process now, and how its restarts go."""

    index: int
    process: WorkerProcess | None = None
    started: float = 0.0  # monotonic
    health_port: int | None = None  # its /readyz, while it serves
    backoff: Backoff = field(default_factory=Backoff)


def supervise(
    settings: GatewaySettings, *, config: Path | None, as_of: str | None, main: Main
) -> int:
    """Run `settings.server.workers` workers until SIGTERM or SIGINT; returns the exit status
    (0 stopped, 1 could not start, 2 configuration error). `main` is the command line's
    entry, which a forked worker runs."""
    opened = _open(settings, as_of=as_of)
    if isinstance(opened, int):
        return opened
    parts, sockets, run_dir = opened
    supervisor = Supervisor(
        settings,
        sockets,
        clock=parts.clock,
        run_dir=run_dir,
        config=config,
        as_of=as_of,
        worker_main=main,
    )
    try:
        # Before the audit log is opened, and before any thread or event loop: the workers
        # inherit only the imported code, the listeners and their pipes (forking.py).
        supervisor.fork_workers()
        supervisor.chain = _open_log(settings, parts, run_dir)
        # The store is made (or migrated) here, once, before any worker opens it.
        store = StoreLocation.from_settings(settings)
        with anchored(supervisor.chain, store, every_s=settings.audit.checkpoint_interval):
            return asyncio.run(supervisor.run())
    except (GatewayError, OSError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        supervisor.abandon_forked()
        for sock in sockets:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


_Opened = tuple[Parts, list[socket.socket], Path]


def _open(settings: GatewaySettings, *, as_of: str | None) -> _Opened | int:
    """Everything a host needs before its first worker starts: the checks one process makes,
    the bound listeners and this run's directory; or the exit status when one of them fails
    (its one line already on stderr)."""
    try:
        check_state_dir(settings.storage.state_dir)
    except OSError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        # Checked once, here, as one process would: a broken template set or certificate is a
        # configuration error before any worker starts, and a first start's DKIM key is made
        # once rather than raced for by every worker.
        parts = prepare(settings, as_of=as_of)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return 2
    try:
        sockets = bind_listeners(settings.server.listen)
    except OSError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        run_dir = _run_dir(settings.storage.state_dir)
    except OSError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        for sock in sockets:
            sock.close()
        return 1
    return parts, sockets, run_dir


def _open_log(settings: GatewaySettings, parts: Parts, run_dir: Path) -> ChainedLog | None:
    """The supervisor's own audit log, its first lines written."""
    structlog.contextvars.bind_contextvars(node=settings.server.node)
    chain = configure_logging(settings.audit, shared_with=stdout_lock(run_dir))
    log_opened(parts, chain, settings.audit.log)
    return chain


def _run_dir(state_dir: Path) -> Path:
    """This run's directory for the workers' metrics files, with those of runs whose
    supervisor is gone removed (their counts belong to no running host)."""
    runs = state_dir.absolute() / "run"  # absolute: it is on the workers' command lines
    runs.mkdir(exist_ok=True)
    for old in runs.iterdir():
        if old.name.isdigit() and not _is_running(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    mine = runs / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    (mine / "metrics").mkdir(parents=True)
    return mine


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class Supervisor:
    """The worker processes of one `gateway serve`, and the signals that steer them."""

    def __init__(
        self,
        settings: GatewaySettings,
        sockets: Sequence[socket.socket],
        *,
        clock: Clock,
        run_dir: Path,
        config: Path | None,
        as_of: str | None,
        worker_main: Main,
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.chain: ChainedLog | None = None  # opened once the workers are forked
        self.clock = clock
        self.run_dir = run_dir
        self.metrics_dir = run_dir / "metrics"
        self.config = config
        self.as_of = as_of
        self.workers = [_Worker(i) for i in range(1, settings.server.workers + 1)]
        self.stopping: str | None = None
        self._stopped = asyncio.Event()
        self._watches: list[asyncio.Task[None]] = []
        # Workers forked at start and not yet released: the process, its ready pipe's end.
        self._forked: dict[int, tuple[ForkedProcess, int]] = {}
        self.worker_main = worker_main  # what a forked worker runs

    async def run(self) -> int:
        """Start the workers, serve until told to stop, stop them; returns the exit status."""
        loop = asyncio.get_running_loop()
        for signum in _FORWARDED:
            loop.add_signal_handler(signum, self._on_signal, signum)
        endpoint: Endpoint | None = None
        # The receipt page and the console are the host's, like /metrics, but served from a
        # thread of lower priority than the workers' mail (http/pagehost.py).
        pages = PageHost()
        watch_chain = None
        try:
            endpoint = await self._start_endpoint()
            receipts, console = await pages.start(self.settings, self.clock)
            if console is not None:
                log.info("gateway.console.listening", host=console.host, port=console.port)
            log.info(
                "gateway.supervisor.started",
                version=__version__,
                workers=len(self.workers),
                state_dir=str(self.settings.storage.state_dir),
                as_of=self.as_of,
            )
            if self.chain is not None:
                watch_chain = asyncio.create_task(watch_log(self.chain), name="audit-log")
            failed = await self._start_all()
            if failed is None and self.stopping is None:
                self._announce(endpoint, receipts)
                await self._stopped.wait()
            status = await self._stop_all()
            return status if failed is None else failed
        finally:
            if watch_chain is not None:
                watch_chain.cancel()
            for signum in _FORWARDED:
                loop.remove_signal_handler(signum)
            await pages.close()
            if endpoint is not None:
                await endpoint.close()

    # -- starting ------------------------------------------------------------------------------

    async def _start_all(self) -> int | None:
        """Start every worker and wait until each serves; None when all do, else the exit
        status to end with (2 when a worker found a configuration error, else 1)."""
        results = await asyncio.gather(*(self._start(w) for w in self.workers))
        for worker, status in zip(self.workers, results, strict=True):
            if status is None:
                self._watches.append(
                    asyncio.create_task(self._watch(worker), name=f"worker-{worker.index}")
                )
        failures = [s for s in results if s is not None]
        if not failures or self.stopping is not None:
            return None
        self.stopping = "worker-start-failed"
        return 2 if 2 in failures else 1

    def fork_workers(self) -> None:
        """Fork every worker now, to be released when it would be started; where this
        process may not fork, the workers are started as new interpreters instead."""
        if not can_fork():
            return
        freeze_for_fork()
        fds = [s.fileno() for s in self.sockets]
        env = {"PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        for worker in self.workers:
            read_end, write_end = os.pipe()
            held = [read_end, *(fd for p, r in self._forked.values() for fd in (*p.fds, r))]
            try:
                arguments = self._arguments(worker.index, fds, write_end)
                forked = fork_worker(
                    self.worker_main, arguments, env=env, pass_fds=fds, close_fds=held
                )
            finally:
                os.close(write_end)
            if forked is None:
                os.close(read_end)
                return
            self._forked[worker.index] = (forked, read_end)

    def abandon_forked(self) -> None:
        """End the forked workers that were never released (the start failed before them)."""
        for forked, read_end in self._forked.values():
            os.close(read_end)
            forked.abandon()
        self._forked.clear()

    async def _start(self, worker: _Worker) -> int | None:
        """Start one worker (release it, if forked) and wait until it serves; None once it
        does, else its exit status (it ended before serving, or was killed for not serving
        in time)."""
        process: WorkerProcess
        forked = self._forked.pop(worker.index, None)
        if forked is not None:
            process, read_end = forked
            forked[0].release()
        else:
            process, read_end = await self._spawn(worker)
        worker.process, worker.started, worker.health_port = process, time.monotonic(), None
        log.info(
            "gateway.worker.started",
            worker=worker.index,
            pid=process.pid,
            forked=forked is not None,
        )
        if self.stopping is not None:
            process.send_signal(signal.SIGTERM)  # told to stop while it was being started
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                said = await asyncio.to_thread(_read_all, read_end)
        except TimeoutError:
            process.kill()  # its pipe closes with it, and the reading thread ends
            said = b""
        if not said.strip().isdigit():
            return await self._reap(worker)
        worker.health_port = int(said) or None
        return None

    async def _spawn(self, worker: _Worker) -> tuple[WorkerProcess, int]:
        """Start the worker as a new interpreter; the process and its ready pipe's end."""
        read_end, write_end = os.pipe()
        fds = [s.fileno() for s in self.sockets]
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                *self._arguments(worker.index, fds, write_end),
                pass_fds=(*fds, write_end),
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)},
                # A process group of its own: a signal to ours (a terminal's Ctrl-C, a group
                # kill) reaches each worker once, passed on by us, never twice, and never
                # its composer processes directly.
                process_group=0,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return process, read_end

    def _arguments(self, index: int, fds: Sequence[int], ready_fd: int) -> list[str]:
        """The worker's `gateway` arguments, forked or started."""
        command = ["serve"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        if self.as_of is not None:
            command += ["--as-of", self.as_of]
        return [
            *command,
            "--worker-index",
            str(index),
            "--workers",
            str(len(self.workers)),
            "--listen-fds",
            ",".join(str(fd) for fd in fds),
            "--ready-fd",
            str(ready_fd),
            "--run-dir",
            str(self.run_dir),
        ]

    def _announce(self, endpoint: Endpoint | None, receipts: Endpoint | None) -> None:
        # gateway.listening last, once every worker serves: tests and orchestrators take it
        # as "up", as they do from one process.
        for event, http in (("metrics", endpoint), ("lookup", receipts)):
            if http is not None:
                log.info(f"gateway.{event}.listening", host=http.host, port=http.port)
        for sock in self.sockets:
            host, port = sock.getsockname()[:2]
            log.info("gateway.listening", host=host, port=port)

    async def _start_endpoint(self) -> Endpoint | None:
        listen = self.settings.metrics.listen
        if listen is None:
            return None
        gauges = queue_gauges(StoreLocation.from_settings(self.settings))
        is_shared = self.settings.storage.is_shared
        registry = host_registry(self.metrics_dir, gauges, self.clock, is_shared=is_shared)
        readiness = HostReadiness(
            lambda: [WorkerProbe(w.index, w.health_port) for w in self.workers],
            timeout_s=self.settings.metrics.ready_timeout + 1.0,
        )
        return await start_endpoint(listen, registry, readiness, on_close=gauges.close)

    # -- watching and restarting ---------------------------------------------------------------

    async def _watch(self, worker: _Worker) -> None:
        """Wait for the serving worker to end and start it again, until stopping."""
        while True:
            await self._reap(worker)
            if not await self._restart(worker):
                return

    async def _restart(self, worker: _Worker) -> bool:
        """Start the worker again after its backoff, and again while it ends before serving;
        returns whether it serves (False: told to stop meanwhile)."""
        while self.stopping is None:
            delay = worker.backoff.after(time.monotonic() - worker.started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()
            if self.stopping is not None:
                return False
            failed = await self._start(worker)  # an end before serving is reaped there
            assert worker.process is not None
            log.warning(
                "gateway.worker.restarted",
                worker=worker.index,
                pid=worker.process.pid,
                delay_s=delay,
                restarts=worker.backoff.restarts,
            )
            if failed is None:
                return True  # serving, or stopping and told so: reaped when it ends
        return False

    async def _reap(self, worker: _Worker) -> int:
        """Wait for the worker's process to end, log it, forget its live gauges; returns its
        exit status (negative: the signal that ended it)."""
        process = worker.process
        assert process is not None
        status = await process.wait()
        worker.health_port = None
        # Its open sessions end with it; its counters still count for the host.
        mark_process_dead(process.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        expected = self.stopping is not None and status in _CLEAN
        ended = {
            "worker": worker.index,
            "pid": process.pid,
            "status": status if status >= 0 else signal.Signals(-status).name,
            "ran_s": round(time.monotonic() - worker.started, 3),
            "expected": expected,
        }
        if expected:
            log.info("gateway.worker.exited", **ended)
        else:
            log.error("gateway.worker.exited", **ended)
        return status

    # -- signals and stopping ------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping is None:
                self.stopping = signal.Signals(signum).name
                self._stopped.set()
            return  # _stop_all passes it on, once
        if self.chain is not None:
            # As one process does: SIGHUP and SIGUSR1 reopen the log (after logrotate).
            self.chain.reopen()
        self._forward(signal.Signals(signum))

    def _live(self) -> list[WorkerProcess]:
        return [
            w.process
            for w in self.workers
            if w.process is not None and w.process.returncode is None
        ]

    def _forward(self, signum: signal.Signals) -> None:
        live = self._live()
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        log.info("gateway.signal.forwarded", signal=signum.name, workers=len(live))

    async def _stop_all(self) -> int:
        """Pass SIGTERM (SIGINT if that was the signal) on and wait for every worker to end,
        killing any still there past its drain bound; 0 when each ended as asked."""
        self.stopping = self.stopping or "start-failed"
        self._stopped.set()
        log.info("gateway.supervisor.stopping", reason=self.stopping, workers=len(self._live()))
        self._forward(signal.SIGINT if self.stopping == "SIGINT" else signal.SIGTERM)
        bound = self.settings.server.drain_timeout + STOP_GRACE_S
        try:
            async with asyncio.timeout(bound):
                await asyncio.gather(*self._watches)
        except TimeoutError:
            for process in self._live():
                process.kill()
            await asyncio.gather(*self._watches)
        statuses = [w.process.returncode for w in self.workers if w.process is not None]
        status = 0 if all(s in _CLEAN for s in statuses) else 1
        log.info("gateway.supervisor.stopped", status=status)
        return status


def _read_all(fd: int) -> bytes:
    """Everything written to the pipe until its writer closes it (blocking: in a thread)."""
    chunks = []
    try:
        while chunk := os.read(fd, 64):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
