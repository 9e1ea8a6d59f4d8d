"""`gateway check-config`: the validated settings as an operator wants to see them.

Prints what is in force, the way `postconf -n` does: endpoints, trusted networks, sender
checks, limits, delivery; each office's phases with every boundary in the office's local time
and in UTC, its phase now and the next boundary; and the address table. Reads nothing but the
settings and the moment it is given.
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from gateway.config import GatewaySettings, OfficeSettings
from gateway.policy.decision import phase_at

__all__ = ["print_check"]


def print_check(settings: GatewaySettings, *, now: datetime, out: TextIO) -> None:
    """Write the report of a configuration that has already passed validation."""
    out.write("configuration OK\n\n")
    for key, value in _in_force(settings):
        out.write(f"{key} = {value}\n")
    for office in settings.offices:
        out.write("\n")
        _office(office, out)
        _now(office, now, out)
    out.write("\naddress table\n")
    book = settings.address_book
    rows = [(a, o) for a, o in sorted(book.exact.items())]
    rows += [(f"*@{d}", o) for d, o in sorted(book.whole_domains.items())]
    rows += [(f"postmaster@{d}", "(kept for the operator)") for d in sorted(book.served_domains)]
    width = max(len(a) for a, _ in rows)
    for address, owner in rows:
        out.write(f"  {address:<{width}}  {owner}\n")


def _office(office: OfficeSettings, out: TextIO) -> None:
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


def _in_force(settings: GatewaySettings) -> list[tuple[str, str]]:
    """The settings an operator checks first, as `key = value` lines."""
    server, limits, auth = settings.server, settings.limits, settings.sender_auth
    metrics = settings.metrics.listen
    return [
        ("server.listen", ", ".join(str(a) for a in server.listen)),
        ("server.hostname", server.hostname),
        ("server.starttls", "on" if server.tls_cert else "off"),
        ("server.proxy_protocol", "on" if server.proxy_protocol else "off"),
        ("metrics.listen", str(metrics) if metrics else "off"),
        ("storage.database", str(settings.storage.database)),
        ("audit.log", settings.audit.log),
        ("server.trusted_networks", ", ".join(str(n) for n in server.trusted_networks)),
        (
            "sender_auth",
            f"SPF, DKIM, DMARC for other clients; {auth.timeout:g} s; DNS trouble:"
            f" {auth.on_temperror}"
            if auth.enabled
            else "off (only trusted networks count as authenticated)",
        ),
        ("server.max_message_size", f"{server.max_message_size} bytes"),
        ("server.max_recipients", str(server.max_recipients)),
        ("server.max_connections", str(server.max_connections)),
        (
            "server.timeouts",
            f"idle {server.idle_timeout:g} s, session {server.session_timeout:g} s,"
            f" drain {server.drain_timeout:g} s",
        ),
        (
            "limits.notices_per_hour",
            f"{limits.notices_per_sender} per sender, {limits.notices_per_domain} per domain,"
            f" {limits.notices_per_client} per client, {limits.notices_total} in all",
        ),
        ("limits.dedup_window", f"{limits.dedup_window:g} s"),
        ("delivery.mode", _delivery(settings)),
    ]


def _delivery(settings: GatewaySettings) -> str:
    delivery = settings.delivery
    if delivery.mode == "file":
        return f"file (written into {delivery.outbox_dir}; nothing is sent)"
    if delivery.mode == "smarthost":
        return f"smarthost {delivery.smarthost} (STARTTLS {delivery.starttls})"
    return f"mx (port {delivery.mx_port})"


def _now(office: OfficeSettings, now: datetime, out: TextIO) -> None:
    cycle = office.lifecycle
    out.write(f"  now ({_local(now, office)}): {phase_at(cycle, now)}\n")
    upcoming = [
        (label, at)
        for label, at in (
            ("warn", cycle.portal_opens),
            ("retired", cycle.retires),
            ("decommissioned", cycle.decommissions),
        )
        if at is not None and at > now
    ]
    if upcoming:
        label, at = upcoming[0]
        out.write(f"  next: {label} from {_local(at, office)}\n")
    else:
        out.write("  next: none (no later boundary is set)\n")


def _local(at: datetime, office: OfficeSettings) -> str:
    local = at.astimezone(office.zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
