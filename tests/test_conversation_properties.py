"""Property-based tests of the SMTP conversation, over a real socket to the real server.

Random transactions (senders quoted, UTF-8, with NUL, overlong; recipients retired, repeated,
postmaster, unknown, foreign, malformed; declared sizes; bodies small, oversize or with long
lines) must keep the promise: every final answer naming a retired address says NOT FILED,
names the portal and carries a reference that is on record; a sender retrying what was
deferred is answered, never deferred again; nothing is mailed to anyone who did not send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store.queries import is_recorded
from tests.conftest import RETIRED, Gateway, GatewayFactory
from tests.smtpclient import RawClient, Reply

PORTAL = "https://eservice.ice.gov/"
LIMIT = 8192
REF = re.compile(r"(?:\(ref |Queued as )(\d{8}-[0-9A-Z]{13})")
SERVICE = "occ-chicago-service@occ-chicago.example"
RETIRED_FORMS = {
    RETIRED,
    RETIRED.upper(),
    SERVICE,
    f"{RETIRED.split('@')[0]}+tag@occ-chicago.example",
}

SENDERS = st.sampled_from(
    [
        "paralegal@lawfirm.example",
        '"pat paralegal"@lawfirm.example',
        "josé@bufete.example",
        "pat\x00@lawfirm.example",
        "p" * 300 + "@lawfirm.example",
        "",
        "no-at-sign",
    ]
)
RECIPIENTS = st.lists(
    st.sampled_from(
        [
            *sorted(RETIRED_FORMS),
            "postmaster@occ-chicago.example",
            "nobody@occ-chicago.example",
            "someone@gmail.example",
            "not an address",
            '"quoted person"@occ-chicago.example',
            "x" * 300 + "@occ-chicago.example",
            "occ\x00@occ-chicago.example",
        ]
    ),
    min_size=1,
    max_size=4,
)
BODIES = st.sampled_from(["small", "oversize", "long-line", "dots"])
DECLARED = st.sampled_from([None, 100, 10**9])


@dataclass(frozen=True)
class Transaction:
    sender: str
    recipients: list[str]
    body: str
    declared: int | None

    def content(self) -> bytes:
        head = b"From: <paralegal@lawfirm.example>\r\nSubject: Filing A123456789\r\n\r\n"
        body = {
            "small": b"Please find attached.\r\n",
            "oversize": b"x" * 76 * 200 + b"\r\n",
            "long-line": b"L" * 3000 + b"\r\n",
            "dots": b".\r\n..\r\n.x\r\nend\r\n",
        }[self.body]
        return head + body


@dataclass
class Outcome:
    rcpt: list[tuple[str, Reply]]
    final: Reply | None


def stuff(content: bytes) -> bytes:
    return b"".join(
        b"." + line if line.startswith(b".") else line for line in content.splitlines(True)
    )


async def run(gw: Gateway, tx: Transaction, recipients: list[str]) -> Outcome:
    async with await RawClient.connect(gw.port) as client:
        await client.reply()
        await client.cmd("EHLO client.lawfirm.example")
        params = " SMTPUTF8" if not tx.sender.isascii() else ""
        params += f" SIZE={tx.declared}" if tx.declared is not None else ""
        mail = await client.cmd(f"MAIL FROM:<{tx.sender}>{params}")
        rcpt: list[tuple[str, Reply]] = []
        final = None
        if mail.code == 250:
            rcpt = [(r, await client.cmd(f"RCPT TO:<{r}>")) for r in recipients]
            if any(reply.code == 250 for _, reply in rcpt):
                assert (await client.cmd("DATA")).code == 354
                client.writer.write(stuff(tx.content()) + b".\r\n")
                final = await client.reply()
        await client.cmd("QUIT")
    return Outcome(rcpt, final)


def recorded(gw: Gateway, reference: str) -> bool:
    return gw.read(lambda conn: is_recorded(conn, reference))


def assert_on_record(gw: Gateway, reply: Reply) -> None:
    match = REF.search(reply.text)
    assert match is not None, reply
    assert recorded(gw, match.group(1)), reply


def check_answers(gw: Gateway, outcome: Outcome) -> None:
    for address, reply in outcome.rcpt:
        assert "Error" not in reply.text, reply
        if address in RETIRED_FORMS and reply.code >= 500:
            assert PORTAL in reply.text, reply
            assert_on_record(gw, reply)
    accepted = [a for a, r in outcome.rcpt if r.code == 250]
    final = outcome.final
    if final is None:
        return
    assert "Error" not in final.text, final
    if final.code < 400 or final.code >= 500:
        assert_on_record(gw, final)
        if any(a in RETIRED_FORMS for a in accepted):
            assert "NOT FILED" in final.text, final
            assert PORTAL in final.text, final


@pytest.fixture
async def property_gateway(start_gateway: GatewayFactory) -> Gateway:
    # Limits high enough that the examples do not count against each other.
    gw: Gateway = await start_gateway(
        server={"max_message_size": LIMIT},
        limits={
            "notices_per_sender": 100000,
            "notices_per_domain": 100000,
            "notices_per_client": 100000,
            "notices_total": 100000,
        },
    )
    return gw


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sender=SENDERS, recipients=RECIPIENTS, body=BODIES, declared=DECLARED)
async def test_every_answer_keeps_the_promise_and_retries_are_answered(
    property_gateway: Gateway,
    sender: str,
    recipients: list[str],
    body: str,
    declared: int | None,
) -> None:
    gw = property_gateway
    tx = Transaction(sender, recipients, body, declared)
    pending = recipients
    for round_ in range(3):
        outcome = await run(gw, tx, pending)
        check_answers(gw, outcome)
        # As a sending MTA does: only what was deferred is tried again, in a new transaction.
        deferred = [a for a, r in outcome.rcpt if 400 <= r.code < 500]
        if outcome.final is not None and 400 <= outcome.final.code < 500:
            deferred += [a for a, r in outcome.rcpt if r.code == 250]
        if not deferred:
            break
        assert round_ < 2, f"still deferred after retries: {deferred} {outcome}"
        pending = deferred
    senders = {m.mail_from for m in gw.messages()}
    mailed = [j.recipients for j in gw.jobs() if j.kind != "relay"]
    for mailed_to in mailed:
        for address in mailed_to:
            assert address in senders
