"""The audit log's lines about one attempt, as `gateway audit show` lists them.

Reads the lines that search.py finds in the files spans.py chose, and keeps those naming a
reference or its SMTP session. The store's record of the attempt is records.py's; this module
reads only the log, and never writes, verifies or formats it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit.spans import StoryFiles
from gateway.audit.verify import LogLine

__all__ = ["LoggedEvent", "Reading", "has_arrival", "logged_events"]


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


# Reads the lines of these files that hold any of these byte strings (search.lines_holding).
Reading = Callable[[Sequence[Path], Sequence[bytes]], Iterable[LogLine]]


def logged_events(read: Reading, reference: str, files: StoryFiles) -> list[LoggedEvent]:
    """The log lines naming `reference`, and the opening and closing of its SMTP session, in
    the order of the files and their lines.

    Two passes: the files that can name the reference (`files.mentions`), then, for the
    session's own events, the files that cover its arrival (`files.session`).
    """
    needle = reference.encode()
    found = [(line, e) for line in read(files.mentions, [needle]) if (e := _event(line))]
    mentions = [e for _, e in found]
    sessions = {str(v) for e in mentions for k, v in e.fields if k == "session_id"}
    if not sessions:
        return mentions
    own = [
        (line, e)
        for line in read(files.session, [s.encode() for s in sessions])
        if needle not in line.raw  # already found
        and (e := _event(line)) is not None
        and e.event.startswith("smtp.session")
    ]
    rank = {str(path): index for index, path in enumerate(files.mentions)}
    ordered = sorted(found + own, key=lambda pair: (rank.get(pair[0].source, 0), pair[0].number))
    return [e for _, e in ordered]


# What the SMTP session logs, naming the reference, as the attempt's record is written.
_ARRIVAL_EVENTS = frozenset({"smtp.message.received", "smtp.recipient.refused", "smtp.reply.sent"})


def has_arrival(events: Iterable[LoggedEvent], arrival: datetime, *, within: timedelta) -> bool:
    """Whether a line of the attempt's arrival is among `events`, within `within` of the
    store's `arrival`: the log's clock then agrees with the store's (no `serve --as-of`)."""
    for event in events:
        if event.event in _ARRIVAL_EVENTS:
            try:
                logged = datetime.fromisoformat(event.timestamp)
            except ValueError:
                continue
            if logged.tzinfo is not None and abs(logged - arrival) <= within:
                return True
    return False


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
