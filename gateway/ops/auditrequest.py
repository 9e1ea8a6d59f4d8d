"""`gateway audit`'s request: the parsed command line and how its options are read.

The time zones that --since/--until are read in and rows are shown in, the store filters the
options make, the usage errors and exit statuses every audit action shares, and the two file
helpers the actions share (reading the log's lines, writing an output file whole). Nothing
here queries the store or formats an answer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.audit.verify import LogLine, read_lines
from gateway.config import GatewaySettings
from gateway.store.records import Filters, parse_bound

__all__ = [
    "ACTIONS",
    "EXIT_FOUND_PROBLEMS",
    "EXIT_OK",
    "EXIT_USAGE",
    "AuditRequest",
    "UsageError",
    "Zones",
    "attempt_filters",
    "log_lines",
    "write_atomically",
]

EXIT_OK, EXIT_FOUND_PROBLEMS, EXIT_USAGE = 0, 1, 2
ACTIONS = ("list", "show", "notice", "summary", "report", "senders", "verify")


class UsageError(Exception):
    """The request cannot be answered as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """One `gateway audit` command line, parsed."""

    action: str = "list"
    targets: tuple[str, ...] = ()  # show: the reference; verify: log files
    since: str | None = None
    until: str | None = None
    tz: str = "UTC"  # "UTC", "office" (each office's own zone) or an IANA name
    sender: str | None = None
    sender_domain: str | None = None
    address: str | None = None
    office: str | None = None
    decision: str | None = None
    notice: str | None = None
    message_id: str | None = None
    reference: str | None = None
    output: str = "table"
    out_file: Path | None = None
    logs: tuple[Path, ...] = ()
    unredacted: bool = False
    use_store: bool = True
    job: int | None = None  # notice: which of the reference's notices, when it has several
    notice_file: Path | None = None  # notice: where to write it (None: out_bytes)


@dataclass(frozen=True, slots=True)
class Zones:
    """How times are read from the command line and shown: one zone, or each office's."""

    bounds: tzinfo  # for --since/--until without an offset
    by_office: dict[str, tzinfo] = field(default_factory=dict)  # per office; else `bounds`
    label: str = "UTC"

    @classmethod
    def build(cls, settings: GatewaySettings, request: AuditRequest) -> Zones:
        if request.tz.lower() != "office":
            return cls(_zone(request.tz), label=request.tz)
        offices = {o.name: o.zone for o in settings.offices}
        chosen = request.office or (settings.offices[0].name if len(offices) == 1 else None)
        if chosen is None:
            # Each office's rows are shown in its own zone; the bounds need one zone.
            if request.since or request.until:
                raise UsageError("--tz office with --since/--until needs --office NAME")
            return cls(UTC, dict(offices), "each office's zone")
        if chosen not in offices:
            raise UsageError(f"--tz office: no office {chosen!r} in the configuration")
        return cls(offices[chosen], dict(offices), str(offices[chosen]))

    def of(self, office: str | None) -> tzinfo:
        return self.by_office.get(office or "", self.bounds)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(
            f"--tz: unknown time zone {name!r} (UTC, office, or an IANA name)"
        ) from exc


def attempt_filters(request: AuditRequest, zones: Zones) -> Filters:
    """The store filters the command line's options ask for, bounds read in `zones`."""
    return Filters(
        since=_bound("--since", request.since, zones.bounds, is_end=False),
        until=_bound("--until", request.until, zones.bounds, is_end=True),
        sender=request.sender,
        sender_domain=request.sender_domain,
        address=request.address,
        office=request.office,
        decision=request.decision,
        notice=request.notice,
        message_id=request.message_id,
        reference=request.reference,
    )


def _bound(option: str, text: str | None, zone: tzinfo, *, is_end: bool) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_bound(text, zone, is_end=is_end)
    except ValueError as exc:
        raise UsageError(
            f"{option}: {text!r} is not a date (2017-09-13) or date-time (2017-09-13T10:00)"
        ) from exc


def log_lines(files: Sequence[Path]) -> Iterator[LogLine]:
    for path in files:
        yield from read_lines(path)


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write the whole file or nothing: a report or notice half written would mislead."""
    handle, temporary = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
