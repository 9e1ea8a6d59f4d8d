"""`gateway check-config`: the validated settings as an operator wants to see them.

Prints what is in force the way `postconf -n` does, one `section.key = value` line each
(endpoints, trusted networks, sender checks, limits, delivery), then each office's phases with
every boundary in the office's local time and in UTC, the phase it is in now and the next
boundary, and the address table. Reads nothing but the settings and the moment it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TextIO

from pydantic import BaseModel

from gateway.config import GatewaySettings, OfficeSettings
from gateway.policy.decision import Phase, phase_at
from gateway.smtp.eventloop import loop_name
from gateway.store.backend import masked

__all__ = ["print_check", "settings_in_force"]

# The [server] keys that bound what one client may do; the rest of [server] is endpoints
# and trust, shown under their own headings.
_SERVER_LIMITS = (
    "max_message_size",
    "max_recipients",
    "max_connections",
    "max_commands",
    "idle_timeout",
    "session_timeout",
    "drain_timeout",
)
_DELIVERY_KEYS = (
    "mode",
    "outbox_dir",
    "smarthost",
    "starttls",
    "ca_file",
    "username",
    "mx_port",
    "mx_internal_addresses",
    "composer_processes",
    "concurrency",
    "per_domain_concurrency",
    "connect_timeout",
    "command_timeout",
    "retry_schedule",
    "retry_jitter",
    "max_age",
    "lease",
    "poll_interval",
)


def print_check(settings: GatewaySettings, *, now: datetime, out: TextIO) -> None:
    """Write the report of a configuration that has already passed validation, as of `now`."""
    out.write(f"configuration OK (as of {now:%Y-%m-%d %H:%M:%S} UTC)\n")
    for heading, lines in settings_in_force(settings):
        out.write(f"\n# {heading}\n")
        out.writelines(f"{line}\n" for line in lines)
    for office in settings.offices:
        out.write("\n")
        _office(office, now=now, out=out)
    out.write("\naddress table\n")
    _address_table(settings, out)


def _loop(choice: str) -> str:
    """`choice`, and the loop it means when that is not the same word ("auto (asyncio)")."""
    name = loop_name(choice)
    return choice if choice == name else f"{choice} ({name})"


def settings_in_force(settings: GatewaySettings) -> list[tuple[str, list[str]]]:
    """The settings in force under their headings, each line `section.key = value`."""
    server, notices = settings.server, settings.notices
    return [
        (
            "endpoints",
            [
                *_keys("server", server, ("listen", "workers")),
                f"server.event_loop = {_loop(server.event_loop)}",
                *_keys("server", server, ("hostname", "tls_cert", "tls_key")),
                f"server.starttls = {'offered' if server.tls_cert else 'off'}",
                *_keys("metrics", settings.metrics, ("listen",)),
                *_keys("storage", settings.storage, ("state_dir",)),
                *_store_lines(settings),
                *_keys("audit", settings.audit, ("log", "format")),
            ],
        ),
        (
            "trusted networks",
            list(_keys("server", server, ("trusted_networks", "proxy_protocol", "proxy_from"))),
        ),
        (
            "sender checks",
            [
                *_keys("sender_auth", settings.sender_auth, _fields(settings.sender_auth)),
                *_keys("dns", settings.dns, _fields(settings.dns)),
            ],
        ),
        (
            "limits",
            [
                *_keys("server", server, _SERVER_LIMITS),
                *_keys("limits", settings.limits, _fields(settings.limits)),
            ],
        ),
        ("delivery", list(_keys("delivery", settings.delivery, _DELIVERY_KEYS))),
        (
            "notices",
            list(_keys("notices", notices, ("from_address", "dkim_selector", "dkim_domain"))),
        ),
        ("receipt page", list(_keys("lookup", settings.lookup, _fields(settings.lookup)))),
        ("console", list(_keys("console", settings.console, _fields(settings.console)))),
    ]


def _store_lines(settings: GatewaySettings) -> list[str]:
    storage = settings.storage
    if not storage.is_shared:
        return [f"storage.database = {storage.database}", f"server.node = {settings.server.node}"]
    password = "(set)" if storage.password is not None else "(from the URL or libpq)"
    return [
        f"storage.url = {masked(storage.url)}",
        f"storage.password = {password}",
        f"server.node = {settings.server.node}",
    ]


def _fields(model: BaseModel) -> tuple[str, ...]:
    return tuple(type(model).model_fields)


def _keys(section: str, model: BaseModel, names: Iterable[str]) -> Iterator[str]:
    for name in names:
        yield f"{section}.{name} = {_shown(getattr(model, name))}"


def _shown(value: object) -> str:
    """A value as an operator writes it: lists comma-separated, whole seconds without .0."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) or "(none)"
    return str(value)


def _office(office: OfficeSettings, *, now: datetime, out: TextIO) -> None:
    cycle = office.lifecycle
    out.write(f"office {office.name}: {office.title}\n")
    out.write(f"  time zone {office.timezone}, response after cutoff: {office.response}\n")
    out.write(f"  portal {office.portal_url}\n")
    if office.legacy_host is None:
        out.write(
            "  warning: no legacy_host; mail before the cutoff is queued but cannot be relayed\n"
        )
    phases = [
        ("warn (portal open)", cycle.portal_opens),
        ("retired (cutoff)", cycle.retires),
        ("decommissioned", cycle.decommissions),
    ]
    out.write("  active from the beginning\n")
    for label, start in phases:
        if start is not None:
            out.write(
                f"  {label:<20} from {_local(start, office)}  = {start:%Y-%m-%d %H:%M:%S} UTC\n"
            )
    out.write(f"  phase now: {phase_at(cycle, now)}\n")
    out.write(f"  next boundary: {_next_boundary(office, now)}\n")


def _next_boundary(office: OfficeSettings, now: datetime) -> str:
    cycle = office.lifecycle
    boundaries = [
        (Phase.WARN, cycle.portal_opens),
        (Phase.RETIRED, cycle.retires),
        (Phase.DECOMMISSIONED, cycle.decommissions),
    ]
    for phase, start in boundaries:
        if start is not None and start > now:
            return f"{phase} from {_local(start, office)}"
    return "none (no later phase is configured)"


def _address_table(settings: GatewaySettings, out: TextIO) -> None:
    book = settings.address_book
    rows = [(a, o) for a, o in sorted(book.exact.items())]
    rows += [(f"*@{d}", o) for d, o in sorted(book.whole_domains.items())]
    rows += [(f"postmaster@{d}", "(kept for the operator)") for d in sorted(book.served_domains)]
    width = max(len(a) for a, _ in rows)
    for address, owner in rows:
        out.write(f"  {address:<{width}}  {owner}\n")


def _local(at: datetime, office: OfficeSettings) -> str:
    local = at.astimezone(office.zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
