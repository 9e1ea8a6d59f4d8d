"""Mail to postmaster: forwarded over SMTP to a real sink, and `gateway postmaster ...`.

Messages arrive over loopback at the real server; forwards leave through the real delivery
worker to a recording aiosmtpd sink (smarthost mode).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import GatewaySettings
from gateway.ops.auditcmd import AuditRequest, run_audit
from gateway.smtp.postmaster import PostmasterRequest, forward_jobs, run_postmaster
from gateway.store.backend import StoreLocation
from gateway.store.db import JobRecord
from gateway.store.queries import list_notice_counts
from gateway.store.retention import purge_raw
from tests.conftest import AFTER_CUTOFF, RETIRED, SENDER, Gateway, GatewayFactory
from tests.polling import eventually
from tests.sink import Sink
from tests.smtpclient import message, reference_of, transaction
from tests.test_delivery import WorkerFactory, job_state, run_worker, sink, smarthost

__all__ = ["run_worker", "sink"]  # fixtures, imported for pytest

POSTMASTER = "postmaster@occ-chicago.example"
OPERATOR = "ops@agency.example"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    out: str
    err: str
    data: bytes = b""


def postmaster(gw: Gateway | GatewaySettings, action: str, **fields: Any) -> Answer:
    """One `gateway postmaster` command, answered in this process."""
    settings = gw.settings if isinstance(gw, Gateway) else gw
    out, err, data = io.StringIO(), io.StringIO(), io.BytesIO()
    status = run_postmaster(
        settings.postmaster,
        PostmasterRequest(action=action, **fields),
        store=StoreLocation.from_settings(settings),
        now=AFTER_CUTOFF,
        out=out,
        out_bytes=data,
        err=err,
    )
    return Answer(status, out.getvalue(), err.getvalue(), data.getvalue())


async def mail_postmaster(gw: Gateway, content: bytes) -> str:
    _, final = await transaction(gw.port, [POSTMASTER], content=content, sender="")
    assert final is not None
    assert final.code == 250
    return gw.messages()[-1].reference  # the latest


async def test_postmaster_mail_is_forwarded_unchanged_with_the_null_sender(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(
        delivery=smarthost(sink), postmaster={"forward_to": [OPERATOR, "ops2@agency.example"]}
    )
    content = message(subject="Your MX bounces", to=POSTMASTER)
    await mail_postmaster(gw, content)
    await run_worker(gw)
    (received,) = await sink.wait_for(1)
    await job_state(gw, "delivered")

    assert received.mail_from == "<>"  # never our notices' from-address, never the sender
    assert received.recipients == (OPERATOR, "ops2@agency.example")
    head, _, rest = received.data.partition(b"\r\n\tby mx.test.example")
    assert head.startswith(b"Received: from client.lawfirm.example ([127.0.0.1])")
    (raw,) = gw.raw_copies()
    assert received.data.endswith(raw.raw)
    assert received.data.split(b"\r\n", 3)[3] == raw.raw  # byte for byte below Received
    assert raw.keep_until is None  # postmaster mail stays for the operator
    (record,) = gw.messages()
    assert record.notice != "queued"  # no notice, and none counted against the limits
    assert gw.read(list_notice_counts) == []
    (job,) = gw.jobs()
    assert (job.kind, job.mail_from, job.state) == ("forward", "", "delivered")
    assert rest


async def test_the_forward_shows_in_audit_show_and_in_postmaster_list_and_show(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(delivery=smarthost(sink), postmaster={"forward_to": [OPERATOR]})
    content = message(subject="Abuse report", to=POSTMASTER)
    reference = await mail_postmaster(gw, content)
    await run_worker(gw)
    await sink.wait_for(1)
    await job_state(gw, "delivered")

    out, err = io.StringIO(), io.StringIO()
    status = run_audit(
        gw.settings,
        AuditRequest(action="show", targets=(reference,), use_store=True),
        now=AFTER_CUTOFF,
        out=out,
        err=err,
    )
    assert status == 0, err.getvalue()
    assert f"forward to <{OPERATOR}>: delivered" in out.getvalue()

    listed = postmaster(gw, "list")
    assert listed.status == 0
    header, row = listed.out.splitlines()
    assert header.split() == [
        "REFERENCE",
        "RECEIVED",
        "(UTC)",
        "SENDER",
        "SIZE",
        "FORWARD",
        "SUBJECT",
    ]
    assert row.split()[0] == reference
    (raw,) = gw.raw_copies()
    assert row.split()[3:] == ["<>", str(len(raw.raw)), "delivered", "Abuse", "report"]

    shown = postmaster(gw, "show", reference=reference)
    assert shown.status == 0
    assert "subject: Abuse report" in shown.out
    assert f"delivered to {OPERATOR}" in shown.out
    assert "Message-ID: <filing-1@lawfirm.example>" in shown.out
    assert "Please find attached" not in shown.out  # headers only


async def test_export_writes_the_exact_bytes_received(gateway: Gateway, tmp_path: Any) -> None:
    content = message(subject="Exact", to=POSTMASTER, body="a\r\n.dot line\r\nend")
    reference = await mail_postmaster(gateway, content)
    (raw,) = gateway.raw_copies()

    exported = postmaster(gateway, "export", reference=reference)
    assert exported.status == 0
    assert exported.data == raw.raw
    assert exported.data.replace(b"\r\n", b"\n") == content.replace(b"\r\n", b"\n")
    target = tmp_path / "out.eml"
    assert postmaster(gateway, "export", reference=reference, output=target).status == 0
    assert target.read_bytes() == raw.raw


async def test_list_filters_by_since_and_limit_newest_first(gateway: Gateway) -> None:
    first = await mail_postmaster(gateway, message(subject="one", to=POSTMASTER))
    gateway.clock.now = AFTER_CUTOFF.replace(day=14)
    second = await mail_postmaster(gateway, message(subject="two", to=POSTMASTER))
    await transaction(gateway.port, [RETIRED])  # not to postmaster: not listed

    def refs(**fields: Any) -> list[str]:
        return [
            line.split()[0] for line in postmaster(gateway, "list", **fields).out.splitlines()[1:]
        ]

    assert refs() == [second, first]
    assert refs(limit=1) == [second]
    assert refs(since="2017-09-14") == [second]
    assert postmaster(gateway, "list", since="yesterday").status == 2


async def test_forward_of_a_retained_refused_message_reaches_the_sink(
    start_gateway: GatewayFactory, run_worker: WorkerFactory, sink: Sink
) -> None:
    gw = await start_gateway(
        delivery=smarthost(sink),
        postmaster={"forward_to": [OPERATOR]},
        storage={"keep_raw": True, "raw_retention_days": 1},
    )
    _, final = await transaction(gw.port, [RETIRED])
    assert final is not None
    assert final.code == 550
    reference = reference_of(final)

    answer = postmaster(gw, "forward", reference=reference)
    assert answer.status == 0, answer.err
    assert "forward queued as job" in answer.out
    # Past its retention, the raw copy stays while the forward is to be sent.
    assert await purge_raw(gw.store, AFTER_CUTOFF.replace(month=12)) == 0

    await run_worker(gw)
    delivered = await sink.wait_for(2)  # the sender's notice, and the forward
    (received,) = [r for r in delivered if r.recipients != (SENDER,)]
    (raw,) = gw.raw_copies()
    assert received.mail_from == "<>"
    assert received.recipients == (OPERATOR,)
    assert received.data.endswith(raw.raw)
    await eventually(lambda: gw.jobs(kind="forward", state="delivered"))
    shown = postmaster(gw, "show", reference=reference)
    assert f"delivered to {OPERATOR}" in shown.out
    assert await purge_raw(gw.store, AFTER_CUTOFF.replace(month=12)) == 1


async def test_errors_for_an_unknown_reference_a_purged_message_and_no_forward_to(
    gateway: Gateway, start_gateway: GatewayFactory
) -> None:
    _, final = await transaction(gateway.port, [RETIRED])  # keep_raw off: nothing kept
    assert final is not None
    refused = reference_of(final)

    unset = postmaster(gateway, "forward", reference=refused)
    assert unset.status == 2
    assert "forward_to is not set" in unset.err

    unknown = postmaster(gateway, "show", reference="20170913-0000000000")
    assert unknown.status == 1
    assert "no message with reference 20170913-0000000000" in unknown.err

    purged = postmaster(gateway, "export", reference=refused)
    assert purged.status == 3
    assert "is not kept" in purged.err
    assert "purged (not kept)" in postmaster(gateway, "show", reference=refused).out


def test_forward_jobs_go_one_per_recipient_domain_from_the_null_sender() -> None:
    assert forward_jobs(["a@x.example", "b@y.example", "c@X.example"]) == (
        JobRecord("forward", "", ("a@x.example", "c@X.example")),
        JobRecord("forward", "", ("b@y.example",)),
    )
    assert forward_jobs([]) == ()


async def test_without_forward_to_postmaster_mail_is_only_kept(gateway: Gateway) -> None:
    reference = await mail_postmaster(gateway, message(to=POSTMASTER, sender=SENDER))
    assert gateway.jobs() == []
    (line,) = postmaster(gateway, "list").out.splitlines()[1:]
    assert line.split()[0] == reference
    assert line.split()[5] == "-"


def test_the_command_line_needs_a_reference_and_forward_to(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["postmaster", "show"]) == 2
    assert "postmaster show needs a reference" in capsys.readouterr().err
    assert main(["postmaster", "forward", "20170913-0000000000"]) == 2
    assert "forward_to is not set" in capsys.readouterr().err
