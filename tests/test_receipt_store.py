"""The receipt page's read on both backends: the same Receipt from the SQLite file and from
the shared PostgreSQL, for an attempt any node recorded, and none for an unknown, malformed
or purged reference (the `backend` fixture of test_store_contract.py; the reader is the one
store/backend.py builds for the page). The page itself is built from the Receipt alone
(receiptpage.py), so the same Receipt is the same page; test_two_nodes.py asks a real
`gateway serve` on PostgreSQL over HTTP."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store.backend import StoreLocation, open_receipts
from gateway.store.outbox import Attempt
from gateway.store.queuedepth import SqliteQueueDepth
from gateway.store.receipts import Receipt, SqliteReceipts
from gateway.store.retention import purge_records
from gateway.store.sentmail import describe_sent
from gateway.vocabulary import JobKind, JobState, NoticeStatus, NoticeStatusKind
from tests.postgres import postgres
from tests.test_store_contract import BOUND_S, NOW, OFFICE, Backend, backend, filing, refusal

__all__ = ["backend", "postgres"]

AUTH = "eservice-mx.agency.example; spf=pass smtp.mailfrom=lawfirm.example"


async def read(backend: Backend, *references: str) -> list[Receipt | None]:
    """The receipts as the page reads them: through the backend's reader, in a thread."""
    location = StoreLocation(backend.path or Path("unused"), "mx1", backend.dsn)
    reader = open_receipts(location)

    def run() -> list[Receipt | None]:
        try:
            return [reader.read_receipt(r) for r in references]
        finally:
            reader.close()

    return await asyncio.to_thread(run)


async def test_a_receipt_reads_alike_on_both_backends_whichever_node_took_it(
    backend: Backend,
) -> None:
    # The filing came in on mx2, whose worker delivered its notice; the page asks as mx1.
    mx2 = await backend.open_store("mx2")
    record, check = filing()
    record = replace(record, auth=AUTH)
    sent_at = NOW + timedelta(minutes=3)
    async with asyncio.timeout(BOUND_S):
        settled = await mx2.record_message(record, check)
        outbox = backend.outbox(mx2, "mx2:1:100")
        (job,) = await outbox.claim(datetime.now(UTC), limit=1, lease_s=60, busy={}, per_route=9)
        data = b"Message-ID: <n1@eservice-mx.agency.example>\r\n\r\nNot filed.\r\n"
        kept = describe_sent(
            data, job_id=job.id, reference=record.reference, kind=JobKind.NOTICE, sent_at=sent_at
        )
        done = Attempt(sent_at, sent_at, "mx.lawfirm.example", 250, "2.0.0 ok", JobState.DELIVERED)
        await outbox.finish(job, done, sent=(kept, data))
        refused = refusal(NOW + timedelta(minutes=1))
        await mx2.record_refusal(refused)
        receipt, at_rcpt = await read(backend, record.reference, refused.reference)
    assert receipt == Receipt(
        reference=record.reference,
        is_refused_at_rcpt=False,
        at=NOW,
        sender_domain="lawfirm.example",
        office=OFFICE,
        addresses=("filings@occ.example",),
        action="reject-after-data",
        decision="rejected",
        notice=NoticeStatus(NoticeStatusKind.DELIVERED),
        reply=settled.reply,
        auth=AUTH,
        sha256="ab" * 32,
        size=2048,
        notice_sent_at=sent_at,
    )
    assert receipt.at.tzinfo == UTC
    assert at_rcpt == Receipt(
        reference=refused.reference,
        is_refused_at_rcpt=True,
        at=refused.at,
        sender_domain="lawfirm.example",
        office=OFFICE,
        addresses=("gone@occ.example",),
        action="reject-at-rcpt",
        decision="refused",
        notice=NoticeStatus(NoticeStatusKind.NONE),
        reply="550 5.1.1 gone",
    )


async def test_unknown_malformed_and_purged_references_have_no_receipt_on_both_backends(
    backend: Backend,
) -> None:
    store = await backend.open_store()
    refused = refusal()
    ref = refused.reference
    unknown = ref[:9] + ("Z" if ref[9] != "Z" else "Y") + ref[10:]
    async with asyncio.timeout(BOUND_S):
        await store.record_refusal(refused)
        before = await read(backend, ref, unknown, "nonsense", "20170913-ILOU0000000", ref + "X")
        purged = await purge_records(store, before=datetime.now(UTC) + timedelta(days=1))
        (after,) = await read(backend, ref)
    found, *missing = before
    assert found is not None
    assert found.reference == ref
    assert missing == [None, None, None, None]
    assert purged.refusals == 1
    assert after is None


def test_a_store_file_that_cannot_be_read_is_a_store_error_not_a_missing_receipt(
    tmp_path: Path,
) -> None:
    # The page answers 503 for it (a 404 would tell the sender their receipt does not exist),
    # and a scrape of /metrics 503 too.
    missing = tmp_path / "state" / "gateway.sqlite3"
    reference = refusal().reference
    with pytest.raises(StoreError, match=re.escape(f"cannot read {missing}")):
        SqliteReceipts(missing).read_receipt(reference)
    with pytest.raises(StoreError, match=re.escape(f"cannot read {missing}")):
        SqliteQueueDepth(missing).read_depth()
