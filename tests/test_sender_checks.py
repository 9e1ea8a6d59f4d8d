"""Sender checks end to end: SMTP over loopback, SPF/DKIM/DMARC from a loopback DNS server.

Nothing is trusted here (trusted_networks is empty), so a notice goes out only to a sender
whose domain vouches for it. Clients connect from 127.0.0.1 (the SPF records' own address)
or 127.0.0.2 (a forger's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import dkim as dkimpy
import pytest
from structlog.testing import capture_logs

from gateway.notices.dkim import generate_private_key, txt_record
from tests.conftest import RETIRED, Gateway, GatewayFactory, office
from tests.dnsserver import DnsServer
from tests.smtpclient import message, transaction

KEY = generate_private_key()
ZONE = {
    ("lawfirm.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
    ("_dmarc.lawfirm.example", "TXT"): ["v=DMARC1; p=reject"],
    ("mail._domainkey.lawfirm.example", "TXT"): [txt_record(KEY)],
    ("slowfirm.example", "TXT"): "timeout",
}
FORGER = "127.0.0.2"
SENDER = "paralegal@lawfirm.example"


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def dns(dns_server: DnsServer) -> int:
    return dns_server.port


def checking(dns_port: int, **office_values: Any) -> dict[str, Any]:
    return {
        "server": {"trusted_networks": []},
        "sender_auth": {"enabled": True, "timeout": 3.0},
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 0.5},
        "offices": [office(**office_values)],
    }


def signed(content: bytes) -> bytes:
    signature: bytes = dkimpy.sign(
        content, b"mail", b"lawfirm.example", KEY, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + content


def filing(**kwargs: Any) -> bytes:
    return (
        message(sender=f"Pat Paralegal <{SENDER}>", **kwargs)
        .replace(b"\n", b"\r\n")
        .replace(b"\r\r\n", b"\r\n")
    )


async def send(
    gw: Gateway, content: bytes, *, source: str | None = None, sender: str = SENDER
) -> tuple[int, str]:
    _, final = await transaction(gw.port, [RETIRED], content, sender, source=source)
    assert final is not None
    return final.code, final.last


def record(gw: Gateway) -> Any:
    (row,) = gw.messages()
    return row


def notices(gw: Gateway) -> int:
    return len(gw.jobs(kind="notice"))


async def test_spf_pass_gets_the_refusal_and_a_notice(
    start_gateway: GatewayFactory, dns: int
) -> None:
    gw = await start_gateway(**checking(dns))
    with capture_logs() as events:
        code, _ = await send(gw, filing())
    assert code == 550
    row = record(gw)
    assert row.notice == "queued"
    assert "spf=pass smtp.mailfrom=lawfirm.example" in row.auth
    assert notices(gw) == 1
    (received,) = [e for e in events if e["event"] == "smtp.message.received"]
    assert received["auth"] == row.auth


async def test_forged_sender_from_an_spf_fail_domain_is_never_mailed(
    start_gateway: GatewayFactory, dns: int
) -> None:
    gw = await start_gateway(**checking(dns))
    code, _ = await send(gw, filing(), source=FORGER)
    assert code == 550  # the SMTP-time refusal is the forger's only answer
    row = record(gw)
    assert row.notice == "suppressed:sender-not-authenticated"
    assert "spf=fail" in row.auth
    assert "dmarc=fail" in row.auth
    assert notices(gw) == 0


async def test_forwarded_mail_with_an_aligned_dkim_pass_is_noticed(
    start_gateway: GatewayFactory, dns: int
) -> None:
    gw = await start_gateway(**checking(dns))
    code, _ = await send(gw, signed(filing()), source=FORGER)  # a forwarder: SPF fails
    assert code == 550
    row = record(gw)
    assert "spf=fail" in row.auth
    assert "dkim=pass header.d=lawfirm.example" in row.auth
    assert row.notice == "queued"


async def test_dkim_signed_but_altered_body_is_not_authenticated(
    start_gateway: GatewayFactory, dns: int
) -> None:
    gw = await start_gateway(**checking(dns))
    tampered = signed(filing()).replace(b"Please find attached.", b"Please find nothing.")
    await send(gw, tampered, source=FORGER)
    row = record(gw)
    assert "dkim=fail" in row.auth
    assert row.notice == "suppressed:sender-not-authenticated"


async def test_dns_timeout_answers_451_and_never_drops_silently(
    start_gateway: GatewayFactory, dns: int
) -> None:
    gw = await start_gateway(**checking(dns))
    slow = message(sender="clerk@slowfirm.example")
    code, reply = await send(gw, slow, sender="clerk@slowfirm.example")
    assert code == 451
    assert reply.startswith("451 4.4.3 Could not check the sender's domain")
    row = record(gw)
    assert (row.outcome, row.notice) == ("deferred", "suppressed:sender-check-temperror")
    assert notices(gw) == 0


async def test_accept_and_notify_accepts_only_an_authenticated_sender(
    start_gateway: GatewayFactory, dns: int
) -> None:
    gw = await start_gateway(**checking(dns, response="accept-and-notify"))
    accepted = await send(gw, filing(message_id="<a@lawfirm.example>"))
    refused = await send(gw, filing(message_id="<b@lawfirm.example>"), source=FORGER)
    assert accepted[0] == 250
    assert accepted[1].startswith("250 2.0.0 Received but NOT FILED")
    assert refused[0] == 550
    assert notices(gw) == 1


async def test_repeated_checks_of_one_firm_are_answered_from_the_dns_cache(
    start_gateway: GatewayFactory, dns_server: DnsServer
) -> None:
    gw = await start_gateway(**checking(dns_server.port))
    for n in range(3):
        await send(gw, filing(message_id=f"<cached-{n}@lawfirm.example>"))
    asked = [q for q in dns_server.queries if (q.name, q.rtype) == ("lawfirm.example", "TXT")]
    assert len(asked) == 1  # SPF looked up once, kept for its TTL
    assert notices(gw) == 3
