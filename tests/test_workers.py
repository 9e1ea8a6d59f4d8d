"""`gateway serve` with `[server] workers = 2`: a supervisor and two worker processes, for real.

Each test starts `python -m gateway serve` as an operator would, talks SMTP over loopback to
the one port the supervisor bound, and finds which worker serves a connection from that
worker's `smtp.session.opened` event (its `peer_port` is the client's own port). Signals go to
the supervisor, or SIGKILL straight to one worker. What the replies promised is then checked
in the store, as an operator's tools would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.config import ServerSettings
from gateway.policy.restart import Backoff
from gateway.store.outbox import find_jobs
from gateway.store.queries import read_message
from tests.polling import eventually
from tests.test_faults import readyz
from tests.test_metrics import scrape, value
from tests.test_serve_process import (
    AFTER_CUTOFF,
    CHICAGO_OFFICE,
    RETIRED,
    SENDER,
    SMTP_TIMEOUT,
    STOP_TIMEOUT,
    Attempt,
    Reply,
    ServeProcess,
    assert_one_line_error,
    assert_recorded,
    database,
    read_store,
    run_cli,
    send,
    send_data,
    serving,
    smtp_session,
    start_serve,
    write_config,
)

WORKERS = 2
# Connections opened, at most, to find one served by each worker (the kernel hands each to
# whichever worker accepts first; both wait on the one socket).
MAX_CONNECTIONS = 100
LOAD_TIMEOUT = 60.0


def workers_config(tmp_path: Path, **kwargs: Any) -> Path:
    return write_config(tmp_path, workers=WORKERS, **kwargs)


async def worker_of(gateway: ServeProcess, client: aiosmtplib.SMTP) -> int:
    """Which worker serves this connection, from its smtp.session.opened event."""
    assert client.transport is not None
    port = client.transport.get_extra_info("sockname")[1]
    async with asyncio.timeout(SMTP_TIMEOUT):
        opened = await gateway.first(
            lambda e: e.get("event") == "smtp.session.opened" and e.get("peer_port") == port
        )
    return int(opened["worker"])


async def one_per_worker(
    gateway: ServeProcess, port: int, stack: contextlib.AsyncExitStack
) -> dict[int, aiosmtplib.SMTP]:
    """An open session with each worker (the others opened on the way stay open, idle)."""
    found: dict[int, aiosmtplib.SMTP] = {}
    for _ in range(MAX_CONNECTIONS):
        client = await stack.enter_async_context(smtp_session(port))
        found.setdefault(await worker_of(gateway, client), client)
        if len(found) == WORKERS:
            return found
    raise AssertionError(f"{MAX_CONNECTIONS} connections, all served by worker {set(found)}")


def named(name: str, **keys: object) -> Callable[[dict[str, Any]], bool]:
    """Matches the event called `name` whose keys have these values."""

    def matches(event: dict[str, Any]) -> bool:
        return event.get("event") == name and all(event.get(k) == v for k, v in keys.items())

    return matches


def started_pid(gateway: ServeProcess, worker: int) -> int:
    """The pid of the worker's latest process."""
    starts = [e for e in gateway.named("gateway.worker.started") if e["worker"] == worker]
    assert starts, f"worker {worker} never started"
    return int(starts[-1]["pid"])


def process_alive(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# ---------------------------------------------------------------------------------------------
# 1. The store under two writing processes: dedup and the hourly limit hold across them


async def test_the_same_filing_sent_to_both_workers_at_once_gets_one_notice(
    tmp_path: Path,
) -> None:
    config = workers_config(tmp_path)
    filing = Attempt(7, SENDER, RETIRED)  # one Message-ID: the same filing, sent twice
    async with serving(config, as_of=AFTER_CUTOFF) as served, contextlib.AsyncExitStack() as s:
        clients = await one_per_worker(served.gateway, served.port, s)
        async with asyncio.timeout(SMTP_TIMEOUT):
            replies = await asyncio.gather(*(send(c, filing) for c in clients.values()))
        assert await served.gateway.stop() == 0

    assert [r.code for r in replies] == [550, 550]  # each is told NOT FILED, with its record
    db = database(tmp_path)
    references = [r.reference for r in replies]
    records = read_store(db, lambda conn: [read_message(conn, ref) for ref in references])
    assert all(record is not None for record in records)
    jobs = read_store(
        db, lambda conn: [j for r in references for j in find_jobs(conn, reference=r)]
    )
    notices = [job for job in jobs if job.kind == "notice"]
    assert len(notices) == 1
    first = notices[0].reference
    (second,) = [r for r in records if r is not None and r.reference != first]
    assert second.duplicate_of == first


async def test_a_senders_hourly_limit_holds_across_both_workers(tmp_path: Path) -> None:
    limit = ("[metrics]", "[limits]\nnotices_per_sender = 2\n\n[metrics]")
    config = workers_config(tmp_path, edit=limit)
    async with serving(config, as_of=AFTER_CUTOFF) as served, contextlib.AsyncExitStack() as s:
        clients = await one_per_worker(served.gateway, served.port, s)
        one, two = clients[1], clients[2]
        async with asyncio.timeout(4 * SMTP_TIMEOUT):
            replies = [
                await send(one, Attempt(1, SENDER, RETIRED)),
                await send(two, Attempt(2, SENDER, RETIRED)),
                await send(one, Attempt(3, SENDER, RETIRED)),
                await send(two, Attempt(4, SENDER, RETIRED)),
            ]
        assert await served.gateway.stop() == 0

    assert [r.code for r in replies] == [550, 550, 451, 451]
    assert all(r.text.startswith("451 4.7.1 ") for r in replies[2:])
    db = database(tmp_path)
    notices = [j for j in read_store(db, lambda conn: find_jobs(conn)) if j.kind == "notice"]
    assert len(notices) == 2


# ---------------------------------------------------------------------------------------------
# 2. SIGKILL of one worker under load: nothing promised is lost, it is restarted, the other
#    serves on


async def keep_sending(
    client: aiosmtplib.SMTP, attempts: list[Attempt], replies: list[Reply]
) -> None:
    """Send each attempt in turn, keeping every reply to DATA, until the server goes away."""
    for attempt in attempts:
        try:
            replies.append(await send(client, attempt))
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException):
            return


def filing(number: int) -> Attempt:
    # A sender each: the load would pass one sender's hourly limit of notices.
    return Attempt(number, f"paralegal-{number}@lawfirm.example", RETIRED)


async def test_sigkill_of_one_worker_under_load_loses_no_promise_and_it_is_restarted(
    tmp_path: Path,
) -> None:
    config = workers_config(tmp_path)
    per_client = 40  # 81 notices in all: under notices_per_client (100) for the one client IP
    async with serving(config, as_of=AFTER_CUTOFF) as served, contextlib.AsyncExitStack() as s:
        gateway = served.gateway
        clients = await one_per_worker(gateway, served.port, s)
        victim, survivor = clients[1], clients[2]
        victim_pid = started_pid(gateway, 1)
        replies: dict[int, list[Reply]] = {1: [], 2: []}
        numbers = iter(range(1, 2 * per_client + 1))
        load = {
            index: asyncio.create_task(
                keep_sending(
                    client,
                    [filing(next(numbers)) for _ in range(per_client)],
                    replies[index],
                )
            )
            for index, client in ((1, victim), (2, survivor))
        }
        async with asyncio.timeout(LOAD_TIMEOUT):
            await eventually(lambda: len(replies[1]) >= 5, within=LOAD_TIMEOUT)
            os.kill(victim_pid, signal.SIGKILL)
            served_at_kill = len(replies[2])
            await asyncio.gather(*load.values())
            restarted = await gateway.first(named("gateway.worker.restarted", worker=1))
            async with smtp_session(served.port) as late:
                after = await send(late, filing(1000))
        assert await gateway.stop() == 0

    assert len(replies[1]) < per_client  # the kill cut the victim's load short
    assert len(replies[2]) == per_client  # the other worker served all of its load
    assert len(replies[2]) > served_at_kill  # ... and went on doing so after the kill
    (exited,) = [e for e in gateway.named("gateway.worker.exited") if e["pid"] == victim_pid]
    assert (exited["status"], exited["expected"]) == ("SIGKILL", False)
    assert restarted["pid"] != victim_pid
    assert after.code == 550
    db = database(tmp_path)
    for reply in [*replies[1], *replies[2], after]:
        assert_recorded(db, reply)


async def test_workers_whose_supervisor_is_killed_drain_and_stop(tmp_path: Path) -> None:
    config = workers_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        pids = [started_pid(gateway, index) for index in (1, 2)]
        gateway.process.kill()  # no signal to pass on: the workers must notice by themselves
        async with asyncio.timeout(STOP_TIMEOUT):
            for index in (1, 2):
                await gateway.first(named("gateway.stopped", worker=index))
            await eventually(lambda: not any(process_alive(p) for p in pids), within=STOP_TIMEOUT)
    stopping = gateway.named("gateway.stopping")
    assert sorted((e["worker"], e["reason"]) for e in stopping) == [
        (1, "supervisor-gone"),
        (2, "supervisor-gone"),
    ]


# ---------------------------------------------------------------------------------------------
# 3. SIGTERM drains every worker; SIGHUP reloads in every worker


async def test_sigterm_drains_every_worker_and_stops_all_within_the_drain_bound(
    tmp_path: Path,
) -> None:
    drain_s = 8.0
    config = workers_config(tmp_path, drain_timeout=drain_s)
    async with serving(config, as_of=AFTER_CUTOFF) as served, contextlib.AsyncExitStack() as s:
        gateway = served.gateway
        clients = await one_per_worker(gateway, served.port, s)
        attempts = {index: Attempt(index, SENDER, RETIRED) for index in clients}
        async with asyncio.timeout(STOP_TIMEOUT):
            for index, client in clients.items():
                await client.mail(SENDER)
                await client.rcpt(attempts[index].recipient)
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            for index in clients:
                await gateway.first(named("gateway.stopping", worker=index))
            replies = [await send_data(c, attempts[i]) for i, c in clients.items()]
            status = await gateway.finish()
            took = time.monotonic() - signalled

    assert status == 0, gateway.stderr
    assert took < drain_s  # the transactions ended it, not the bound
    assert [r.code for r in replies] == [550, 550]
    stopped = gateway.named("gateway.stopped")
    assert sorted(e["worker"] for e in stopped) == [1, 2]
    assert all(e["sessions_cut"] == 0 for e in stopped)
    exited = gateway.named("gateway.worker.exited")
    assert [(e["status"], e["expected"]) for e in exited] == [(0, True), (0, True)]
    for reply in replies:
        assert_recorded(database(tmp_path), reply)


async def test_sighup_reloads_the_config_in_every_worker(tmp_path: Path) -> None:
    config = workers_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("idle_timeout = 30", "idle_timeout = 45"), encoding="utf-8")
        gateway.process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(STOP_TIMEOUT):
            for index in (1, 2):
                reloaded = await gateway.first(named("gateway.reloaded", worker=index))
                assert reloaded["changed"] == ["server"]
        assert await gateway.stop() == 0
    assert len(gateway.named("gateway.reloaded")) == WORKERS  # once each, not twice


# ---------------------------------------------------------------------------------------------
# 4. /metrics and /readyz answer for the host


async def test_metrics_sum_both_workers_and_readyz_waits_for_every_worker(
    tmp_path: Path,
) -> None:
    config = workers_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served, contextlib.AsyncExitStack() as s:
        gateway = served.gateway
        port = int((await gateway.event("gateway.metrics.listening"))["port"])
        clients = await one_per_worker(gateway, served.port, s)
        async with asyncio.timeout(2 * SMTP_TIMEOUT):
            for n, client in enumerate(clients.values()):
                await send(client, Attempt(n, SENDER, RETIRED))
        samples = await scrape(f"http://127.0.0.1:{port}")
        ready = await readyz(port)
        os_kill(started_pid(gateway, 2))
        async with asyncio.timeout(STOP_TIMEOUT):
            await gateway.first(named("gateway.worker.exited"))
        while_down = await readyz(port)
        async with asyncio.timeout(STOP_TIMEOUT):
            await gateway.first(named("gateway.worker.restarted"))
        ready_again = await eventually_ready(port)
        after = await scrape(f"http://127.0.0.1:{port}")
        assert await gateway.stop() == 0

    rejected = {"outcome": "rejected", "office": CHICAGO_OFFICE}
    assert value(samples, "gateway_smtp_messages_total", **rejected) == 2
    assert value(samples, "gateway_smtp_sessions_open") >= WORKERS  # the sessions held open
    assert ready[0] == 200
    assert sorted(ready[1]["checks"]) == ["worker-1", "worker-2"]
    assert while_down[0] == 503
    assert "worker-2" in while_down[1]["failing"]
    assert ready_again["ready"] is True
    # A dead worker's counts still count for the host; its open sessions went with it.
    assert value(after, "gateway_smtp_messages_total", **rejected) == 2


def os_kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


async def eventually_ready(port: int) -> dict[str, Any]:
    """/readyz's body once it answers 200, asked every 0.1 s for at most STOP_TIMEOUT."""
    deadline = time.monotonic() + STOP_TIMEOUT
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = await readyz(port)
        if status == 200:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz not ready within {STOP_TIMEOUT} s: {body}")


# ---------------------------------------------------------------------------------------------
# 5. Audit logs: a file and a chain per worker; verify checks all; a restart continues its own


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def test_each_worker_keeps_its_own_chain_and_verify_checks_them_all(
    tmp_path: Path,
) -> None:
    log = tmp_path / "logs" / "gateway.log"
    log.parent.mkdir()
    config = workers_config(tmp_path, edit=('log = "-"', f"log = {json.dumps(str(log))}"))
    worker_logs = {i: log.with_name(f"gateway.worker-{i}.log") for i in (1, 2)}
    async with serving_to_files(config, log) as gateway:
        chains_at_start = {i: events_of(p)[0]["chain"] for i, p in worker_logs.items()}
        old_pid = pid_in(worker_logs[1])
        assert old_pid is not None
        os_kill(old_pid)
        await eventually(
            lambda: len([e for e in events_of(log) if e["event"] == "gateway.worker.restarted"]),
            within=STOP_TIMEOUT,
        )
        await eventually(lambda: pid_in(worker_logs[1]) != old_pid, within=STOP_TIMEOUT)
        gateway.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT):
            assert await gateway.wait() == 0

    reopened = [e for e in events_of(worker_logs[1]) if e["event"] == "gateway.log.opened"]
    assert [e["continued"] for e in reopened] == [False, True]
    assert {e["chain"] for e in events_of(worker_logs[1])} == {chains_at_start[1]}
    assert len({chains_at_start[1], chains_at_start[2], events_of(log)[0]["chain"]}) == 3
    checked = run_cli("audit", "verify", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("its first record matches its anchor in the store") == 3
    assert "OK:" in checked.stdout


def pid_in(worker_log: Path) -> int | None:
    """The pid of the worker process that last started writing this log, from the
    supervisor's gateway.worker.started events beside it."""
    supervisor_log = worker_log.with_name("gateway.log")
    index = int(worker_log.name.split("worker-")[1].split(".")[0])
    starts = [
        e
        for e in events_of(supervisor_log)
        if e["event"] == "gateway.worker.started" and e["worker"] == index
    ]
    return int(starts[-1]["pid"]) if starts else None


@contextlib.asynccontextmanager
async def serving_to_files(config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`gateway serve` logging to files: up once the supervisor's log says gateway.listening."""
    process = await start_serve(config, as_of=AFTER_CUTOFF, stdout=subprocess.DEVNULL)
    try:
        await eventually(
            lambda: any(e["event"] == "gateway.listening" for e in events_of(log)), within=20
        )
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        async with asyncio.timeout(STOP_TIMEOUT):
            await process.communicate()


# ---------------------------------------------------------------------------------------------
# 5b. The first workers are forked, sharing the supervisor's imported code


def shared_dirty_kib(pid: int) -> int:
    """Memory the process has written and still shares with another (a forked parent's
    pages it has not written since, counted by the kernel in smaps_rollup)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="ascii").splitlines():
        if line.startswith("Shared_Dirty:"):
            return int(line.split()[1])
    raise AssertionError(f"no Shared_Dirty for {pid}")


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text(encoding="utf-8").split("\0")


# A forked worker shares some 35 MiB of the supervisor's written pages (its imports); a new
# interpreter shares none with anyone (only clean pages of the libraries it maps).
FORKED_SHARED_KIB = 16 * 1024


async def test_first_workers_are_forked_and_share_memory_and_a_restart_is_a_new_interpreter(
    tmp_path: Path,
) -> None:
    config = workers_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        starts = gateway.named("gateway.worker.started")
        assert sorted((e["worker"], e["forked"]) for e in starts) == [(1, True), (2, True)]
        first = [started_pid(gateway, index) for index in (1, 2)]
        for pid in first:
            assert shared_dirty_kib(pid) >= FORKED_SHARED_KIB
        os.kill(first[0], signal.SIGKILL)
        async with asyncio.timeout(STOP_TIMEOUT):
            await gateway.first(named("gateway.worker.restarted", worker=1))
        again = started_pid(gateway, 1)
        restart = [e for e in gateway.named("gateway.worker.started") if e["pid"] == again]
        assert restart[0]["forked"] is False
        assert shared_dirty_kib(again) < FORKED_SHARED_KIB
        assert command_line(again)[1:5] == ["-m", "gateway", "serve", "--config"]
        # Whichever way each was started, both serve: a filing refused, with its record.
        async with contextlib.AsyncExitStack() as stack:
            clients = await one_per_worker(gateway, served.port, stack)
            replies = [await send(clients[i], filing(i)) for i in (1, 2)]
        assert await gateway.stop() == 0
    assert [r.code for r in replies] == [550, 550]
    db = database(tmp_path)
    for reply in replies:
        assert_recorded(db, reply)


def test_a_supervisor_whose_log_cannot_open_leaves_no_forked_worker_behind(
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-directory").write_text("", encoding="utf-8")
    log_path = tmp_path / "not-a-directory" / "audit.log"
    config = workers_config(tmp_path, edit=('log = "-"', f'log = "{log_path}"'))
    result = run_cli("serve", "--config", str(config), "--as-of", AFTER_CUTOFF, cwd=tmp_path)
    assert_one_line_error(result, exit_code=1, naming="not-a-directory")
    assert "gateway.started" not in result.stdout  # forked, but never released to serve
    # The forked workers carry the supervisor's command line: none is left running.
    left = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, text=True)
    assert left.stdout == ""


# ---------------------------------------------------------------------------------------------
# 6. The setting, and a supervisor that cannot start


def test_workers_default_to_one_per_cpu() -> None:
    assert ServerSettings().workers == (os.cpu_count() or 1)


def test_check_config_shows_workers_and_refuses_none(tmp_path: Path) -> None:
    shown = run_cli("check-config", "--config", str(workers_config(tmp_path)), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"server.workers = {WORKERS}" in shown.stdout.splitlines()
    broken = write_config(tmp_path, workers=0, name="broken.toml")
    refused = run_cli("check-config", "--config", str(broken), cwd=tmp_path)
    assert_one_line_error(refused, exit_code=2, naming="server.workers")


def test_a_supervisor_on_a_port_in_use_says_so_in_one_line_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = workers_config(tmp_path, listen=f"127.0.0.1:{port}")
        result = run_cli("serve", "--config", str(config), "--as-of", AFTER_CUTOFF, cwd=tmp_path)
    assert_one_line_error(result, exit_code=1, naming=str(port))
    assert "in use" in result.stderr.lower()
    assert "gateway.worker.started" not in result.stdout  # bound before any worker started


@pytest.mark.parametrize(
    ("lives_s", "delays"),
    [
        ([0.1, 0.1, 0.1, 0.1], [0.5, 1.0, 2.0, 4.0]),  # dying at once: doubling
        ([0.1] * 9, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]),  # capped
        ([0.1, 0.1, 120.0, 0.1], [0.5, 1.0, 0.5, 1.0]),  # served a while: from the start
    ],
)
def test_restarts_back_off_doubling_to_a_cap_and_start_over_after_a_good_run(
    lives_s: list[float], delays: list[float]
) -> None:
    backoff = Backoff()
    assert [backoff.after(ran_s) for ran_s in lives_s] == delays
