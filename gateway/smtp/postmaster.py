"""Mail to postmaster: the forward jobs and `gateway postmaster list|show|export|forward`.

Mail to postmaster@ a served domain (RFC 5321 §4.5.1) is kept in the store and, with
`[postmaster] forward_to`, relayed to the people who read it as "forward" jobs: the original
bytes below our Received line, with the null reverse path (RFC 5321 §4.5.5), so that a
failed forward is never reported to the message's (possibly forged) sender. The commands work
on the store directly (interface.PostmasterBox: the SQLite file, or the PostgreSQL that every
node shares), beside serving gateways. This module sends nothing and renders no notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from gateway.config import PostmasterSettings
from gateway.errors import StoreError
from gateway.store.backend import StoreLocation, open_postmaster
from gateway.store.db import JobRecord
from gateway.store.interface import PostmasterBox
from gateway.store.mailbox import FORWARD, PostmasterMail
from gateway.store.records import parse_bound

__all__ = ["FORWARD", "PostmasterMail", "PostmasterRequest", "forward_jobs", "run_postmaster"]

EXIT_OK, EXIT_NOT_FOUND, EXIT_CONFIG, EXIT_NO_RAW = 0, 1, 2, 3
EXIT_STORE = 1  # the store could not be read or written (a shared store away, say)


def forward_jobs(forward_to: Sequence[str]) -> tuple[JobRecord, ...]:
    """The forward jobs for one message: one per recipient domain (MX delivery goes by it).

    MAIL FROM is the null sender: a forward that fails is seen in the queue, and no bounce
    can reach the original sender, who may be forged (RFC 5321 §4.5.5).
    """
    by_domain: dict[str, list[str]] = {}
    for address in forward_to:
        by_domain.setdefault(address.rpartition("@")[2].lower(), []).append(address)
    return tuple(JobRecord(FORWARD, "", tuple(rcpts)) for rcpts in by_domain.values())


# ---------------------------------------------------------------------------------------------
# Formatting: plain values in, text out


def format_list(mails: Sequence[PostmasterMail]) -> str:
    """The table of `postmaster list`, columns lined up."""
    if not mails:
        return "no mail to postmaster\n"
    rows = [("REFERENCE", "RECEIVED (UTC)", "SENDER", "SIZE", "FORWARD", "SUBJECT")]
    rows += [
        (
            m.reference,
            _when(m.received_at),
            m.sender or "<>",
            str(m.size),
            m.forward_state,
            m.subject or "",
        )
        for m in mails
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def format_show(mail: PostmasterMail, raw: bytes | None) -> str:
    """The summary of one message, then its header section as received."""
    fields = [
        ("reference", mail.reference),
        ("received", f"{_when(mail.received_at)} UTC"),
        ("from client", f"{mail.helo or 'unknown'} [{mail.peer_ip}]"),
        ("envelope from", f"<{mail.sender}>"),
        ("envelope to", ", ".join(f"<{r}>" for r in mail.recipients)),
        ("subject", mail.subject or ""),
        ("size", f"{mail.size} bytes"),
        ("sha256", mail.sha256),
        ("outcome", mail.outcome),
        ("raw message", "kept" if raw is not None else "purged (not kept)"),
    ]
    fields += [(f"forward job {i}", f"{state} to {to}") for i, state, to in mail.forwards]
    if not mail.forwards:
        fields.append(("forwarded", "no"))
    text = "".join(f"{name:>14}: {value}\n" for name, value in fields)
    if raw is not None:
        text += "\n" + _header_block(raw).decode("utf-8", "replace")
    return text


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------
# The command


@dataclass(frozen=True, slots=True)
class PostmasterRequest:
    action: str  # list, show, export, forward
    reference: str | None = None
    since: str | None = None
    limit: int = 50
    output: Path | None = None  # export: the file (default: standard output)


def run_postmaster(
    postmaster: PostmasterSettings,
    request: PostmasterRequest,
    *,
    store: StoreLocation,
    now: datetime,
    out: TextIO,
    out_bytes: BinaryIO,
    err: TextIO,
) -> int:
    """Carry out one postmaster command; returns the exit status."""
    if request.action == "forward" and not postmaster.forward_to:
        err.write("gateway: [postmaster] forward_to is not set; there is nobody to forward to\n")
        return EXIT_CONFIG
    if not store.may_exist():
        err.write(
            f"gateway: no state store at {store.database} (has the gateway run with this config?)\n"
        )
        return EXIT_CONFIG
    try:
        box = open_postmaster(store, writable=request.action == "forward")
    except StoreError as exc:
        err.write(f"gateway: cannot open the store: {exc}\n")
        return EXIT_STORE
    try:
        if request.action == "list":
            return _list(box, request, out, err)
        jobs = forward_jobs(postmaster.forward_to)
        return _one(box, jobs, request, now=now, out=out, out_bytes=out_bytes, err=err)
    except StoreError as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_STORE
    finally:
        box.close()


def _list(box: PostmasterBox, request: PostmasterRequest, out: TextIO, err: TextIO) -> int:
    try:
        since = None if request.since is None else parse_bound(request.since, UTC)
    except ValueError:
        err.write(f"gateway: --since {request.since!r} is not a date or date-time\n")
        return EXIT_CONFIG
    out.write(format_list(box.find_mail(since=since, limit=request.limit)))
    return EXIT_OK


def _one(
    box: PostmasterBox,
    forwards: Sequence[JobRecord],
    request: PostmasterRequest,
    *,
    now: datetime,
    out: TextIO,
    out_bytes: BinaryIO,
    err: TextIO,
) -> int:
    reference = request.reference or ""
    mail = box.read_mail(reference)
    if mail is None:
        err.write(f"gateway: no message with reference {reference} (see gateway postmaster list)\n")
        return EXIT_NOT_FOUND
    raw = box.read_raw(reference)
    if request.action == "show":
        out.write(format_show(mail, raw))
        return EXIT_OK
    if raw is None:
        err.write(f"gateway: the raw message {reference} is not kept (purged, or never kept)\n")
        return EXIT_NO_RAW
    if request.action == "export":
        if request.output is None:
            out_bytes.write(raw)
            out_bytes.flush()
        else:
            request.output.write_bytes(raw)
        return EXIT_OK
    ids = box.queue_forward(reference, forwards, now)
    for job_id, job in zip(ids, forwards, strict=True):
        out.write(f"{reference}: forward queued as job {job_id} to {', '.join(job.recipients)}\n")
    return EXIT_OK
