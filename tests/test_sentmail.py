"""The record of what we told the sender: each notice kept exactly as the remote server got it.

A filing arrives over SMTP, the real worker delivers its notice to a recording sink, and the
bytes the sink received are compared with the bytes in the store, with what `gateway audit
notice` writes and with what `gateway audit show` names. Retention purges the kept notice
after [storage] notice_retention_days; a store from before the table still opens.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import io
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.cli import main
from gateway.config import GatewaySettings, default_config_path
from gateway.ops.auditcmd import AuditRequest, run_audit
from gateway.store.db import SCHEMA_VERSION, Store, connect
from gateway.store.retention import Purged, purge_once
from gateway.store.sentmail import describe_sent, read_sent
from tests.conftest import AFTER_CUTOFF, BEFORE_PORTAL, Gateway, GatewayFactory, office
from tests.sink import Received, Sink, start_sink
from tests.test_delivery import FAST_RETRY, WorkerFactory, file_a_filing, job_state, smarthost
from tests.test_delivery import run_worker as run_worker  # a fixture, shared
from tests.test_delivery import sink as sink  # a fixture, shared

NOW = AFTER_CUTOFF + timedelta(days=1)


def rows(gw: Gateway, sql: str, *params: Any) -> list[sqlite3.Row]:
    """The store's tables as SQL sees them: this tests the schema, so it may ask it directly
    (elsewhere tests ask the store's interface)."""
    with contextlib.closing(sqlite3.connect(gw.settings.storage.database)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    out: str
    err: str
    data: bytes


def audit(settings: GatewaySettings, action: str, *targets: str, **request: Any) -> Answer:
    """One `gateway audit` command, answered in this process."""
    out, err, data = io.StringIO(), io.StringIO(), io.BytesIO()
    status = run_audit(
        settings,
        AuditRequest(action=action, targets=targets, **request),
        now=NOW,
        out=out,
        err=err,
        out_bytes=data,
    )
    return Answer(status, out.getvalue(), err.getvalue(), data.getvalue())


async def delivered_notice(gw: Gateway, run_worker: WorkerFactory, sink: Sink) -> Received:
    await run_worker(gw)
    (received,) = await sink.wait_for(1)
    await job_state(gw, "delivered")
    return received


async def test_the_notice_is_kept_exactly_as_the_sink_received_it(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink))
    reference = await file_a_filing(gw)
    received = await delivered_notice(gw, run_worker, sink)

    (kept,) = rows(gw, "SELECT * FROM sent_notices")
    (job,) = rows(gw, "SELECT * FROM jobs")
    (attempt,) = rows(gw, "SELECT * FROM attempts")
    assert bytes(kept["data"]) == received.data  # after DKIM signing, byte for byte
    assert received.data.startswith(b"DKIM-Signature:")
    assert (kept["reference"], kept["job_id"], kept["kind"]) == (reference, job["id"], "notice")
    assert kept["sha256"] == hashlib.sha256(received.data).hexdigest()
    assert kept["size"] == len(received.data)
    notice = email.message_from_bytes(received.data, policy=email.policy.default)
    assert kept["message_id"] == notice["Message-ID"]
    # Written in the transaction that marked the job delivered: one moment for all three.
    assert kept["sent_at"] == attempt["finished_at"] == job["updated_at"]


async def test_in_file_mode_the_kept_notice_is_the_file_without_its_envelope_lines(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    gw = await start_gateway(delivery={"mode": "file", "outbox_dir": str(outbox), **FAST_RETRY})
    await file_a_filing(gw)
    await run_worker(gw)
    await job_state(gw, "delivered")
    (written,) = outbox.iterdir()
    (kept,) = rows(gw, "SELECT data FROM sent_notices")
    envelope = b"X-Envelope-From: <>\r\nX-Envelope-To: <paralegal@lawfirm.example>\r\n"
    assert written.read_bytes() == envelope + bytes(kept["data"])


async def test_audit_notice_writes_the_eml_as_sent_and_show_names_its_id_and_hash(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink, tmp_path: Path
) -> None:
    gw = await start_gateway(delivery=smarthost(sink))
    reference = await file_a_filing(gw)
    received = await delivered_notice(gw, run_worker, sink)
    digest = hashlib.sha256(received.data).hexdigest()
    message_id = str(email.message_from_bytes(received.data)["Message-ID"])

    to_stdout = audit(gw.settings, "notice", reference.lower())
    assert (to_stdout.status, to_stdout.err) == (0, "")
    assert to_stdout.data == received.data
    eml = tmp_path / "notice.eml"
    to_file = audit(gw.settings, "notice", reference, notice_file=eml)
    assert to_file.status == 0
    assert eml.read_bytes() == received.data
    assert digest in to_file.out
    assert to_file.data == b""

    shown = audit(gw.settings, "show", reference)
    assert shown.status == 0, shown.err
    deliveries = shown.out.partition("deliveries\n")[2].partition("timeline")[0]
    assert f"message-id  {message_id}\n" in deliveries
    assert f"sha-256     {digest}  ({len(received.data):,} bytes" in deliveries


async def test_the_audit_notice_command_line_writes_bytes_to_standard_output(
    start_gateway: GatewayFactory,
    run_worker: WorkerFactory,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    gw = await start_gateway(delivery=smarthost(sink))
    reference = await file_a_filing(gw)
    received = await delivered_notice(gw, run_worker, sink)
    monkeypatch.setenv("GATEWAY_STORAGE__STATE_DIR", str(gw.settings.storage.state_dir))
    config = str(default_config_path())
    capsysbinary.readouterr()  # the gateway's own log lines so far
    assert main(["audit", "notice", reference, "--config", config]) == 0
    assert capsysbinary.readouterr().out == received.data
    assert main(["audit", "notice", "20170913-0000000000", "--config", config]) == 1
    assert b"no attempt 20170913-0000000000 in the store" in capsysbinary.readouterr().err


async def test_audit_notice_says_why_when_there_is_no_notice_to_write(
    start_gateway: GatewayFactory, run_worker: WorkerFactory
) -> None:
    listener = await start_sink(replies=["452 4.2.2 Mailbox full"] * 10)
    try:
        gw = await start_gateway(delivery=smarthost(listener))
        reference = await file_a_filing(gw)
        await run_worker(gw)
        await job_state(gw, "deferred", attempts=1)
    finally:
        listener.close()

    unknown = audit(gw.settings, "notice", "20170913-0000000000")
    assert unknown.status == 1
    assert unknown.err == (
        "gateway: no attempt 20170913-0000000000 in the store"
        " (or its record and notice were purged)\n"
    )
    unsent = audit(gw.settings, "notice", reference)
    assert unsent.status == 1
    assert f"no notice has been sent for {reference}" in unsent.err
    assert unsent.data == b""
    assert audit(gw.settings, "notice").status == 2  # no reference given


async def test_relays_are_not_kept_but_a_bounce_to_the_sender_is(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    legacy = await start_sink(replies=["550 5.1.1 no such user"])
    try:
        gw = await start_gateway(
            clock_at=BEFORE_PORTAL,
            offices=[office(legacy_host=f"127.0.0.1:{legacy.port}")],
            server={"trusted_networks": ["127.0.0.1/32"]},
            delivery=smarthost(sink),
        )
        await file_a_filing(gw)  # 250 Queued as ...: relayed, so no "(ref ...)" to read
        await run_worker(gw)
        (received,) = await sink.wait_for(1)
        bounce = await job_state(gw, "delivered")
    finally:
        legacy.close()
    assert bounce.kind == "bounce"
    (kept,) = rows(gw, "SELECT * FROM sent_notices")
    assert (kept["kind"], kept["job_id"]) == ("bounce", bounce.id)
    assert bytes(kept["data"]) == received.data
    assert audit(gw.settings, "notice", kept["reference"]).data == received.data


async def test_several_notices_for_one_reference_are_chosen_by_job(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink))
    reference = await file_a_filing(gw)
    await delivered_notice(gw, run_worker, sink)
    (job,) = rows(gw, "SELECT id FROM jobs")

    def copy_as_job(conn: sqlite3.Connection) -> None:
        # A second office's notice for the same message, as a transaction to two offices has.
        conn.execute(
            "INSERT INTO sent_notices SELECT reference, job_id + 100, 'advisory', message_id,"
            " sha256, size, sent_at, data FROM sent_notices"
        )

    await gw.store.write(copy_as_job)
    several = audit(gw.settings, "notice", reference)
    assert several.status == 2
    assert f"job {job['id']} (notice), job {job['id'] + 100} (advisory): give --job" in several.err
    assert audit(gw.settings, "notice", reference, job=job["id"] + 100).status == 0
    missing = audit(gw.settings, "notice", reference, job=7)
    assert (missing.status, missing.err) == (
        1,
        f"gateway: no notice of job 7 is kept for {reference}\n",
    )


async def test_a_notice_altered_in_the_store_is_not_passed_off_as_sent(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink))
    reference = await file_a_filing(gw)
    await delivered_notice(gw, run_worker, sink)

    def alter(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE sent_notices SET data = CAST('forged' AS BLOB)")

    await gw.store.write(alter)
    altered = audit(gw.settings, "notice", reference)
    assert altered.status == 1
    assert "does not match its SHA-256" in altered.err
    assert altered.data == b""


# -- retention ----------------------------------------------------------------------------------


async def test_a_kept_notice_is_purged_after_notice_retention_days_and_the_record_stays(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink), storage={"notice_retention_days": 30})
    reference = await file_a_filing(gw)
    await delivered_notice(gw, run_worker, sink)
    (kept,) = rows(gw, "SELECT sent_at FROM sent_notices")
    sent_at = datetime.fromisoformat(kept["sent_at"])

    assert await purge_once(gw.store, gw.settings.storage, sent_at + timedelta(days=29)) == Purged()
    assert len(rows(gw, "SELECT 1 FROM sent_notices")) == 1
    with capture_logs() as events:
        purged = await purge_once(gw.store, gw.settings.storage, sent_at + timedelta(days=31))

    assert purged == Purged(sent_notices=1)
    assert rows(gw, "SELECT 1 FROM sent_notices") == []
    assert len(rows(gw, "SELECT 1 FROM messages")) == 1  # retention_days 0: kept for ever
    (event,) = [e for e in events if e["event"] == "store.notices_purged"]
    assert (event["count"], event["notice_retention_days"]) == (1, 30)
    assert event["before"] == (sent_at + timedelta(days=1)).astimezone(UTC).isoformat(
        timespec="microseconds"
    )
    gone = audit(gw.settings, "notice", reference)
    assert gone.status == 1
    assert "is no longer kept (purged after [storage] notice_retention_days" in gone.err
    assert "as sent     not kept (purged by notice_retention_days" in (
        audit(gw.settings, "show", reference).out
    )


async def test_notice_retention_days_0_keeps_notices_for_ever(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink))
    assert gw.settings.storage.notice_retention_days == 0
    await file_a_filing(gw)
    await delivered_notice(gw, run_worker, sink)
    later = AFTER_CUTOFF + timedelta(days=36500)
    assert await purge_once(gw.store, gw.settings.storage, later) == Purged()
    assert len(rows(gw, "SELECT 1 FROM sent_notices")) == 1


# -- the schema ---------------------------------------------------------------------------------


async def test_a_store_from_before_kept_notices_opens_and_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    store = Store(path)
    await store.open()
    await store.close()
    conn = connect(path)
    conn.execute("DROP TABLE sent_notices")  # as schema 1 had it
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert read_sent(conn, "20170913-0000000000") == []  # readers cope with the old schema
    conn.close()

    store = Store(path)
    await store.open()
    await store.close()
    conn = connect(path, readonly=True)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert int(version[0]) == SCHEMA_VERSION
    assert "sent_notices" in tables


# -- the record's values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message_id"),
    [
        (
            b"Message-ID: <a.notice@x.example>\r\nTo: a@b.example\r\n\r\nbody\r\n",
            "<a.notice@x.example>",
        ),
        (
            b"DKIM-Signature: v=1;\r\n b=abc\r\nMessage-ID:\r\n <folded@x.example>\r\n\r\n",
            "<folded@x.example>",
        ),
        (b"To: a@b.example\r\n\r\nMessage-ID: <in-the-body@x.example>\r\n", None),
        (b"To: a@b.example\n\nMessage-ID: <in-the-body@x.example>\n", None),
        (b"Message-ID: <no-body@x.example>\r\n", "<no-body@x.example>"),
    ],
)
def test_the_record_names_the_message_id_of_the_header_hash_and_size(
    data: bytes, message_id: str | None
) -> None:
    at = datetime(2017, 9, 13, 16, 0, tzinfo=UTC)
    notice = describe_sent(data, job_id=3, reference="20170913-ABC", kind="notice", sent_at=at)
    assert notice.message_id == message_id
    assert notice.sha256 == hashlib.sha256(data).hexdigest()
    assert (notice.size, notice.job_id, notice.sent_at) == (len(data), 3, at)
