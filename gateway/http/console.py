"""The operator console: `[console] listen` serves read-only pages for records officers.

The same questions as `gateway audit`, from the same code: attempts with audit's filters
(a page at a time by keyset, store/browse.py), one attempt's story as `audit show` tells it
with the notices as sent, the daily summary with its chart, the senders, and the queue; each
list also as CSV or JSON lines (`.csv`, `.json`), written by audit's own writers. Everything
needs a user: HTTP basic against `[console] users_file`, or the name a trusted proxy passes.
Every view is an audit event with the user. GET and HEAD only: nothing here changes anything.
Store reads run in a thread on a read-only connection of their own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.clock import Clock
from gateway.config import ConsoleSettings, GatewaySettings
from gateway.http.consoleauth import USER, Users, basic_credentials, proxy_user
from gateway.http.consoleviews import Views
from gateway.http.health import Endpoint
from gateway.http.lookup import SECURITY_HEADERS, page_templates

__all__ = ["console_tls", "start_console"]

log = structlog.get_logger()

_SHUTDOWN_S = 1.0
_REALM = 'Basic realm="eservice-gateway console", charset="UTF-8"'
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Pages of the console are the user's: never kept by a cache, never framed, never sent on.
_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store, private"}


class _Gate:
    """Who is asking: the middleware that answers 401 and 405 before any view runs."""

    def __init__(self, console: ConsoleSettings) -> None:
        self.console = console
        self.users = None if console.users_file is None else Users(console.users_file)

    async def user(self, request: web.Request) -> tuple[str | None, str]:
        """The user, or None and why not."""
        console = self.console
        if console.user_header is not None:
            named = proxy_user(
                request.remote, request.headers.get(console.user_header), console.trusted_proxies
            )
            if named is not None:
                return named, ""
        credentials = basic_credentials(request.headers.get("Authorization"))
        if self.users is None or credentials is None:
            return None, "missing"
        name, password = credentials
        is_right = await asyncio.to_thread(self.users.check, name, password)
        return (name, "") if is_right else (None, "wrong")

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            response = await self._answer(request, handler)
        except web.HTTPException as exc:
            exc.headers.update(_HEADERS)
            raise
        response.headers.update(_HEADERS)
        return response

    async def _answer(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path == "/console.css":
            return await handler(request)  # the stylesheet holds nothing of the record
        try:
            user, reason = await self.user(request)
        except (OSError, ValueError) as exc:
            log.error("console.denied", reason=f"users-file: {exc}", client=request.remote)
            return web.Response(status=503, text="The console's users file cannot be read.\n")
        if user is None:
            log.warning("console.denied", reason=reason, client=request.remote)
            return web.Response(
                status=401,
                text="Authentication required.\n",
                headers={"WWW-Authenticate": _REALM},
            )
        if request.method not in ("GET", "HEAD"):
            return web.Response(
                status=405, text="The console is read-only.\n", headers={"Allow": "GET, HEAD"}
            )
        request[USER] = user
        return await handler(request)


def console_tls(console: ConsoleSettings) -> ssl.SSLContext | None:
    """The console's server context, or None without a certificate.

    Raises:
        OSError, ssl.SSLError: the certificate or key cannot be loaded.
    """
    if console.tls_cert is None or console.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(console.tls_cert, console.tls_key)
    return context


async def start_console(settings: GatewaySettings, clock: Clock) -> Endpoint | None:
    """Serve the console on `[console] listen`, or None when it is off.

    Raises:
        OSError: the address cannot be bound, or the certificate cannot be read.
        ssl.SSLError: the certificate or key is not one.
    """
    console = settings.console
    if console.listen is None:
        return None
    tls = console_tls(console)
    gate = _Gate(console)
    views = Views(settings, clock, page_templates())
    app = web.Application(middlewares=[gate.middleware])
    views.route(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, console.listen.host, console.listen.port, ssl_context=tls).start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return Endpoint(runner, str(host), int(port))
