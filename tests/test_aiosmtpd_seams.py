"""The aiosmtpd internals gateway/smtp/server.py overrides are still there, as checked.

GatewaySMTP overrides methods aiosmtpd does not promise to keep (issue 10, item 5). The
dependency is held to the minor series they were checked against; these tests fail first when
an upgrade within it, or a loosened pin, moves one of them. What each override does is tested
through the server itself (test_smtpserver.py compares our _getaddr with aiosmtpd's). SMTP's
__init__ is not called: gateway/smtp/setup.py does its work with the command tables found once
per class, and the tests below check it leaves every attribute as aiosmtpd's own would.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import ssl
import weakref
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from packaging.requirements import Requirement
from packaging.version import Version

from gateway.smtp.handler import InboundHandler
from gateway.smtp.receiving import ReceiveSettings
from gateway.smtp.server import GatewaySMTP, Sessions
from gateway.store.db import Store
from tests.conftest import AFTER_CUTOFF, FakeClock, Gateway, make_settings
from tests.smtpclient import RawClient

# The series the overrides were read against (pyproject.toml says why).
CHECKED_SERIES = "1.4"

# Name -> the parameters aiosmtpd's own method takes; ours must take the same ones.
OVERRIDDEN = {
    "_getaddr": ["self", "arg"],
    "_timeout_cb": ["self"],
    "_handle_client": ["self"],
    # These two are the documented way to supply our Session and Envelope (aiosmtpd's
    # smtp.rst: "a method subclasses can override"), underscore notwithstanding.
    "_create_session": ["self"],
    "_create_envelope": ["self"],
}


def aiosmtpd_requirement() -> Requirement:
    (line,) = (r for r in requires("eservice-gateway") or [] if r.startswith("aiosmtpd"))
    return Requirement(line)


def test_the_pin_admits_only_the_series_the_overrides_were_checked_against() -> None:
    specifier = aiosmtpd_requirement().specifier
    assert specifier.contains("1.4.6")
    assert not specifier.contains("1.5.0")
    assert not specifier.contains("1.4.5")


def test_the_installed_aiosmtpd_is_of_the_checked_series() -> None:
    installed = Version(version("aiosmtpd"))
    assert f"{installed.major}.{installed.minor}" == CHECKED_SERIES


@pytest.mark.parametrize(("name", "parameters"), OVERRIDDEN.items())
def test_each_overridden_internal_exists_upstream_with_the_same_parameters(
    name: str, parameters: list[str]
) -> None:
    upstream = getattr(SMTP, name)
    ours = getattr(GatewaySMTP, name)
    assert ours is not upstream, f"GatewaySMTP no longer overrides {name}"
    assert list(inspect.signature(upstream).parameters) == parameters
    assert list(inspect.signature(ours).parameters) == parameters
    assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(upstream)


def test_the_reply_hook_the_enhanced_codes_ride_on_is_a_coroutine_taking_a_status() -> None:
    # Enhanced codes on aiosmtpd's own reply texts are added in push(), its public method for
    # "subclasses and handlers" to send statuses: no reply text of aiosmtpd's is patched.
    assert inspect.iscoroutinefunction(SMTP.push)
    assert list(inspect.signature(SMTP.push).parameters) == ["self", "status"]


# -- set_up() does what SMTP.__init__ does (gateway/smtp/setup.py) ----------------------------

# What GatewaySMTP itself adds to the protocol's attributes.
OURS = {"_handler", "_sessions", "_audit", "_trust", "_session_limit", "_deadline", "_drain_close"}


def _comparable(value: object, owner: object) -> object:
    """A value with what is per instance (the reader, futures, bound methods) made nameable."""
    if inspect.ismethod(value):
        return ("method", value.__func__, "self" if value.__self__ is owner else value.__self__)
    if isinstance(value, dict):
        return [(k, _comparable(v, owner)) for k, v in value.items()]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # aiosmtpd's _AuthMechAttr
        return (type(value).__name__, *(_comparable(v, owner) for v in value))
    if isinstance(value, asyncio.StreamReader):
        return ("StreamReader", value._limit)  # type: ignore[attr-defined]  # its only record
    if isinstance(value, weakref.ref):
        return ("weakref", type(value()).__name__)
    if isinstance(value, asyncio.Future | collections.deque):
        return type(value).__name__
    return value


def _attributes(protocol: SMTP) -> dict[str, object]:
    return {k: _comparable(v, protocol) for k, v in vars(protocol).items()}


@pytest.mark.parametrize("proxy_protocol", [False, True])
@pytest.mark.parametrize("with_tls", [False, True])
async def test_set_up_leaves_each_attribute_as_aiosmtpds_own_init_does(
    tmp_path: Path, *, proxy_protocol: bool, with_tls: bool
) -> None:
    settings = make_settings(tmp_path, server={"proxy_protocol": proxy_protocol})
    handler = InboundHandler(
        ReceiveSettings.from_settings(settings),
        Store(settings.storage.database),
        FakeClock(AFTER_CUTOFF),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) if with_tls else None
    ours = GatewaySMTP(handler, Sessions(limit=10), settings.server, context)
    # The reference: the same object, set up by aiosmtpd's __init__ with what server.py
    # passed it before set_up() took its place.
    reference = GatewaySMTP.__new__(GatewaySMTP)
    server = settings.server
    SMTP.__init__(
        reference,
        handler,
        hostname=server.hostname,
        ident="ESMTP",
        data_size_limit=server.max_message_size,
        enable_SMTPUTF8=True,
        decode_data=False,
        tls_context=context,
        timeout=server.idle_timeout,
        command_call_limit=server.max_commands,
        proxy_protocol_timeout=10.0 if proxy_protocol else None,
        auth_require_tls=True,
    )
    expected = _attributes(reference)
    # The one difference, on purpose: the stream's limit (server.py _STREAM_LIMIT).
    assert expected["_strong_reader"] == ("StreamReader", SMTP.line_length_limit)
    expected["_strong_reader"] = ("StreamReader", 64 * 1024)
    got = _attributes(ours)
    assert set(got) == set(expected) | OURS
    assert {k: got[k] for k in expected} == expected


async def test_help_lists_the_transaction_commands_and_their_syntax(gateway: Gateway) -> None:
    # HELP lists the commands that carry aiosmtpd's @syntax (the cached tables, setup.py,
    # find them as aiosmtpd's own did); our MAIL, RCPT and DATA overrides carry it again,
    # with aiosmtpd's words. AUTH is not offered on an MX, so it is not listed.
    commands = ("HELP", "HELP MAIL", "EHLO client.example", "HELP RCPT", "HELP DATA", "HELP AUTH")
    async with await RawClient.connect(gateway.port) as client:
        await client.reply()
        replies = [(await client.cmd(c)).last for c in commands]
    listed = "Supported commands: DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"
    assert replies == [
        f"250 2.0.0 {listed}",
        "250 2.0.0 Syntax: MAIL FROM: <address>",
        "250 ENHANCEDSTATUSCODES",
        "250 2.0.0 Syntax: RCPT TO: <address> [SP <mail-parameters>]",  # extended after EHLO
        "250 2.0.0 Syntax: DATA",
        f"501 5.5.4 {listed}",
    ]


@pytest.mark.parametrize("length", [600, 1001, 1002, 5000, 64 * 1024, 200 * 1024])
async def test_a_command_line_too_long_is_refused_whichever_limit_catches_it(
    gateway: Gateway, length: int
) -> None:
    # Up to the stream's limit aiosmtpd's command_size_limit refuses the line; past it, its
    # LimitOverrunError path: the same 500 either way, and the session goes on.
    async with await RawClient.connect(gateway.port) as client:
        await client.reply()
        await client.cmd("EHLO client.example")
        too_long = await client.cmd("NOOP " + "x" * length)
        after = await client.cmd("NOOP")
    assert too_long.last == "500 5.5.2 Command line too long"
    assert after.last == "250 2.0.0 OK"
