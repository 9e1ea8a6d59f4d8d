"""`gateway check-config`: the validated settings as an operator wants to see them.

Prints each office's phases with every boundary in the office's local time and in UTC, and
the address table. Reads nothing but the settings it is given.
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from gateway.config import GatewaySettings, OfficeSettings

__all__ = ["print_check"]


def print_check(settings: GatewaySettings, *, out: TextIO) -> None:
    """Write the report of a configuration that has already passed validation."""
    server = settings.server
    out.write("configuration OK\n")
    out.write(f"listen: {', '.join(str(a) for a in server.listen)}  hostname: {server.hostname}\n")
    out.write(f"state: {settings.storage.database}  audit log: {settings.audit.log}\n")
    out.write(
        f"STARTTLS: {'on' if server.tls_cert else 'off'}  delivery: {settings.delivery.mode}\n"
    )
    for office in settings.offices:
        out.write("\n")
        _office(office, out)
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


def _local(at: datetime, office: OfficeSettings) -> str:
    local = at.astimezone(office.zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
