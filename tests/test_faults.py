"""Faults an operator meets, on a real `gateway serve` process: a full disk under the audit
log or the store, a listen address that cannot exist, a read-only state directory.

A full disk is a small tmpfs the test mounts and fills, so these tests need root (they are
skipped, saying so, without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.audit.chain import GENESIS, line_hash
from gateway.store.outbox import find_jobs, job_attempts
from gateway.store.queries import list_messages
from tests.polling import eventually
from tests.sink import start_sink
from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    SENDER,
    STOP_TIMEOUT,
    Attempt,
    assert_one_line_error,
    database,
    read_store,
    run_cli,
    send,
    serving,
    smtp_session,
    start_serve,
    write_config,
)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs (a disk to fill) needs root"
)


@contextlib.contextmanager
def tmpfs(path: Path, *, size: str, readonly: bool = False) -> Iterator[Path]:
    """A small file system of its own at `path`, unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; returns the filler to delete."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
    return filler


def http_get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")


# ---------------------------------------------------------------------------------------------
# 1. The audit log's disk fills: 451 without details, /readyz says so, nothing crashes


def log_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def assert_chain_unbroken(path: Path) -> None:
    prev, seq = GENESIS, 0
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        if record["seq"] == 1:
            prev, seq = GENESIS, 0
        assert (record["seq"], record["prev"]) == (seq + 1, prev), record["event"]
        prev, seq = line_hash(line), record["seq"]


@contextlib.asynccontextmanager
async def serving_to_file(config: Path, log: Path) -> AsyncIterator[tuple[Any, int, int]]:
    """`gateway serve` logging to `log`; yields the process, the SMTP and the metrics port."""
    process = await start_serve(config, as_of=AFTER_CUTOFF, stdout=subprocess.DEVNULL)
    try:

        def started() -> tuple[int, int] | None:
            events = {e["event"]: e for e in log_events(log)}
            if "gateway.listening" not in events:
                return None
            return events["gateway.listening"]["port"], events["gateway.metrics.listening"]["port"]

        smtp_port, metrics_port = await eventually(started, within=20)
        yield process, smtp_port, metrics_port
    finally:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(STOP_TIMEOUT):
            await process.communicate()  # waits, and closes the stderr pipe


@needs_root
async def test_a_full_audit_log_disk_gets_451_and_readyz_503_until_it_has_room(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "logs", size="512k") as logs:
        log = logs / "audit.log"
        config = write_config(tmp_path, edit=('log = "-"', f"log = {json.dumps(str(log))}"))
        async with serving_to_file(config, log) as (process, port, metrics):
            async with smtp_session(port) as client:
                before = await send(client, Attempt(1, SENDER, RETIRED))
            filler = fill(logs)
            opened = await _sessions_until_the_log_fails(port, metrics)

            async with smtp_session(port) as client:
                with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                    await client.mail(SENDER)
            assert (refused.value.code, refused.value.message[:5]) == (451, "4.3.0")
            assert "Errno" not in refused.value.message
            assert "space" not in refused.value.message
            status, body = await readyz(metrics)
            assert status == 503
            assert body["failing"] == ["audit"]
            assert "No space left on device" in body["checks"]["audit"]["detail"]
            assert process.returncode is None

            filler.unlink()
            await eventually(
                lambda: any(e["event"] == "gateway.log.recovered" for e in log_events(log)),
                within=10,
            )
            assert (await readyz(metrics))[0] == 200
            async with smtp_session(port) as client:
                after = await send(client, Attempt(2, SENDER, RETIRED))
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(STOP_TIMEOUT):
                assert await process.wait() == 0

        assert before.code == after.code == 550
        events = log_events(log)
        names = [e["event"] for e in events]
        assert "gateway.log.failed" in names
        # What happened while the disk was full is on the chain, in order, nothing lost.
        assert names.count("smtp.session.opened") == opened + 3
        failed = [e for e in events if e["event"] == "smtp.session.failed"]
        assert [e["reply"][:9] for e in failed] == ["451 4.3.0"]
        assert_chain_unbroken(log)
    sent = read_store(database(tmp_path), list_messages)
    assert [m.reference for m in sent] == [before.reference, after.reference]


async def _sessions_until_the_log_fails(port: int, metrics: int) -> int:
    """Open sessions until /readyz says the log is failing (the last page of the file still
    took a few lines); returns how many."""
    for count in range(1, 200):
        async with smtp_session(port) as client:
            await client.noop()
        status, body = await readyz(metrics)
        if status == 503 and "audit" in body["failing"]:
            return count
    raise AssertionError("the audit log never failed on a full disk")


# ---------------------------------------------------------------------------------------------
# 2. The store refuses the write that marks a job delivered: retried, never sent twice


@needs_root
async def test_a_delivered_mail_whose_record_fails_is_recorded_later_and_not_sent_again(
    tmp_path: Path,
) -> None:
    sink = await start_sink()
    sink.stall_s = 2.0  # the disk fills while the smarthost holds the DATA
    config = write_config(
        tmp_path,
        edit=(
            'mode = "file"',
            f'mode = "smarthost"\nsmarthost = "127.0.0.1:{sink.port}"\n'
            'starttls = "opportunistic"\npoll_interval = 0.05\nlease = 1',
        ),
    )
    try:
        with tmpfs(tmp_path / "state", size="16m") as state:
            async with serving(config, as_of=AFTER_CUTOFF) as served:
                async with smtp_session(served.port) as client:
                    reply = await send(client, Attempt(1, SENDER, RETIRED))
                await eventually(lambda: sink.attempts >= 1, within=20)
                filler = fill(state)
                await served.gateway.event("outbox.update_failed")
                await asyncio.sleep(3.0)  # three leases run out while the disk is full
                filler.unlink()
                await served.gateway.event("delivery.succeeded")
                await asyncio.sleep(2.0)  # time to send it again, were it to be
                assert await served.gateway.stop() == 0
            jobs = read_store(database(tmp_path), lambda c: find_jobs(c, reference=reply.reference))
            (job,) = jobs
            attempts = read_store(database(tmp_path), lambda c: job_attempts(c, job.id))
    finally:
        sink.close()
    assert len(sink.accepted) == 1
    assert job.state == "delivered"
    # One attempt row, the first send's: none lost, none for a second send.
    assert [(a.code, a.outcome) for a in attempts] == [(250, "delivered")]


# ---------------------------------------------------------------------------------------------
# 3. Start-up faults: an impossible listen address, a read-only state directory


def test_check_config_names_an_impossible_listen_address(tmp_path: Path) -> None:
    config = write_config(tmp_path, listen="999.1.1.1:2525")
    result = run_cli("check-config", "--config", str(config), cwd=tmp_path)
    assert_one_line_error(result, exit_code=2, naming="server.listen")
    assert "999.1.1.1" in result.stderr


@needs_root
def test_serve_with_a_read_only_state_directory_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with tmpfs(tmp_path / "state", size="1m", readonly=True) as state:
        result = run_cli("serve", "--config", str(config), "--as-of", AFTER_CUTOFF, cwd=tmp_path)
    assert_one_line_error(result, exit_code=1, naming=str(state))
    assert "Read-only file system" in result.stderr
    assert "DKIM" not in result.stderr
