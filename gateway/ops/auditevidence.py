"""`gateway audit show|notice`: one attempt's whole story, and the notice exactly as sent.

show tells what the store holds about an attempt (store/story.py) and the audit log's lines
about it (audit/events.py), written by audit/story.py; notice writes a kept notice's bytes,
checked against their SHA-256 first. Both read through an AuditReader, so on a shared store
they answer for every node. Neither writes to the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, TextIO

from gateway.audit.events import LoggedEvent, has_arrival, logged_events
from gateway.audit.search import LogSearch
from gateway.audit.spans import CLOCK_SKEW, StoryFiles, read_starts, story_files, whole_log
from gateway.audit.story import write_events, write_story
from gateway.audit.verify import find_log_files, order_files
from gateway.config import GatewaySettings
from gateway.mail.redaction import Redactor
from gateway.ops.auditrequest import (
    EXIT_FOUND_PROBLEMS,
    EXIT_OK,
    AuditRequest,
    UsageError,
    Zones,
    write_atomically,
)
from gateway.store.interface import AuditReader
from gateway.store.records import redacted
from gateway.store.sentmail import SentNotice
from gateway.store.story import Story, tell_story
from gateway.vocabulary import JobKind, JobState

__all__ = ["show_attempt", "write_kept_notice"]


def show_attempt(
    settings: GatewaySettings,
    request: AuditRequest,
    reader: AuditReader,
    zones: Zones,
    redactor: Redactor,
    out: TextIO,
    err: TextIO,
) -> int:
    if len(request.targets) != 1:
        raise UsageError("audit show needs one reference (see gateway audit list)")
    reference = request.targets[0].strip().upper()
    story = tell_story(reader, reference)
    chosen, note = _story_files(settings, request, story)
    search = LogSearch()
    events = logged_events(search, reference, chosen) if chosen.mentions else []
    if story is not None and _should_be_whole(settings, story, chosen, events):
        chosen = whole_log(chosen.every, why=_NOT_WHERE_DUE)
        events = logged_events(search, reference, chosen)
    for path, why in search.unreadable.items():
        err.write(f"gateway: cannot read {path}: {why}; the lines it holds are not shown\n")
    if story is None:
        err.write(f"gateway: no attempt {reference} in the store\n")
        if events:  # purged by retention, or recorded in another store: the log still tells
            write_events(events, chosen, note, out)
        return EXIT_FOUND_PROBLEMS
    story = replace(
        story,
        attempt=redacted(story.attempt, redactor),
        attachments=tuple(
            replace(a, filename=redactor.text(a.filename)) for a in story.attachments
        ),
    )
    write_story(story, zones.of(story.attempt.office), out)
    write_events(events, chosen, note, out)
    taken_by = story.attempt.node
    if taken_by is not None and taken_by != settings.server.node:
        out.write(f"  (received by node {taken_by}: the lines of its arrival are in its log)\n")
    # A story with a log file left out is not the whole story: say so in the status too.
    return EXIT_FOUND_PROBLEMS if search.unreadable else EXIT_OK


_NOT_WHERE_DUE = (
    "its arrival is not in the log at the time the store gives (a clock shifted with"
    " --as-of, or its lines lost)"
)


def _should_be_whole(
    settings: GatewaySettings, story: Story, chosen: StoryFiles, events: list[LoggedEvent]
) -> bool:
    """Whether the files left out must be read after all: they were chosen by the store's
    time, and the log's lines of an arrival on this node are not at that time."""
    taken_by = story.attempt.node
    if chosen.is_whole or (taken_by is not None and taken_by != settings.server.node):
        return False  # another node's arrival is in its log; the clocks of nodes agree
    return not has_arrival(events, story.attempt.at, within=CLOCK_SKEW)


_ON_STANDARD_OUTPUT = "the log goes to standard output; give --log FILE to include a saved copy"


def _story_files(
    settings: GatewaySettings, request: AuditRequest, story: Story | None
) -> tuple[StoryFiles, str]:
    """The log files that can tell of the attempt (by its arrival, when the store has it),
    or a note saying why none is read.

    Every file is read without a record (purged: no time to go by) and every file given
    with --log (saved copies may overlap, and then no file's end is bounded by the next
    one's start); the host's own files are rotated, one writer each (spans.py)."""
    purged = "no record in the store to date the attempt by" if story is None else ""
    if request.logs:
        return whole_log(order_files(request.logs), why=purged), ""
    if settings.audit.log == "-":
        return whole_log([]), _ON_STANDARD_OUTPUT
    found = find_log_files(Path(settings.audit.log))
    if story is None:
        return whole_log(order_files(found), why=purged), ""
    limit = timedelta(seconds=settings.server.session_timeout)
    return story_files(read_starts(found), story.attempt.at, session_limit=limit), ""


def write_kept_notice(
    request: AuditRequest,
    reader: AuditReader,
    *,
    out: TextIO,
    out_bytes: BinaryIO,
    err: TextIO,
) -> int:
    """Write one kept notice as sent: to --output FILE, or to standard output.

    Not redacted: it is the evidence, and a redacted copy would not match its SHA-256.
    """
    if len(request.targets) != 1:
        raise UsageError("audit notice needs one reference (see gateway audit list)")
    reference = request.targets[0].strip().upper()
    kept = _chosen_notice(reader.read_sent(reference), request.job)
    if kept is None:
        err.write(f"gateway: {_why_no_notice(reader, reference, request.job)}\n")
        return EXIT_FOUND_PROBLEMS
    data = reader.sent_data(reference, kept.job_id) or b""
    if hashlib.sha256(data).hexdigest() != kept.sha256:
        err.write(f"gateway: the notice kept for {reference} does not match its SHA-256\n")
        return EXIT_FOUND_PROBLEMS
    if request.notice_file is None:
        out_bytes.write(data)
        out_bytes.flush()
        return EXIT_OK
    write_atomically(request.notice_file, data)
    out.write(
        f"wrote {request.notice_file}: {kept.kind} of job {kept.job_id}, {kept.size:,} bytes,"
        f" Message-ID {kept.message_id or '(none)'}, SHA-256 {kept.sha256}\n"
    )
    return EXIT_OK


def _chosen_notice(kept: Sequence[SentNotice], job: int | None) -> SentNotice | None:
    """The notice asked for: the one with --job, or the only one.

    Raises:
        UsageError: there are several and no --job says which.
    """
    if job is not None:
        return next((k for k in kept if k.job_id == job), None)
    if len(kept) > 1:
        which = ", ".join(f"job {k.job_id} ({k.kind})" for k in kept)
        raise UsageError(f"{kept[0].reference} has {len(kept)} notices kept, {which}: give --job")
    return kept[0] if kept else None


def _why_no_notice(reader: AuditReader, reference: str, job: int | None) -> str:
    if reader.read_message(reference) is None:
        return f"no attempt {reference} in the store (or its record and notice were purged)"
    if job is not None:
        return f"no notice of job {job} is kept for {reference}"
    delivered = reader.find_jobs(reference, state=JobState.DELIVERED)
    if any(job.kind is not JobKind.RELAY for job in delivered):
        return (
            f"the notice sent for {reference} is no longer kept (purged after"
            " [storage] notice_retention_days, or sent before notices were kept)"
        )
    return f"no notice has been sent for {reference} (see gateway audit show {reference})"
