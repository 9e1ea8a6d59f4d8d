"""Two MX hosts, one record: two `gateway serve` processes sharing the tests' PostgreSQL.

Each node has its own state directory, port and audit log; only the store is shared. The
notices go by smarthost to a real recording listener (tests/sink.py), so "one notice" is
what a sender would count in their mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.polling import eventually
from tests.postgres import PostgresServer, postgres
from tests.sink import Sink, start_sink
from tests.test_auditcmd import serving_to
from tests.test_metrics import fetch, scrape, value
from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    SENDER,
    Attempt,
    Listening,
    Reply,
    child_environment,
    send,
    send_batch,
    serving,
    smtp_session,
    write_config,
)

__all__ = ["postgres"]

_databases = itertools.count(1)


async def shared_database(server: PostgresServer) -> str:
    """A fresh database's URL for one test, without its password (that goes in the env)."""
    dsn = await asyncio.to_thread(server.create_database, f"nodes_{next(_databases)}")
    return make_conninfo(dsn, password="")


def node_config(
    tmp_path: Path,
    node: str,
    *,
    url: str,
    sink: Sink,
    extra: str = "",
    lease_s: float = 600,
    workers: int = 1,
) -> Path:
    """A node's config: its own directory and port, the shared store, the sink as smarthost."""
    directory = tmp_path / node
    directory.mkdir()
    path = write_config(
        directory,
        workers=workers,
        edit=(
            'mode = "file"',
            f'mode = "smarthost"\nsmarthost = "127.0.0.1:{sink.port}"\nstarttls = "opportunistic"\n'
            f"poll_interval = 0.05\nretry_schedule = [0.5]\nretry_jitter = 0\nlease = {lease_s}",
        ),
    )
    text = path.read_text(encoding="utf-8")
    text = text.replace("[storage]\n", f'[storage]\nurl = "{_bare(url)}"\n', 1)
    text = text.replace("[server]\n", f'[server]\nnode = "{node}"\n', 1)
    path.write_text(text + extra, encoding="utf-8")
    return path


def _bare(url: str) -> str:
    """The URL with no password at all: the config file must never hold one."""
    parts = {k: v for k, v in conninfo_to_dict(url).items() if k != "password"}
    return make_conninfo("", **parts)


def password_env(server: PostgresServer) -> dict[str, str]:
    return {"GATEWAY_STORAGE__PASSWORD": server.password}


@contextlib.asynccontextmanager
async def two_nodes(
    server: PostgresServer, first: Path, second: Path
) -> AsyncIterator[tuple[Listening, Listening]]:
    env = password_env(server)
    async with (
        serving(first, as_of=AFTER_CUTOFF, env=env) as one,
        serving(second, as_of=AFTER_CUTOFF, env=env) as two,
    ):
        yield one, two


def audit(config: Path, server: PostgresServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway audit ARGS` as an operator on that node runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_environment(**password_env(server)),
        cwd=config.parent,
        check=False,
    )


def query(server: PostgresServer, url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, password=server.password, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


async def test_the_same_filing_sent_to_both_nodes_gets_one_notice(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    first = node_config(tmp_path, "mx1", url=url, sink=sink)
    second = node_config(tmp_path, "mx2", url=url, sink=sink)
    filing = Attempt(1, SENDER, RETIRED)  # the same Message-ID, sender and bytes, twice
    try:
        async with two_nodes(postgres, first, second) as (one, two):
            async with smtp_session(one.port) as client:
                reply_one = await send(client, filing)
            async with smtp_session(two.port) as client:
                reply_two = await send(client, filing)
            received = await sink.wait_for(1, within=20)
            # Both nodes poll every 50 ms: a second notice would have come by now.
            await asyncio.sleep(1.5)
            events_one, events_two = one.gateway.events, two.gateway.events
            assert await one.gateway.stop() == 0
            assert await two.gateway.stop() == 0
    finally:
        sink.close()
    assert reply_one.code == reply_two.code == 550
    assert len(received) == len(sink.accepted) == 1
    notice = message_from_bytes(received[0].data)
    assert notice["References"] == "<1.serve-test@lawfirm.example>"
    rows = query(postgres, url, "SELECT node, duplicate_of FROM messages ORDER BY seq")
    assert rows == [("mx1", None), ("mx2", reply_one.reference)]
    # Every audit line names the node that wrote it.
    assert {e.get("node") for e in events_one} == {"mx1"}
    assert {e.get("node") for e in events_two} == {"mx2"}
    # `gateway audit` on either node answers for both, naming the node of each attempt.
    listed = await asyncio.to_thread(audit, second, postgres, "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted((i["node"], i["decision"], i["notice"]) for i in items) == [
        ("mx1", "rejected", "delivered"),
        ("mx2", "rejected", "suppressed:duplicate"),
    ]
    table = await asyncio.to_thread(audit, first, postgres, "list")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()[:3]
    assert header.split()[-1] == "NODE"
    assert sorted(row.split()[-1] for row in lines) == ["mx1", "mx2"]
    summary = await asyncio.to_thread(audit, first, postgres, "summary", "--format", "json")
    assert [json.loads(line)["attempts"] for line in summary.stdout.splitlines()] == [2]
    assert postgres.password not in listed.stdout + table.stdout + summary.stdout


async def test_a_senders_hourly_limit_holds_across_both_nodes(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    limit = "\n[limits]\nnotices_per_sender = 3\n"
    first = node_config(tmp_path, "mx1", url=url, sink=sink, extra=limit)
    second = node_config(tmp_path, "mx2", url=url, sink=sink, extra=limit)
    try:
        async with two_nodes(postgres, first, second) as (one, two):
            async with smtp_session(one.port) as client:
                replies = await send_batch(client, [Attempt(n, SENDER, RETIRED) for n in (1, 2)])
            async with smtp_session(two.port) as client:
                replies += await send_batch(
                    client, [Attempt(n, SENDER, RETIRED) for n in (3, 4, 5)]
                )
            await sink.wait_for(3, within=20)
            await asyncio.sleep(1.0)
            assert await one.gateway.stop() == 0
            assert await two.gateway.stop() == 0
    finally:
        sink.close()
    assert [r.code for r in replies] == [550, 550, 550, 451, 451]
    assert all("4.7.1" in r.text for r in replies[3:])
    assert len(sink.accepted) == 3


async def test_a_killed_nodes_leased_jobs_go_out_from_the_other_after_the_lease(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    sink.stall_s = 60.0  # every DATA hangs: mx1's jobs are in flight when it dies
    lease_s = 4.0
    first = node_config(tmp_path, "mx1", url=url, sink=sink, lease_s=lease_s)
    second = node_config(tmp_path, "mx2", url=url, sink=sink, lease_s=lease_s)
    env = password_env(postgres)
    try:
        async with serving(first, as_of=AFTER_CUTOFF, env=env) as one:
            async with smtp_session(one.port) as client:
                await send_batch(client, [Attempt(n, SENDER, RETIRED) for n in range(3)])
            await eventually(lambda: sink.attempts >= 3, within=20)
            one.gateway.process.kill()
        leased = query(
            postgres,
            url,
            "SELECT j.id, j.lease_until, m.message_id FROM jobs AS j JOIN messages AS m"
            " USING (reference) WHERE j.state = 'in-flight' AND j.lease_owner LIKE 'mx1:%'",
        )
        assert len(leased) == 3
        expires = min(row[1] for row in leased)
        sink.stall_s = 0.0
        async with serving(second, as_of=AFTER_CUTOFF, env=env) as two:
            # Until the lease runs out, mx2 leaves the jobs alone: mx1 might still be sending.
            while datetime.now(UTC) < expires - timedelta(seconds=0.5):
                assert sink.accepted == []
                await asyncio.sleep(0.1)
            received = await sink.wait_for(3, within=lease_s + 20)
            assert await two.gateway.stop() == 0
        arrived = datetime.now(UTC)
    finally:
        sink.close()
    assert arrived >= expires
    references = {str(message_from_bytes(r.data)["References"]).strip("<>") for r in received}
    assert references == {str(row[2]).strip("<>") for row in leased}
    attempts = query(postgres, url, "SELECT node, outcome FROM attempts")
    assert attempts == [("mx2", "delivered")] * 3


async def test_an_attempt_three_leases_long_keeps_its_node_and_sends_one_notice(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    sink.stall_s = 6.0  # DATA answered after three leases' time
    lease_s = 2.0
    first = node_config(tmp_path, "mx1", url=url, sink=sink, lease_s=lease_s)
    second = node_config(tmp_path, "mx2", url=url, sink=sink, lease_s=lease_s)
    leases: list[tuple[Any, ...]] = []
    try:
        async with two_nodes(postgres, first, second) as (one, two):
            async with smtp_session(one.port) as client:
                await send(client, Attempt(1, SENDER, RETIRED))
            await eventually(lambda: sink.attempts >= 1, within=20)
            # Both nodes poll every 50 ms: all through the stall, the job stays with the node
            # that took it, its lease renewed on the server's clock.
            while not sink.accepted:
                leases += query(
                    postgres, url, "SELECT lease_owner, lease_until > now() FROM jobs"
                    " WHERE state = 'in-flight'",
                )  # fmt: skip
                assert sink.attempts == 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(2 * lease_s)  # a second attempt would have begun by now
            events = one.gateway.events + two.gateway.events
            assert await one.gateway.stop() == 0
            assert await two.gateway.stop() == 0
    finally:
        sink.close()
    assert sink.attempts == len(sink.accepted) == 1
    owners = {owner for owner, _ in leases}
    assert len(owners) == 1, owners
    assert all(is_live for _, is_live in leases)
    (owner,) = owners
    attempts = query(postgres, url, "SELECT node, outcome FROM attempts")
    assert attempts == [(owner.partition(":")[0], "delivered")]
    assert not [e for e in events if e["event"] in ("outbox.lease_lost", "outbox.update_failed")]


RECEIPTS = "https://eservice-mx.agency.example/ref/"


async def _get(port: int, path: str) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        client.get(f"http://127.0.0.1:{port}{path}") as got,
    ):
        return got.status, await got.read()


async def test_the_receipt_page_on_one_node_answers_for_a_filing_the_other_took(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    lookup = f'\n[lookup]\nlisten = "127.0.0.1:0"\npublic_url = "{RECEIPTS}"\n'
    first = node_config(tmp_path, "mx1", url=url, sink=sink, extra=lookup)
    second = node_config(tmp_path, "mx2", url=url, sink=sink)
    try:
        async with two_nodes(postgres, first, second) as (one, two):
            port = int((await one.gateway.event("gateway.lookup.listening"))["port"])
            async with smtp_session(two.port) as client:
                reply = await send(client, Attempt(1, SENDER, RETIRED))
            await sink.wait_for(1, within=20)
            ref = reply.reference
            # The notice is recorded as sent just after the sink's answer.
            await eventually(lambda: query(postgres, url, "SELECT 1 FROM sent_notices"), within=10)
            found, body = await _get(port, f"/ref/{ref}.json")
            page = json.loads(body)
            status, html = await _get(port, f"/ref/{ref}")
            unknown = ref[:9] + ("Z" if ref[9] != "Z" else "Y") + ref[10:]
            missing = [await _get(port, path) for path in (f"/ref/{unknown}", "/ref/nonsense")]
            # The shared store away: the page says so (503), never 404 for a known reference.
            await asyncio.to_thread(postgres.stop, "fast")
            try:
                away, _ = await _get(port, f"/ref/{ref}")
            finally:
                await asyncio.to_thread(postgres.start)
            looked = [e for e in one.gateway.events if e["event"].startswith("receipt.")]
            assert await one.gateway.stop() == 0
            assert await two.gateway.stop() == 0
    finally:
        sink.close()
    assert reply.code == 550
    assert found == 200
    assert page["reference"] == ref
    assert page["notice"]["sent_at"] is not None
    assert page["status"] == "not-filed"
    assert page["content_received"] is True
    assert page["sender_domain"] == "lawfirm.example"
    assert status == 200
    assert "NOT filed or served" in html.decode()
    assert {s for s, _ in missing} == {404}
    assert len({body for _, body in missing}) == 1
    assert away == 503
    assert [(e["event"], e.get("found")) for e in looked][-4:] == [
        ("receipt.looked_up", True),
        ("receipt.looked_up", False),
        ("receipt.looked_up", False),
        ("receipt.lookup_failed", None),
    ]
    assert postgres.password not in json.dumps(looked)


async def test_both_nodes_report_the_whole_shared_queue_and_each_nodes_share(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    sink.stall_s = 5.0  # the three notices stay in flight while both nodes are scraped
    first = node_config(tmp_path, "mx1", url=url, sink=sink)
    second = node_config(tmp_path, "mx2", url=url, sink=sink)
    try:
        async with two_nodes(postgres, first, second) as (one, two):
            ports = [
                int((await node.gateway.event("gateway.metrics.listening"))["port"])
                for node in (one, two)
            ]
            async with smtp_session(one.port) as client:
                await send_batch(client, [Attempt(n, SENDER, RETIRED) for n in (1, 2)])
            async with smtp_session(two.port) as client:
                await send(client, Attempt(3, SENDER, RETIRED))
            await eventually(lambda: sink.attempts >= 3, within=20)
            scraped = [await scrape(f"http://127.0.0.1:{port}") for port in ports]
            _, _, text = await fetch(f"http://127.0.0.1:{ports[0]}/metrics")
            await sink.wait_for(3, within=20)
            assert await one.gateway.stop() == 0
            assert await two.gateway.stop() == 0
    finally:
        sink.close()
    for samples in scraped:
        assert value(samples, "gateway_outbox_jobs", state="in-flight") == 3
        assert value(samples, "gateway_outbox_jobs", state="queued") == 0
        assert value(samples, "gateway_outbox_node_jobs", node="mx1", state="in-flight") == 2
        assert value(samples, "gateway_outbox_node_jobs", node="mx2", state="in-flight") == 1
        assert 0 < value(samples, "gateway_outbox_oldest_job_age_seconds") < 60
    # The same figures from either node: the help says not to add them up across nodes.
    help_text = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert "never sum()" in help_text["gateway_outbox_jobs"]
    assert "sum() over node" in help_text["gateway_outbox_node_jobs"]


async def _load(
    port: int, numbers: range, replies: list[Reply], *, stop: asyncio.Event, deadline: float
) -> None:
    """Filings one per session to `port` until `stop` or the deadline (or the numbers) run out;
    a session the gateway drops is recorded as code 0."""
    loop = asyncio.get_running_loop()
    for n in numbers:
        if stop.is_set() or loop.time() > deadline:
            return
        attempt = Attempt(n, SENDER, RETIRED)
        try:
            async with smtp_session(port) as client:
                replies.append(await send(client, attempt))
        except (aiosmtplib.SMTPException, OSError):
            replies.append(Reply(attempt, 0, "dropped"))


async def test_postgresql_stopped_under_load_gets_451_loses_nothing_and_recovers(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    roomy = "\n[limits]\nnotices_per_sender = 100000\nnotices_per_client = 100000\n"
    first = node_config(tmp_path, "mx1", url=url, sink=sink, extra=roomy)
    second = node_config(tmp_path, "mx2", url=url, sink=sink, extra=roomy)
    replies: list[Reply] = []
    stop = asyncio.Event()
    try:
        async with two_nodes(postgres, first, second) as (one, two):
            deadline = asyncio.get_running_loop().time() + 90
            ports = (one.port, two.port, one.port, two.port)
            numbers = [range(i * 10_000, i * 10_000 + 2_000) for i in range(len(ports))]
            load = [
                asyncio.create_task(_load(p, n, replies, stop=stop, deadline=deadline))
                for p, n in zip(ports, numbers, strict=True)
            ]
            await eventually(lambda: len(replies) >= 20, within=30)
            await asyncio.to_thread(postgres.stop, "immediate")  # a crash: no checkpoint
            down_at = len(replies)
            # Longer than a session waits for a connection (5 s): the answers must be 451.
            await asyncio.sleep(8)
            await asyncio.to_thread(postgres.start)
            up_at = len(replies)
            await eventually(lambda: sum(r.code == 550 for r in replies[up_at:]) >= 20, within=30)
            stop.set()
            async with asyncio.timeout(30):
                await asyncio.gather(*load)
            assert await one.gateway.stop() == 0
            assert await two.gateway.stop() == 0
    finally:
        stop.set()
        sink.close()
    outage = replies[down_at:up_at]
    assert outage, "sessions were answered while the server was down"
    assert {r.code for r in outage} <= {451, 550}
    assert any(r.code == 451 and r.text.startswith("451 4.3.0") for r in outage)
    assert all(r.code in (451, 550) for r in replies), {r.code for r in replies}
    # Nothing was answered 550 without its record, before, during or after the outage.
    answered = {r.reference for r in replies if r.code == 550}
    stored = {row[0] for row in query(postgres, url, "SELECT reference FROM messages")}
    assert answered <= stored


async def test_a_node_with_a_supervisor_and_two_workers_serves_from_the_shared_store(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    sink.stall_s = 3.0  # the notices stay in flight while the supervisor is scraped
    config = node_config(tmp_path, "mx1", url=url, sink=sink, workers=2)
    try:
        async with serving(config, as_of=AFTER_CUTOFF, env=password_env(postgres)) as node:
            port = int((await node.gateway.event("gateway.metrics.listening"))["port"])
            async with smtp_session(node.port) as client:
                replies = await send_batch(client, [Attempt(n, SENDER, RETIRED) for n in (1, 2)])
            await eventually(lambda: sink.attempts >= 2, within=20)
            samples = await scrape(f"http://127.0.0.1:{port}")
            received = await sink.wait_for(2, within=20)
            assert await node.gateway.stop() == 0
    finally:
        sink.close()
    assert [r.code for r in replies] == [550, 550]
    assert len(received) == 2
    # The supervisor's /metrics reads the shared queue as a single process does.
    assert value(samples, "gateway_outbox_jobs", state="in-flight") == 2
    assert value(samples, "gateway_outbox_node_jobs", node="mx1", state="in-flight") == 2
    rows = query(postgres, url, "SELECT DISTINCT node FROM messages")
    assert rows == [("mx1",)]


def logging_to_file(config: Path, server: PostgresServer) -> AbstractAsyncContextManager[int]:
    """`gateway serve` on `config`, whose [audit] log is `audit.log` beside it (the chain
    anchored in the shared store); yields the SMTP port, stops it with SIGTERM at the end."""
    log = config.parent / "audit.log"
    return serving_to(config, log, stdout=None, env=password_env(server))


def with_log_file(config: Path) -> Path:
    text = config.read_text(encoding="utf-8")
    assert 'log = "-"' in text
    log = config.parent / "audit.log"
    config.write_text(text.replace('log = "-"', f"log = {json.dumps(str(log))}", 1), "utf-8")
    return log


async def test_audit_on_one_node_shows_the_other_nodes_attempt_and_names_its_chain(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    sink = await start_sink()
    first = node_config(tmp_path, "mx1", url=url, sink=sink)
    second = node_config(tmp_path, "mx2", url=url, sink=sink)
    log_one, log_two = with_log_file(first), with_log_file(second)
    try:
        async with logging_to_file(first, postgres), logging_to_file(second, postgres) as port:
            async with smtp_session(port) as client:
                reply = await send(client, Attempt(1, SENDER, RETIRED))
            await sink.wait_for(1, within=20)
    finally:
        sink.close()
    assert reply.code == 550
    chains = {
        path: {json.loads(line).get("chain") for line in path.read_bytes().splitlines()} - {None}
        for path in (log_one, log_two)
    }
    (chain_one,), (chain_two,) = chains[log_one], chains[log_two]

    # The story of mx2's attempt, told on mx1: the whole record, mx2 named as the node.
    shown = await asyncio.to_thread(audit, first, postgres, "show", reply.reference)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"attempt {reply.reference}: message received")
    assert "  node            mx2\n" in shown.stdout
    assert "notice to <" in shown.stdout
    assert ": delivered after 1 attempt" in shown.stdout
    assert "received by node mx2" in shown.stdout
    ((sender_node,),) = query(postgres, url, "SELECT node FROM attempts")  # whichever claimed
    assert f"  delivered by {sender_node}  " in shown.stdout
    kept = await asyncio.to_thread(audit, first, postgres, "notice", reply.reference)
    assert kept.returncode == 0, kept.stderr
    assert "References: <1.serve-test@lawfirm.example>" in kept.stdout

    # verify on mx1: its own log against its anchor, and mx2's chain named, not checked.
    verified = await asyncio.to_thread(audit, first, postgres, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"  chain {chain_one}: seq 1-" in verified.stdout
    assert "its first record matches its anchor in the store" in verified.stdout
    assert f"  node mx2: chain {chain_two}, started " in verified.stdout
    assert f", log {log_two}\n" in verified.stdout
    assert f"node mx1: chain {chain_one}" not in verified.stdout
    assert verified.stdout.endswith(" records, chain intact\n")
    rows = query(postgres, url, "SELECT node FROM audit_chains ORDER BY node")
    assert rows == [("mx1",), ("mx2",)]
