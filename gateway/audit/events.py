"""The audit log's lines about one attempt, as `gateway audit show` lists them.

Reads lines that verify.py hands over and keeps those naming a reference or its SMTP
session. The store's record of the attempt is records.py's; this module reads only the log,
and never writes, verifies or formats it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.audit.verify import LogLine

__all__ = ["LoggedEvent", "logged_events"]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One audit log line about an attempt."""

    where: str  # file:line
    seq: int | None
    timestamp: str
    event: str
    fields: tuple[tuple[str, Any], ...]  # the other keys, in the line's order


# Keys every line has, shown apart from the event's own.
_LINE_KEYS = frozenset({"timestamp", "level", "event", "chain", "seq", "prev"})


def logged_events(lines: Callable[[], Iterable[LogLine]], reference: str) -> list[LoggedEvent]:
    """The log lines naming `reference`, and the opening and closing of its SMTP session.

    `lines` is called twice (two passes over the files): once to find the reference and its
    session, once for the session's own events.
    """
    needle = reference.encode()
    mentions = [e for e in (_event(line) for line in lines() if needle in line.raw) if e]
    sessions = {str(v) for e in mentions for k, v in e.fields if k == "session_id"}
    if not sessions:
        return mentions
    found: list[LoggedEvent] = []
    keys = [s.encode() for s in sessions]
    for line in lines():
        if needle in line.raw or any(k in line.raw for k in keys):
            event = _event(line)
            if event is not None and (needle in line.raw or event.event.startswith("smtp.session")):
                found.append(event)
    return found


def _event(line: LogLine) -> LoggedEvent | None:
    try:
        record = json.loads(line.raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return None
    seq = record.get("seq")
    return LoggedEvent(
        where=line.where,
        seq=seq if isinstance(seq, int) else None,
        timestamp=str(record.get("timestamp", "")),
        event=record["event"],
        fields=tuple((k, v) for k, v in record.items() if k not in _LINE_KEYS),
    )
