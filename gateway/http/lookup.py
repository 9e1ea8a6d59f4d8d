"""The public receipt page: `[lookup] listen` serves GET /ref/<reference> and its .json.

Its own aiohttp listener, apart from the operator's /metrics; in the one serving process, or
under `[server] workers` in the supervisor, which owns the host's HTTP as it owns /metrics.
Each request: the client's rate limit first (a walker of the reference space gets 429 with
Retry-After before anything is looked up), then one read of the store (the SQLite file
read-only, or the shared PostgreSQL, whichever node took the attempt), in a thread of its
own, so the event loop and the SMTP side never wait on it. Unknown, malformed, expired and
purged references get one 404 page, the same bytes for all; a store that cannot be read, 503.
Every lookup is an audit event. Nothing here writes to the store or mails anyone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from importlib import resources

import jinja2
import structlog
from aiohttp import web

from gateway.clock import Clock
from gateway.config import GatewaySettings, LookupSettings, OfficeSettings
from gateway.errors import StoreError
from gateway.http.forwarded import client_address
from gateway.http.health import Endpoint
from gateway.http.ratelimit import RateLimit
from gateway.http.receiptpage import (
    choose_language,
    page_languages,
    receipt_fields,
    receipt_page,
)
from gateway.http.receiptwords import WORDS
from gateway.store.backend import StoreLocation, open_receipts
from gateway.store.interface import ReceiptReader
from gateway.store.receipts import REFERENCE_SHAPE, Receipt

__all__ = ["SECURITY_HEADERS", "page_templates", "start_lookup"]

log = structlog.get_logger()

# No script, no inline style, nothing from elsewhere: the page's one stylesheet is ours.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    # A receipt changes as its notice goes out, and is nobody else's to keep.
    "Cache-Control": "no-store",
    # Nothing about the software: the version is not the public's to know.
    "Server": "eservice-gateway",
}
_HTML = "text/html"
_SHUTDOWN_S = 1.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page_templates() -> jinja2.Environment:
    """The HTTP pages' templates (gateway/http/pages/), autoescaped, strict on a missing name."""
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_page_source),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page_source(name: str) -> str:
    return resources.files("gateway.http").joinpath("pages", name).read_text(encoding="utf-8")


class _Reader:
    """Reads receipts in one thread of its own, with the store's receipt reader."""

    def __init__(self, receipts: ReceiptReader) -> None:
        self._receipts = receipts
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receipts")

    async def read(self, reference: str) -> Receipt | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._receipts.read_receipt, reference)

    def close(self) -> None:
        self._executor.submit(self._receipts.close)
        self._executor.shutdown(wait=True)


class _Receipts:
    """The routes, and what they read: the offices, the store, the clock, the limit."""

    def __init__(
        self,
        settings: LookupSettings,
        offices: Mapping[str, OfficeSettings],
        reader: _Reader,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.offices = offices
        self.reader = reader
        self.clock = clock
        self.limit = RateLimit(per_minute=settings.per_minute, burst=settings.burst)
        total = settings.total_per_second
        self.total = RateLimit(per_minute=total * 60, burst=total, max_clients=1)
        pages = page_templates()
        self.page = pages.get_template("receipt.html.j2")
        self.not_found = pages.get_template("notfound.html.j2").render(
            en=WORDS["en"], es=WORDS["es"]
        )
        self.css = _page_source("receipt.css")

    async def lookup(self, request: web.Request) -> web.Response:
        client = client_address(
            request.remote or "unknown",
            request.headers.getall("X-Forwarded-For", []),
            self.settings.proxy_from,
        )
        now = time.monotonic()
        verdict, scope = self.limit.ask(client, now), "client"
        if verdict.is_allowed:
            # Every client's lookups together; one client's own refusals do not count here.
            verdict, scope = self.total.ask("*", now), "total"
        if not verdict.is_allowed:
            if verdict.is_first_refusal:
                wait = verdict.retry_after_s
                log.warning("receipt.rate_limited", scope=scope, client=client, retry_after_s=wait)
            return web.Response(
                status=429,
                text="Too many lookups; try again later.\n",
                headers={"Retry-After": str(verdict.retry_after_s)},
            )
        tail = request.match_info["tail"]
        is_json = tail.endswith(".json")
        reference = tail.removesuffix(".json").upper()
        try:
            found = await self._find(reference)
        except StoreError as exc:
            # Not a 404: the receipt may well exist, and the sender should ask again later.
            log.error("receipt.lookup_failed", error=str(exc), client=client)
            return web.Response(
                status=503,
                text="Receipts cannot be looked up just now; try again later.\n",
                headers={"Retry-After": "60"},
            )
        lang = None
        if found is None:
            response = self._not_found(is_json=is_json)
        else:
            receipt, office = found
            lang = choose_language(
                page_languages(office),
                asked=request.query.get("lang"),
                accept_language=request.headers.get("Accept-Language"),
            )
            response = self._receipt(receipt, office, lang, is_json=is_json)
        log.info(
            "receipt.looked_up",
            reference=reference if REFERENCE_SHAPE.fullmatch(reference) else None,
            found=found is not None,
            format="json" if is_json else "html",
            lang=lang,
            client=client,
        )
        return response

    async def _find(self, reference: str) -> tuple[Receipt, OfficeSettings] | None:
        receipt = await self.reader.read(reference)
        office = None if receipt is None else self.offices.get(receipt.office or "")
        if receipt is None or office is None:
            return None  # postmaster mail, or an office no longer configured
        days = self.settings.max_age_days
        if days and self.clock() - receipt.at > timedelta(days=days):
            return None
        return receipt, office

    def _receipt(
        self, receipt: Receipt, office: OfficeSettings, lang: str, *, is_json: bool
    ) -> web.Response:
        show = self.settings.show_sha256
        href = f"/ref/{receipt.reference}"
        page = receipt_page(receipt, office, lang=lang, href=href, show_sha256=show)
        if is_json:
            fields = receipt_fields(receipt, office, page, show_sha256=show)
            return web.json_response(fields, dumps=_dumps, headers={"Content-Language": lang})
        body = self.page.render(page=page)
        headers = {"Content-Language": lang, "Vary": "Accept-Language"}
        return web.Response(text=body, content_type=_HTML, charset="utf-8", headers=headers)

    def _not_found(self, *, is_json: bool) -> web.Response:
        # One body for every reason a reference has no receipt: none can be told apart.
        if is_json:
            return web.json_response({"error": "not-found"}, status=404)
        return web.Response(status=404, text=self.not_found, content_type=_HTML, charset="utf-8")

    async def stylesheet(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.css, content_type="text/css", charset="utf-8")


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"


@web.middleware
async def _secure(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # aiohttp's own 404 and 405, with our headers too
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


async def start_lookup(settings: GatewaySettings, clock: Clock) -> Endpoint | None:
    """Serve the receipt page on `[lookup] listen`, or None when it is off.

    Raises:
        OSError: the address cannot be bound.
    """
    lookup = settings.lookup
    if lookup.listen is None:
        return None
    reader = _Reader(open_receipts(StoreLocation.from_settings(settings)))
    receipts = _Receipts(lookup, {o.name: o for o in settings.offices}, reader, clock)
    app = web.Application(middlewares=[_secure])
    app.router.add_get("/ref/{tail}", receipts.lookup)
    app.router.add_get("/receipt.css", receipts.stylesheet)
    app.on_cleanup.append(lambda _app: asyncio.to_thread(reader.close))
    # No access log: each lookup is an audit event of its own, with only what it may hold.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, lookup.listen.host, lookup.listen.port).start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return Endpoint(runner, str(host), int(port))
