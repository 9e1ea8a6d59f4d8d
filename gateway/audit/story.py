"""The story of one attempt as `gateway audit show` prints it, for a person to read.

Arrival, client and message facts, the checks, each recipient's decision and the reply, each
delivery attempt, a timeline in one zone, and the audit log's lines about it. Only text is
made here: store/story.py gathers the story, events.py the log lines, ops/auditevidence.py
decides what to show and where.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import TextIO

from gateway.audit.events import LoggedEvent
from gateway.audit.spans import StoryFiles
from gateway.store.outbox import Job
from gateway.store.records import AttemptRecord, Kind
from gateway.store.sentmail import SentNotice, should_keep
from gateway.store.story import Story
from gateway.vocabulary import JobState, NoticeStatus

__all__ = ["when", "write_events", "write_story"]


def when(at: datetime, zone: tzinfo) -> str:
    """A moment as the audit commands show it: to the second, with its offset."""
    return at.astimezone(zone).isoformat(sep=" ", timespec="seconds")


def _write_fields(fields: Sequence[tuple[str, str | None]], out: TextIO) -> None:
    for name, value in fields:
        if value is not None:
            out.write(f"  {name:<15} {value}\n")


def _notice_text(status: NoticeStatus) -> str:
    return status.kind if status.reason is None else f"{status.kind}: {status.reason}"


def write_story(story: Story, zone: tzinfo, out: TextIO) -> None:
    """The store's account of one attempt, its times in `zone`."""
    a = story.attempt
    what = "message received to the end of DATA" if _is_message(a) else "refused at RCPT"
    out.write(f"attempt {a.reference}: {what}, {a.decision}\n")
    _write_fields(_story_fields(story, zone), out)
    out.write("checks\n")
    _write_fields(
        [
            ("sender", story.auth),
            ("notice", _notice_text(a.notice)),
            ("duplicate of", story.duplicate_of),
        ],
        out,
    )
    out.write("decision\n")
    for recipient, office, phase, action, reason, at in _decisions(story):
        decided = f"  (decided {when(at, zone)})" if at else ""
        out.write(f"  <{recipient}>  office {office}, phase {phase}, {action}: {reason}{decided}\n")
    refused_for = a.reason if a.reason in _MESSAGE_PROBLEMS else None
    _write_fields([("answer", a.reply), ("refused for", refused_for)], out)
    _write_deliveries(story, zone, out)
    out.write(f"timeline ({zone})\n")
    for at, what_happened in _timeline(story):
        out.write(f"  {when(at, zone)}  {what_happened}\n")


# What about a message itself refused it (inbound.py); its record keeps only the header block
# of an oversize message.
_MESSAGE_PROBLEMS = frozenset({"message-too-big", "line-too-long"})


def _is_message(attempt: AttemptRecord) -> bool:
    return attempt.kind is Kind.MESSAGE


def _story_fields(story: Story, zone: tzinfo) -> list[tuple[str, str | None]]:
    a = story.attempt
    is_message = _is_message(a)
    client = a.peer_ip + (f" port {story.peer_port}" if story.peer_port else "")
    client += f", HELO {a.helo or '-'}" + (f", {story.tls}" if story.tls else "")
    attachments = "; ".join(
        f"{x.filename} ({x.content_type}, {x.size:,} bytes)" for x in story.attachments
    )
    kept = "kept in the store" if story.raw_kept else "not kept"
    return [
        ("arrived" if is_message else "refused at", f"{when(a.at, zone)}  ({_utc(a.at)})"),
        ("node", a.node),  # on a shared store: the MX host that took it
        ("client", client),
        ("session", a.session_id),
        ("envelope from", f"<{a.sender}>"),
        ("envelope to", ", ".join(f"<{r}>" for r in a.recipients)),
        ("message-id", a.message_id if is_message else None),
        ("from header", story.from_header),
        ("date header", f"{story.date_header} (as sent)" if story.date_header else None),
        ("subject", a.subject if is_message else None),
        ("size", f"{a.size:,} bytes" if a.size is not None else None),
        ("sha-256", a.sha256),
        ("attachments", attachments or None),
        ("a-numbers", ", ".join(a.a_numbers) or None),
        ("raw message", kept if is_message else None),
    ]


def _decisions(
    story: Story,
) -> list[tuple[str, str, str, str, str, datetime | None]]:
    """(recipient, office, phase, action, reason, decided at) for each recipient."""
    a = story.attempt
    if not story.recipients:  # a refusal at RCPT: one recipient, decided as it was refused
        return [(a.recipients[0], a.office or "-", a.phase or "-", a.action, a.reason, None)]
    return [
        (d.recipient, d.office or "-", d.phase or "-", d.action, d.reason, d.decided_at)
        for d in story.recipients
    ]


def _write_deliveries(story: Story, zone: tzinfo, out: TextIO) -> None:
    if story.jobs:
        out.write("deliveries\n")
    sent = {kept.job_id: kept for kept in story.sent}
    for job, attempts in story.jobs:
        to = ", ".join(f"<{r}>" for r in job.recipients)
        tries = f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
        out.write(f"  job {job.id}  {job.kind} to {to}: {job.state} after {tries}\n")
        for number, tried in enumerate(attempts, start=1):
            by = f" by {tried.node}" if tried.node else ""  # a shared store's node
            out.write(
                f"    attempt {number}  {when(tried.started_at, zone)}  {tried.outcome}{by}"
                f"  {tried.host or '-'}  {tried.code or '-'}  {tried.reply}\n"
            )
        _write_sent(job, sent.get(job.id), out)


def _write_sent(job: Job, kept: SentNotice | None, out: TextIO) -> None:
    """What the sender was told: the kept notice's Message-ID and hash, or why there is none."""
    if kept is not None:
        out.write(f"    message-id  {kept.message_id or '(none)'}\n")
        out.write(f"    sha-256     {kept.sha256}  ({kept.size:,} bytes, kept as sent:")
        out.write(f" gateway audit notice {kept.reference} --job {kept.job_id})\n")
    elif job.state is JobState.DELIVERED and should_keep(job.kind):
        out.write("    as sent     not kept (purged by notice_retention_days, or sent before")
        out.write(" notices were kept)\n")


def _timeline(story: Story) -> list[tuple[datetime, str]]:
    a = story.attempt
    if not _is_message(a):
        return [(a.at, f"refused <{a.recipients[0]}> at RCPT: {a.reply}")]
    events = [(a.at, f"received from <{a.sender}> (end of DATA), {a.size or 0:,} bytes")]
    events += [(d.decided_at, f"decided {d.action} for <{d.recipient}>") for d in story.recipients]
    events.append((a.at, f"answered {a.reply}"))
    for job, attempts in story.jobs:
        events.append((job.created_at, f"{job.kind} job {job.id} queued"))
        for number, tried in enumerate(attempts, start=1):
            code = f" {tried.code}" if tried.code else ""
            what = f"{job.kind} job {job.id} attempt {number}: {tried.outcome}{code} {tried.reply}"
            events.append((tried.finished_at, what.rstrip()))
    # Stable: events of the same instant keep the order they happen in.
    return sorted(events, key=lambda e: e[0])


def write_events(events: Sequence[LoggedEvent], files: StoryFiles, note: str, out: TextIO) -> None:
    """The audit log's lines about an attempt, where each is (file:line, seq), as written."""
    if note:
        out.write(f"audit log: {note}\n")
        return
    if not files.mentions and not files.skipped:
        out.write("audit log: no log file found\n")
        return
    skipped = files.skipped
    besides = f"; {skipped:,} older ones end before it arrived, not read" if skipped else ""
    if files.why_whole:
        besides = f"; {files.why_whole}: every file read"
    out.write(f"audit log ({', '.join(str(f) for f in files.mentions)}{besides})\n")
    if not events:
        out.write("  no line names this reference\n")
    for event in events:
        fields = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in event.fields)
        seq = f"seq {event.seq}" if event.seq is not None else "unchained"
        out.write(f"  {event.where} ({seq})  {event.timestamp}  {event.event}  {fields}\n")


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
