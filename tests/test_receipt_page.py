"""The public receipt page against a real gateway: real SMTP attempts, real deliveries to a
recording sink, then real HTTP requests to the page's own listener (`[lookup] listen`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.config import LookupSettings
from gateway.http.health import Endpoint
from gateway.http.lookup import SECURITY_HEADERS, start_lookup
from gateway.store.retention import purge_records
from tests.conftest import RETIRED, FakeClock, Gateway, GatewayFactory
from tests.filings import SEP13, Filed, fill_store
from tests.smtpclient import message, transaction

RECEIPTS = "https://eservice-mx.agency.example/ref/"


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receipts:
    """A running receipt page and how to ask it."""

    endpoint: Endpoint
    clock: FakeClock

    async def get(self, path: str, *, source: str = "127.0.0.1", **named: str) -> Page:
        """GET `path` from a client at `source`; Accept_Language="es" sends Accept-Language."""
        headers = {name.replace("_", "-"): value for name, value in named.items()}
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as client,
            client.get(f"http://127.0.0.1:{self.endpoint.port}{path}", headers=headers) as got,
        ):
            return Page(got.status, dict(got.headers), await got.read())


ReceiptsFactory = Callable[..., Awaitable[Receipts]]


@pytest.fixture
async def serve_receipts() -> AsyncIterator[ReceiptsFactory]:
    started: list[Endpoint] = []

    async def start(gateway: Gateway, **lookup: Any) -> Receipts:
        settings = gateway.settings.model_copy(
            update={"lookup": LookupSettings.model_validate({"listen": "127.0.0.1:0", **lookup})}
        )
        clock = FakeClock(gateway.clock.now)
        endpoint = await start_lookup(settings, clock)
        assert endpoint is not None
        started.append(endpoint)
        return Receipts(endpoint, clock)

    yield start
    for endpoint in started:
        await endpoint.close()


@pytest.fixture
async def filed(start_gateway: GatewayFactory) -> Filed:
    async with asyncio.timeout(60):
        return await fill_store(start_gateway)


# -- the page ---------------------------------------------------------------------------------


async def test_the_page_says_when_where_not_filed_and_that_the_notice_was_delivered(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway)
    ref = filed.refs["motion"]
    page = await receipts.get(f"/ref/{ref}", Accept_Language="en-US,en;q=0.9")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    text = page.text
    assert '<html lang="en">' in text
    assert "<h1 " in text
    assert ">NOT filed or served</h1>" in text
    # 15:00 UTC is 10:00 in Chicago (CDT).
    assert "Wednesday, September 13, 2017, 10:00 AM CDT" in text
    assert RETIRED in text
    assert "ICE Office of the Chief Counsel, Chicago" in text
    assert "lawfirm.example" in text
    assert "Our notice was delivered to your mail server on" in text
    assert 'href="https://eservice.ice.gov/"' in text
    assert f"Please quote reference {ref}" in text
    assert "<script" not in text
    assert "style=" not in text
    assert "<style" not in text


@pytest.mark.parametrize(
    ("name", "words"),
    [
        # The sink defers the second notice and refuses the third.
        ("clerk", "Our notice is on its way to your mail server."),
        ("second", "Our notice could not be delivered"),
        ("null", "Our notice was not sent because the e-mail had no return address."),
        ("untrusted", "we could not confirm that the e-mail came from your domain"),
        ("refusal", "the refusal your mail server received is our answer"),
    ],
)
async def test_the_page_says_what_became_of_the_notice_in_plain_words(
    filed: Filed, serve_receipts: ReceiptsFactory, name: str, words: str
) -> None:
    receipts = await serve_receipts(filed.gateway)
    page = await receipts.get(f"/ref/{filed.refs[name]}")
    assert page.status == 200
    assert words in page.text


async def test_spanish_from_accept_language_with_a_switch_back_to_english(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway)
    ref = filed.refs["motion"]
    page = await receipts.get(f"/ref/{ref}", Accept_Language="es-MX,es;q=0.9,en;q=0.5")
    assert '<html lang="es">' in page.text
    assert "NO presentado ni notificado" in page.text
    assert "miércoles, 13 de septiembre de 2017, 10:00 (CDT)" in page.text
    assert f'<a href="/ref/{ref}?lang=en" hreflang="en" lang="en">English</a>' in page.text
    assert page.headers["Content-Language"] == "es"
    switched = await receipts.get(f"/ref/{ref}?lang=en", Accept_Language="es")
    assert '<html lang="en">' in switched.text
    assert f'<a href="/ref/{ref}?lang=es" hreflang="es" lang="es">Español</a>' in switched.text


async def test_the_json_has_the_pages_fields_as_values(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway)
    ref = filed.refs["motion"]
    page = await receipts.get(f"/ref/{ref}.json")
    assert page.status == 200
    assert page.headers["Content-Type"] == "application/json; charset=utf-8"
    fields = page.json()
    assert sorted(fields) == [
        "addresses",
        "answer",
        "content_received",
        "filed",
        "language",
        "message",
        "notice",
        "office",
        "received",
        "reference",
        "sender_domain",
        "served",
        "status",
        "summary",
        "what_to_do",
    ]
    assert fields["reference"] == ref
    assert (fields["status"], fields["filed"], fields["served"]) == ("not-filed", False, False)
    assert fields["received"] == {
        "office_time": "2017-09-13T10:00:00-05:00",
        "utc": "2017-09-13T15:00:00+00:00",
        "time_zone": "America/Chicago",
    }
    assert fields["office"]["name"] == "ice-occ-chicago"
    assert fields["addresses"] == [RETIRED]
    assert fields["sender_domain"] == "lawfirm.example"
    assert fields["answer"].startswith("550 5.1.6 NOT FILED")
    assert fields["notice"]["status"] == "delivered"
    assert fields["notice"]["sent_at"] is not None
    assert fields["what_to_do"]["portal_url"] == "https://eservice.ice.gov/"
    assert len(fields["message"]["sha256"]) == 64
    refusal = (await receipts.get(f"/ref/{filed.refs['refusal']}.json")).json()
    assert (refusal["content_received"], refusal["notice"]["status"]) == (False, "none")
    assert refusal["message"] == {"sha256": None, "size": None}
    withheld = (await receipts.get(f"/ref/{filed.refs['null']}.json")).json()
    assert withheld["notice"]["status"] == "withheld"
    assert withheld["notice"]["reason"] == "null-sender"
    assert withheld["sender_domain"] is None


async def test_the_sha256_is_left_out_when_show_sha256_is_off(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway, show_sha256=False)
    ref = filed.refs["motion"]
    assert "message" not in (await receipts.get(f"/ref/{ref}.json")).json()
    assert "SHA-256" not in (await receipts.get(f"/ref/{ref}")).text


async def test_a_filing_page_shows_none_of_its_content(
    start_gateway: GatewayFactory, serve_receipts: ReceiptsFactory
) -> None:
    gateway = await start_gateway()
    content = message(
        sender="Quentin Marsh <q.marsh.secret@zephyr-law.example>",
        subject="Zanzibar custody motion A246813579",
        attachment=("Quokka-exhibit-7731.pdf", b"%PDF-1.7" * 50),
        message_id="<unique-zanzibar-4411@zephyr-law.example>",
        body="Respondent Ximena Oyelaran-Pfeiffer, A246813579.",
    )
    async with asyncio.timeout(20):
        _, final = await transaction(
            gateway.port, [RETIRED], content, "q.marsh.secret@zephyr-law.example"
        )
    assert final is not None
    ref = final.text.rsplit("(ref ", 1)[1].rstrip(")")
    receipts = await serve_receipts(gateway)
    pages = [
        (await receipts.get(f"/ref/{ref}{tail}", Accept_Language=lang)).text
        for tail in ("", ".json")
        for lang in ("en", "es")
    ]
    for text in pages:
        assert ref in text
        assert "zephyr-law.example" in text
        for secret in (
            "Zanzibar",
            "custody",
            "Quokka",
            "7731",
            "A246813579",
            "246813579",
            "246-813-579",
            "q.marsh",
            "Quentin",
            "Marsh",
            "unique-zanzibar",
            "Ximena",
        ):
            assert secret.lower() not in text.lower(), secret


# -- 404 sameness -----------------------------------------------------------------------------


async def test_unknown_malformed_expired_purged_and_postmaster_references_get_one_404(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway, max_age_days=30, per_minute=600, burst=100)
    known = filed.refs["motion"]
    assert (await receipts.get(f"/ref/{known}")).status == 200
    unknown = "20170913-" + ("Z" if known[9] != "Z" else "Y") + known[10:]
    paths = [
        f"/ref/{unknown}",
        "/ref/nonsense",
        "/ref/20170913-ILOU0000000",
        "/ref/%2E%2E%2Fetc%2Fpasswd",
        f"/ref/{known}x",
        f"/ref/{filed.refs['postmaster']}",
    ]
    pages = [await receipts.get(p) for p in paths]
    receipts.clock.now = SEP13 + timedelta(days=31)
    pages.append(await receipts.get(f"/ref/{known}"))  # expired: past max_age_days
    receipts.clock.now = SEP13
    await purge_records(filed.gateway.store, before=SEP13 + timedelta(days=2))
    pages.append(await receipts.get(f"/ref/{known}"))  # purged
    assert {p.status for p in pages} == {404}
    assert len({p.body for p in pages}) == 1
    assert (
        len({tuple(sorted((k, v) for k, v in p.headers.items() if k != "Date")) for p in pages})
        == 1
    )
    assert "No receipt for this reference" in pages[0].text
    assert "No hay constancia para esta referencia" in pages[0].text
    jsons = [await receipts.get(f"/ref/{ref}.json") for ref in (unknown, "nonsense", known)]
    assert {p.status for p in jsons} == {404}
    assert len({p.body for p in jsons}) == 1


# -- the limit, the headers, the audit --------------------------------------------------------


async def test_a_client_past_its_limit_gets_429_with_retry_after_and_others_go_on(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway, per_minute=2, burst=3)
    ref = filed.refs["motion"]
    with capture_logs() as logs:
        statuses = [(await receipts.get(f"/ref/{ref}")).status for _ in range(3)]
        refused = await receipts.get(f"/ref/{ref}")
        again = await receipts.get("/ref/nonsense")
        other = await receipts.get(f"/ref/{ref}", source="127.0.0.2")
    assert statuses == [200, 200, 200]
    assert (refused.status, again.status, other.status) == (429, 429, 200)
    # per_minute = 2 is one token each 30 s: the next is due 30 s after the first lookup,
    # less the second or so these four took.
    assert int(refused.headers["Retry-After"]) in (29, 30)
    limited = [e for e in logs if e["event"] == "receipt.rate_limited"]
    assert [(e["scope"], e["client"], e["retry_after_s"] >= 1) for e in limited] == [
        ("client", "127.0.0.1", True)
    ]
    assert len([e for e in logs if e["event"] == "receipt.looked_up"]) == 4


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    # The agency's TLS proxy at 127.0.0.1 forwards every attorney's lookups: counted by the
    # proxy's address they would all share one bucket. Another peer's header is not believed.
    receipts = await serve_receipts(
        filed.gateway, per_minute=1, burst=1, proxy_from=["127.0.0.1/32"]
    )
    ref = filed.refs["motion"]
    with capture_logs() as logs:
        first = await receipts.get(f"/ref/{ref}", X_Forwarded_For="198.51.100.7")
        again = await receipts.get(f"/ref/{ref}", X_Forwarded_For="198.51.100.7")
        other = await receipts.get(f"/ref/{ref}", X_Forwarded_For="203.0.113.9")
        forged = await receipts.get(f"/ref/{ref}", source="127.0.0.2", X_Forwarded_For="192.0.2.1")
        forged_again = await receipts.get(
            f"/ref/{ref}", source="127.0.0.2", X_Forwarded_For="192.0.2.2"
        )
    assert [p.status for p in (first, again, other, forged, forged_again)] == [
        200,
        429,
        200,
        200,
        429,
    ]
    looked_up = [e["client"] for e in logs if e["event"] == "receipt.looked_up"]
    assert looked_up == ["198.51.100.7", "203.0.113.9", "127.0.0.2"]


async def test_all_clients_together_are_held_to_total_per_second(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway, total_per_second=2, per_minute=600, burst=100)
    ref = filed.refs["motion"]
    with capture_logs() as logs:
        pages = [await receipts.get(f"/ref/{ref}", source=f"127.0.0.{n}") for n in (1, 2, 3)]
    assert [p.status for p in pages] == [200, 200, 429]
    assert pages[2].headers["Retry-After"] == "1"
    limited = [e for e in logs if e["event"] == "receipt.rate_limited"]
    assert [(e["scope"], e["client"]) for e in limited] == [("total", "127.0.0.3")]


async def test_every_answer_carries_the_security_headers(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway, burst=5)
    ref = filed.refs["motion"]
    pages = [
        await receipts.get(f"/ref/{ref}"),
        await receipts.get(f"/ref/{ref}.json"),
        await receipts.get("/ref/nonsense"),
        await receipts.get("/receipt.css"),
        await receipts.get("/"),
    ]
    assert [p.status for p in pages] == [200, 200, 404, 200, 404]
    for page in pages:
        for name, value in SECURITY_HEADERS.items():
            assert page.headers[name] == value
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert "script-src" not in csp  # default-src 'none': no script at all
    assert "aiohttp" not in str(pages[0].headers)
    assert "Python" not in str(pages[0].headers)
    assert pages[3].headers["Content-Type"] == "text/css; charset=utf-8"


async def test_each_lookup_is_an_audit_event_naming_only_a_well_formed_reference(
    filed: Filed, serve_receipts: ReceiptsFactory
) -> None:
    receipts = await serve_receipts(filed.gateway)
    ref = filed.refs["motion"]
    with capture_logs() as logs:
        await receipts.get(f"/ref/{ref}", Accept_Language="es")
        await receipts.get(f"/ref/{ref.lower()}.json")
        await receipts.get("/ref/<script>")
    looked = [e for e in logs if e["event"] == "receipt.looked_up"]
    assert [(e["reference"], e["found"], e["format"], e["lang"]) for e in looked] == [
        (ref, True, "html", "es"),
        (ref, True, "json", "en"),
        (None, False, "html", None),
    ]
    assert {e["client"] for e in looked} == {"127.0.0.1"}


# -- the link in replies ----------------------------------------------------------------------


async def test_replies_name_the_receipt_page_when_a_public_url_is_set(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(lookup={"public_url": RECEIPTS})
    async with asyncio.timeout(20):
        _, final = await transaction(gateway.port, [RETIRED])
        refused, _ = await transaction(gateway.port, ["nobody@occ-chicago.example"])
    assert final is not None
    assert (final.code, final.text.startswith("5.1.6 NOT FILED")) == (550, True)
    ref = final.text.rsplit("(ref ", 1)[1].split(",")[0]
    assert final.text.endswith(f"(ref {ref}, {RECEIPTS}{ref})")
    assert f", {RECEIPTS}" in refused[0].text
    # The notices it sends are made from the same setting (test_notices.py renders the link).
    assert gateway.notices.public_url == RECEIPTS
