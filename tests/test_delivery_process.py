"""Delivery across a crash, and the operators' queue commands, with `gateway` as a process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter
from email import message_from_bytes
from pathlib import Path

from gateway.store.outbox import Job, find_jobs, read_job
from tests.polling import eventually
from tests.sink import start_sink
from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    SENDER,
    Attempt,
    child_environment,
    database,
    read_store,
    send_batch,
    serving,
    smtp_session,
    write_config,
)

FILINGS = 6


def smarthost_config(tmp_path: Path, port: int) -> Path:
    return write_config(
        tmp_path,
        edit=(
            'mode = "file"',
            f'mode = "smarthost"\nsmarthost = "127.0.0.1:{port}"\nstarttls = "opportunistic"\n'
            "poll_interval = 0.05\nretry_schedule = [0.5]\nretry_jitter = 0",
        ),
    )


async def test_sigkill_with_deliveries_in_flight_loses_no_notice(tmp_path: Path) -> None:
    sink = await start_sink()
    sink.stall_s = 60.0  # every DATA hangs: the jobs are in flight when the gateway dies
    config = smarthost_config(tmp_path, sink.port)
    try:
        async with serving(config, as_of=AFTER_CUTOFF) as first:
            async with smtp_session(first.port) as client:
                replies = await send_batch(
                    client, [Attempt(n, SENDER, RETIRED) for n in range(FILINGS)]
                )
            # Per-domain concurrency: three at once.
            await eventually(lambda: sink.attempts >= 3, within=20)
            first.gateway.process.kill()
        in_flight = read_store(database(tmp_path), lambda c: find_jobs(c, state="in-flight"))
        assert len(in_flight) == 3

        sink.stall_s = 0.0
        async with serving(config, as_of=AFTER_CUTOFF) as second:
            received = await sink.wait_for(FILINGS, within=30)
            recovered = await second.gateway.event("outbox.recovered")
            assert await second.gateway.stop() == 0
    finally:
        sink.close()

    assert recovered["jobs"] == 3
    references = Counter(str(message_from_bytes(r.data)["References"]) for r in received)
    expected = {f"<{n}.serve-test@lawfirm.example>" for n in range(FILINGS)}
    assert set(references) == expected  # every filing got its notice
    # Duplicates are possible only where the listener said 250 before the kill; it never did.
    assert max(references.values()) == 1
    jobs = read_store(database(tmp_path), find_jobs)
    assert {j.state for j in jobs} == {"delivered"}
    assert len({r.reference for r in replies}) == FILINGS


def gateway_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_environment(),
        cwd=config.parent,
        check=False,
    )


async def test_queue_commands_list_show_retry_and_delete(tmp_path: Path) -> None:
    sink = await start_sink(replies=["451 4.3.0 Greylisted, try again"] * 2)
    config = smarthost_config(tmp_path, sink.port)
    config.write_text(
        config.read_text().replace("retry_schedule = [0.5]", "retry_schedule = [3600]")
    )
    try:
        async with serving(config, as_of=AFTER_CUTOFF) as gateway:
            async with smtp_session(gateway.port) as client:
                await send_batch(client, [Attempt(n, SENDER, RETIRED) for n in range(2)])

            def deferred(conn: sqlite3.Connection) -> list[Job]:
                return find_jobs(conn, state="deferred")

            await eventually(lambda: len(read_store(database(tmp_path), deferred)) == 2, within=20)

            listing = gateway_cli(config, "queue", "list")
            shown = gateway_cli(config, "queue", "show", "1")
            retried = gateway_cli(config, "queue", "retry", "1")
            deleted = gateway_cli(config, "queue", "delete", "2")
            await sink.wait_for(1, within=20)
            assert await gateway.gateway.stop() == 0
        missing = gateway_cli(config, "queue", "show", "99")
        # Delivered jobs are history, not queue: listed only when asked for.
        after = gateway_cli(config, "queue", "list", "--state", "delivered")
    finally:
        sink.close()

    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATE",
        "KIND",
        "REFERENCE",
        "TRIES",
        "NEXT",
        "(UTC)",
        "TO",
        "LAST",
        "REPLY",
    ]
    assert sum("deferred" in line and "451 4.3.0 Greylisted" in line for line in lines) == 2
    assert "2 jobs, 2 waiting" in listing.stdout
    assert "attempt 1:" in shown.stdout
    assert "deferred" in shown.stdout
    assert "envelope to: <paralegal@lawfirm.example>" in shown.stdout
    assert retried.stdout == "job 1: queued for delivery now\n"
    assert deleted.stdout == "job 2: deleted (kept as evidence)\n"
    assert (missing.returncode, missing.stderr) == (1, "gateway: no job 99\n")
    assert "delivered" in after.stdout
    assert "deleted" not in after.stdout
    job = read_store(database(tmp_path), lambda c: read_job(c, 2))
    assert job is not None
    assert job.state == "deleted"
