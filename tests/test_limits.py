"""Never a loop, never a flood: duplicates, rate limits, loops and the PROXY protocol.

Real SMTP sessions over loopback against the real server and SQLite store; the limits are
counted in the store, so they hold across sessions (and processes).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from gateway.policy.decision import NoticeScope, exceeded_scope, loop_reason
from tests.conftest import RETIRED, SENDER, Gateway, GatewayFactory
from tests.smtpclient import RawClient, message, reference_of, transaction


async def file(
    gw: Gateway, *, content: bytes | None = None, sender: str = SENDER
) -> tuple[int, str]:
    """Send one filing to the retired address; returns the code and text of the final reply."""
    _, final = await transaction(gw.port, [RETIRED], content, sender)
    assert final is not None
    return final.code, final.last


def notices(gw: Gateway) -> int:
    return len(gw.jobs(kind="notice"))


# -- duplicates -----------------------------------------------------------------------------


async def test_the_same_filing_sent_again_gets_its_reply_but_one_notice(gateway: Gateway) -> None:
    with capture_logs() as events:
        first = await file(gateway)
        second = await file(gateway)
    assert first[0] == second[0] == 550  # each attempt is still answered and recorded
    assert notices(gateway) == 1
    rows = gateway.messages()
    assert [r.notice for r in rows] == ["queued", "suppressed:duplicate"]
    assert rows[1].duplicate_of == rows[0].reference
    (repeat,) = [e for e in events if e["event"] == "notice.suppressed"]
    assert (repeat["reason"], repeat["duplicate_of"]) == ("duplicate", rows[0].reference)


async def test_without_message_id_the_same_bytes_are_the_same_message(gateway: Gateway) -> None:
    raw = b"From: a@lawfirm.example\r\nSubject: no id\r\n\r\nsame body\r\n"
    await file(gateway, content=raw)
    await file(gateway, content=raw)
    await file(gateway, content=raw.replace(b"same body", b"other body"))
    assert notices(gateway) == 2


async def test_distinct_filings_from_one_sender_each_get_a_notice(gateway: Gateway) -> None:
    for n in range(3):
        await file(gateway, content=message(message_id=f"<motion-{n}@lawfirm.example>"))
    assert notices(gateway) == 3


async def test_a_repeat_after_the_window_is_noticed_again(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(limits={"dedup_window": 3600})
    await file(gw)
    gw.clock.now += timedelta(hours=2)
    await file(gw)
    assert notices(gw) == 2


# -- rate limits ----------------------------------------------------------------------------------


async def test_a_burst_from_one_sender_crosses_its_limit_and_gets_451(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(limits={"notices_per_sender": 3})
    replies = [
        await file(gw, content=message(message_id=f"<m{n}@lawfirm.example>")) for n in range(5)
    ]
    assert [code for code, _ in replies] == [550, 550, 550, 451, 451]
    assert replies[3][1].startswith("451 4.7.1 Too many messages from this sender this hour")
    # A delay warning may be all the sender ever reads: it says not filed, and where to file.
    assert "NOT FILED" in replies[3][1]
    assert "https://eservice.ice.gov/" in replies[3][1]
    assert notices(gw) == 3
    limited = [m for m in gw.messages() if m.outcome == "deferred"]
    assert {r.notice for r in limited} == {"suppressed:rate-limit-sender"}
    assert all(r.reply.startswith("451 4.7.1") for r in limited)
    # Another sender at the same firm is not held back by it.
    other = await file(gw, sender="associate@lawfirm.example")
    assert other[0] == 550
    assert notices(gw) == 4


async def test_the_limit_counts_across_concurrent_sessions(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(limits={"notices_per_domain": 5})

    async def one(n: int) -> int:
        code, _ = await file(
            gw,
            sender=f"lawyer{n}@bigfirm.example",
            content=message(message_id=f"<c{n}@bigfirm.example>"),
        )
        return code

    async with asyncio.timeout(20):
        codes = await asyncio.gather(*(one(n) for n in range(12)))
    assert sorted(codes) == [451] * 7 + [550] * 5
    assert notices(gw) == 5


async def test_an_advisory_over_the_limit_is_dropped_and_the_mail_still_relayed(
    start_gateway: GatewayFactory,
) -> None:
    from tests.conftest import WARN_TIME

    gw = await start_gateway(clock_at=WARN_TIME, limits={"notices_per_sender": 1})
    codes = [(await file(gw, content=message(message_id=f"<w{n}@x.example>")))[0] for n in range(2)]
    assert codes == [250, 250]
    kinds = [j.kind for j in gw.jobs()]
    assert kinds == ["relay", "advisory", "relay"]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({}, None),
        ({NoticeScope.SENDER: 2}, None),
        ({NoticeScope.SENDER: 3}, NoticeScope.SENDER),
        ({NoticeScope.DOMAIN: 10, NoticeScope.CLIENT: 99}, NoticeScope.DOMAIN),
        ({NoticeScope.TOTAL: 1000}, NoticeScope.TOTAL),
    ],
)
def test_exceeded_scope(counts: dict[NoticeScope, int], expected: NoticeScope | None) -> None:
    limits = {
        NoticeScope.SENDER: 3,
        NoticeScope.DOMAIN: 10,
        NoticeScope.CLIENT: 50,
        NoticeScope.TOTAL: 1000,
    }
    assert exceeded_scope(counts, limits) is expected


# -- loops ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message_id", "received", "reason"),
    [
        ({}, "<a@lawfirm.example>", 3, None),
        ({}, "<a@lawfirm.example>", 31, "too-many-hops"),
        ({"x-eservice-gateway-reference": "20170913-X"}, None, 1, "own-notice-marker"),
        ({}, "<20170913-X.not-filed.chicago@occ.example>", 1, "own-message-id"),
        (
            {"in-reply-to": "<20170913-X.not-filed.chicago@OCC.example>"},
            None,
            1,
            "reply-to-own-notice",
        ),
        ({"references": "<a@b> <c@occ.example>"}, None, 1, "reply-to-own-notice"),
    ],
)
def test_loop_reason(
    headers: dict[str, str], message_id: str | None, received: int, reason: str | None
) -> None:
    found = loop_reason(
        headers,
        message_id=message_id,
        received_count=received,
        own_domain="occ.example",
        max_received=30,
    )
    assert found == reason


async def test_an_auto_responder_answering_our_notice_is_refused_and_never_answered(
    gateway: Gateway,
) -> None:
    # What an out-of-office reply to our notice looks like: a reply to our Message-ID.
    ours = "<20170913-7K3QM9XD0A.not-filed.ice-occ-chicago@mx.test.example>"
    content = message(
        subject="Out of office: Auto: NOT FILED",
        In_Reply_To=ours,
        References=ours,
        Auto_Submitted="auto-replied",
    )
    code, reply = await file(gateway, content=content)
    assert (code, reply) == (554, "554 5.4.6 Mail loop detected; this message is not answered")
    (row,) = gateway.messages()
    assert (row.notice, row.outcome) == ("suppressed:loop-reply-to-own-notice", "rejected")
    assert gateway.jobs() == []


async def test_a_message_with_too_many_hops_is_refused(gateway: Gateway) -> None:
    hops = b"".join(
        b"Received: from relay%d.example by relay%d.example; Wed, 13 Sep 2017\r\n" % (n, n + 1)
        for n in range(31)
    )
    code, _ = await file(gateway, content=hops + message())
    assert code == 554
    assert gateway.jobs() == []


# -- the PROXY protocol ---------------------------------------------------------------------------


async def test_proxy_protocol_gives_the_real_client_address(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"proxy_protocol": True})
    async with await RawClient.connect(gw.port) as client:
        await client.send("PROXY TCP4 203.0.113.7 127.0.0.1 40123 25")
        assert (await client.reply()).code == 220
        await client.cmd("EHLO client.lawfirm.example")
        await client.cmd(f"MAIL FROM:<{SENDER}>")
        await client.cmd(f"RCPT TO:<{RETIRED}>")
        final = await client.data(message())
    assert final.code == 550
    (row,) = gw.messages()
    assert (row.peer_ip, row.peer_port) == ("203.0.113.7", 40123)
    # The real client is on the internet, not a trusted network: no notice for it.
    assert row.notice == "suppressed:sender-not-authenticated"
    assert reference_of(final)


async def test_proxy_header_from_an_untrusted_peer_is_refused(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway(server={"proxy_protocol": True, "proxy_from": ["192.0.2.0/24"]})
    async with await RawClient.connect(gw.port) as client:
        await client.send("PROXY TCP4 203.0.113.7 127.0.0.1 40123 25")
        with pytest.raises(ConnectionError):
            await client.reply()
    assert gw.messages() == []


async def test_missing_proxy_header_closes_the_connection(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(server={"proxy_protocol": True})
    async with await RawClient.connect(gw.port) as client:
        await client.send("EHLO client.lawfirm.example")
        with pytest.raises(ConnectionError):
            await client.reply()
    assert json.dumps(gw.messages()) == "[]"
