"""A state store filled the way production fills it: real SMTP sessions, real deliveries.

`fill_store()` starts the real gateway on loopback, files a week's worth of typical attempts
over SMTP (two offices, trusted and untrusted clients, the null sender, a refusal at RCPT,
postmaster), then runs the real delivery worker against a recording sink that accepts the
first notice, defers the second and refuses the third. Audit tests query what it leaves.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.app import build_delivery
from gateway.notices.dkim import ensure_key
from gateway.notices.render import NoticeRenderer
from tests.conftest import OTHER_RETIRED, RETIRED, SENDER, Gateway, GatewayFactory, office
from tests.conftest import other_office as second_office
from tests.polling import eventually
from tests.sink import start_sink
from tests.smtpclient import message, transaction

__all__ = ["ATTEMPTS", "CLERK", "FAR", "Filed", "fill_store"]

REFERENCE = re.compile(r"\d{8}-[0-9A-Z]{13}")
CLERK = "clerk@Other-Firm.example"
FAR = "attorney@far.example"  # writes from a client outside the trusted networks
UNTRUSTED = "127.0.0.2"
CHICAGO, OTHER = "ice-occ-chicago", "other-office"

# In Chicago (CDT, UTC-5): Sep 13 10:00, 10:01, 10:02, 10:03, 10:04, then Sep 13 22:30 (which
# is already Sep 14 in UTC), then Sep 14 10:00.
SEP13 = datetime(2017, 9, 13, 15, 0, tzinfo=UTC)
LATE_SEP13_CHICAGO = datetime(2017, 9, 14, 3, 30, tzinfo=UTC)
SEP14 = datetime(2017, 9, 14, 15, 0, tzinfo=UTC)


@dataclass
class Filed:
    """The gateway that took the attempts, and the reference of each, by name."""

    gateway: Gateway
    refs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    name: str
    at: datetime
    rcpt: str = RETIRED
    sender: str = SENDER
    source: str | None = None
    subject: str = "Motion to continue"
    attachment: tuple[str, bytes] | None = None
    message_id: str = "<filing-1@lawfirm.example>"


ATTEMPTS = (
    Attempt(
        "motion",
        SEP13,
        subject="Motion to continue A123456789",
        attachment=("A123456789 motion.pdf", b"%PDF-1.7" * 100),
        message_id="<motion-1@lawfirm.example>",
    ),
    Attempt("clerk", SEP13.replace(minute=1), sender=CLERK, message_id="<c-1@other.example>"),
    Attempt("null", SEP13.replace(minute=2), sender="", message_id="<n-1@x.example>"),
    Attempt("postmaster", SEP13.replace(minute=3), rcpt="postmaster@occ-chicago.example"),
    Attempt("refusal", SEP13.replace(minute=4), rcpt=OTHER_RETIRED),
    Attempt("untrusted", LATE_SEP13_CHICAGO, sender=FAR, source=UNTRUSTED),
    Attempt(
        "second",
        SEP14,
        rcpt="OCC-Chicago-Filings+court@occ-chicago.example",
        subject="Reply brief",
        message_id="<brief-2@lawfirm.example>",
    ),
)


async def _file(gw: Gateway, attempt: Attempt) -> str:
    content = message(
        to=attempt.rcpt,
        subject=attempt.subject,
        attachment=attempt.attachment,
        message_id=attempt.message_id,
    )
    replies, final = await transaction(
        gw.port, [attempt.rcpt], content, attempt.sender, source=attempt.source
    )
    reply = final if final is not None else replies[0]
    found = REFERENCE.search(reply.text)  # "(ref REF)" after a refusal, "Queued as REF" else
    assert found is not None, reply
    return found[0]


async def fill_store(start_gateway: GatewayFactory) -> Filed:
    """Every kind of attempt, on two days, with notices delivered, deferred and failed."""
    sink = await start_sink(
        replies=["250 2.0.0 Queued", "452 4.2.2 Mailbox full", "550 5.1.1 No such user"]
    )
    try:
        gw: Gateway = await start_gateway(
            clock_at=SEP13,
            offices=[office(), second_office(response="reject-at-rcpt")],
            server={"trusted_networks": ["127.0.0.1/32", "::1/128"]},
            delivery={
                "mode": "smarthost",
                "smarthost": f"127.0.0.1:{sink.port}",
                "starttls": "opportunistic",
                "concurrency": 1,
                "retry_schedule": [3600.0],
                "retry_jitter": 0.0,
                "poll_interval": 0.05,
            },
        )
        filed = Filed(gw)
        for attempt in ATTEMPTS:
            gw.clock.now = attempt.at
            filed.refs[attempt.name] = await _file(gw, attempt)
        await _deliver(gw)
        return filed
    finally:
        sink.close()


async def _deliver(gw: Gateway) -> None:
    """Run the real worker until each of the three notices has had its attempt."""
    key, _ = ensure_key(gw.notices)
    worker = build_delivery(gw.settings, gw.store, gw.clock, NoticeRenderer(gw.notices), key)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: len([j for j in gw.jobs() if j.attempts >= 1]) == 3, within=15)
    finally:
        await worker.stop(1.0)
        await asyncio.wait_for(task, 5)
