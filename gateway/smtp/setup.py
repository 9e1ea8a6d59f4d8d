"""aiosmtpd's per-connection set-up, its command and hook tables built once per class.

`SMTP.__init__` (aiosmtpd 1.4) finds the protocol's `smtp_*` and `auth_*` methods and the
handler's `handle_*` hooks with `inspect.getmembers` and `dir()` on every connection, checks
the EHLO hook's signature, logs the AUTH mechanisms and, to find the event loop, enters
`warnings.catch_warnings()`: about 300 µs a connection, a quarter of a one-message session.
Which names are in those tables depends only on the classes, so they are found once per class
pair; each connection binds them to itself. `set_up()` sets every attribute `SMTP.__init__`
would for the arguments server.py passes (tests/test_aiosmtpd_seams.py compares the two
attribute by attribute, and the HELP and EHLO output); it must not decide anything. Left out
are aiosmtpd's per-connection log lines: the AUTH mechanisms (we offer none, handler.py) and
warnings about a TLS context's verification mode or a PROXY timeout under 3 s, neither of
which server.py ever passes.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, _AuthMechAttr, login_always_fail

__all__ = ["set_up"]

_EHLO_HOOK = "handle_EHLO"


@dataclass(frozen=True, slots=True)
class _Names:
    """The method names aiosmtpd's tables hold, as found on the classes."""

    commands: tuple[str, ...]  # smtp_* of the protocol, in dir() order
    protocol_auth: tuple[tuple[str, str], ...]  # (mechanism, auth_* name) of the protocol
    handler_auth: tuple[tuple[str, str], ...]  # the same of the handler
    hooks: tuple[str, ...]  # handle_* of the handler
    ehlo_hook_version: str | None  # aiosmtpd's "old" (4 parameters) or "new" (5) hook


# What _find_names() found, per (protocol class, handler class): facts about classes, which
# never change once the classes exist, so a memo rather than state.
_FOUND: dict[tuple[type[object], type[object]], _Names] = {}


def _names(protocol_class: type[object], handler_class: type[object]) -> _Names:
    key = (protocol_class, handler_class)
    if key not in _FOUND:
        _FOUND[key] = _find_names(protocol_class, handler_class)
    return _FOUND[key]


def _find_names(protocol_class: type[object], handler_class: type[object]) -> _Names:
    hooks = tuple(m for m in dir(handler_class) if m.startswith("handle_"))
    return _Names(
        commands=tuple(m for m in dir(protocol_class) if m.startswith("smtp_")),
        protocol_auth=_auth_names(protocol_class),
        handler_auth=_auth_names(handler_class),
        hooks=hooks,
        ehlo_hook_version=_ehlo_hook_version(handler_class) if _EHLO_HOOK in hooks else None,
    )


def _auth_names(cls: type[object]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            getattr(
                member, "__auth_mechanism_name__", name.replace("auth_", "").replace("__", "-")
            ),
            name,
        )
        for name, member in inspect.getmembers(cls)
        if name.startswith("auth_")
    )


def _ehlo_hook_version(handler_class: type[object]) -> str:
    # Bound, the hook has one parameter fewer than the function on the class (self).
    parameters = len(inspect.signature(getattr(handler_class, _EHLO_HOOK)).parameters) - 1
    if parameters not in (4, 5):
        raise RuntimeError("Unsupported EHLO Hook")  # aiosmtpd's own words
    return "old" if parameters == 4 else "new"


def set_up(
    protocol: SMTP,
    handler: Any,
    *,
    hostname: str,
    ident: str,
    data_size_limit: int,
    tls_context: ssl.SSLContext | None,
    timeout: float,
    command_call_limit: int,
    proxy_protocol_timeout: float | None,
    stream_limit: int,
) -> None:
    """What `SMTP.__init__` does with these arguments, `enable_SMTPUTF8=True`,
    `decode_data=False`, `auth_require_tls=True` and no AUTH callback, on a running loop;
    but the stream's limit is `stream_limit` where aiosmtpd takes `line_length_limit`."""
    loop = asyncio.get_running_loop()
    protocol.__ident__ = ident
    protocol.loop = loop
    reader = asyncio.StreamReader(loop=loop, limit=stream_limit)
    asyncio.StreamReaderProtocol.__init__(
        protocol, reader, client_connected_cb=protocol._cb_client_connected, loop=loop
    )
    protocol.event_handler = handler
    protocol.data_size_limit = data_size_limit
    protocol.enable_SMTPUTF8 = True
    protocol._decode_data = False
    protocol.command_size_limits.clear()  # aiosmtpd's class-level table, reset per session
    protocol.hostname = hostname
    protocol.tls_context = tls_context
    protocol.require_starttls = tls_context and False
    _set_state(protocol, timeout=timeout, proxy_protocol_timeout=proxy_protocol_timeout)
    _set_tables(protocol, handler)
    protocol._enforce_call_limit = True
    protocol._call_limit_base = {}
    protocol._call_limit_default = command_call_limit


def _set_state(protocol: SMTP, *, timeout: float, proxy_protocol_timeout: float | None) -> None:
    protocol._timeout_duration = timeout
    protocol._timeout_handle = None
    protocol._tls_handshake_okay = True
    protocol._tls_protocol = None
    protocol._original_transport = None
    protocol.session = None
    protocol.envelope = None
    protocol.transport = None
    protocol._handler_coroutine = None
    protocol._auth_require_tls = True
    if proxy_protocol_timeout is not None and proxy_protocol_timeout <= 0:
        raise ValueError("proxy_protocol_timeout must be > 0")
    protocol._proxy_timeout = proxy_protocol_timeout
    protocol._authenticator = None
    protocol._auth_callback = login_always_fail
    protocol._auth_required = False


def _set_tables(protocol: SMTP, handler: Any) -> None:
    names = _names(type(protocol), type(handler))
    protocol._auth_methods = {
        mechanism: _AuthMechAttr(getattr(owner, name), owner is protocol)
        for owner, found in ((protocol, names.protocol_auth), (handler, names.handler_auth))
        for mechanism, name in found
    }
    protocol._handle_hooks = {m.replace("handle_", ""): getattr(handler, m) for m in names.hooks}
    protocol._ehlo_hook_ver = names.ehlo_hook_version
    protocol._smtp_methods = {m.replace("smtp_", ""): getattr(protocol, m) for m in names.commands}
