"""`gateway preview` and `gateway dkim-keygen`: tools for template editors and DNS operators.

preview renders the notice that a message (a .eml file, or a built-in sample) would get and
returns its text, HTML or whole message; nothing is sent, queued, signed or recorded.
dkim-keygen reads or creates the DKIM key and prints the DNS record to publish.
This module opens no sockets; cli.py parses the arguments and writes what comes back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from pydantic import ValidationError

from gateway.config import GatewaySettings, Language, OfficeSettings
from gateway.errors import ConfigError, PreviewError
from gateway.mail.addresses import AddressKind, parse_address
from gateway.mail.evidence import extract_facts
from gateway.notices import dkim
from gateway.notices.context import NoticeContext
from gateway.notices.render import (
    FailedMessage,
    NoticeKind,
    NoticeRenderer,
    notice_bytes,
    sample_message,
)
from gateway.policy.decision import is_replyable_address

__all__ = [
    "PreviewError",
    "PreviewFormat",
    "PreviewRequest",
    "failed_message_from_eml",
    "render_preview",
    "run_dkim_keygen",
    "run_preview",
]

_SUPPORTED_LANGUAGES: tuple[Language, ...] = ("en", "es")
# An A-number as people type it in a subject: "A123-456-789", "A 123 456 789", "A#12345678".
_SAMPLE_SENDER = "paralegal@lawfirm.example"


class PreviewFormat(enum.StrEnum):
    TEXT = "text"
    HTML = "html"
    EML = "eml"


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    office: str | None = None
    message: Path | None = None  # a .eml file; None: the built-in sample
    format: PreviewFormat = PreviewFormat.TEXT
    kind: NoticeKind = NoticeKind.NOT_FILED
    sender: str | None = None  # the envelope sender to pretend; see _envelope_sender()
    languages: tuple[str, ...] = ()  # override the office's languages
    received: datetime | None = None
    templates: Path | None = None


def render_preview(settings: GatewaySettings, request: PreviewRequest) -> bytes:
    """The notice for the request, as UTF-8 text, UTF-8 HTML or the message bytes (unsigned).

    Raises:
        PreviewError: the request names an unknown office or language, or an unusable file.
        ConfigError: the templates do not compile or render.
    """
    if request.sender is not None and not is_replyable_address(request.sender):
        raise PreviewError(f"--sender {request.sender!r} is not one plain mail address")
    raw = None if request.message is None else _read(request.message)
    name = request.office
    if name is None and raw is not None:
        name = _office_name_for(settings, raw)
    office = _office(settings, name, request.languages)
    if raw is None:
        failed = sample_message(office, request.kind, sender=request.sender or _SAMPLE_SENDER)
        if request.received is not None:
            failed = _replace_received(failed, request.received)
    else:
        failed = failed_message_from_eml(
            raw, office=office, sender=request.sender, received_at=request.received
        )
    context = replace(NoticeContext.from_settings(settings), offices=(office,))
    renderer = NoticeRenderer(context, request.templates)
    message = renderer.render(
        request.kind, office, failed, now=failed.received_at + timedelta(seconds=2)
    )
    if request.format is PreviewFormat.EML:
        return notice_bytes(message)
    part = message.get_body(("plain",) if request.format is PreviewFormat.TEXT else ("html",))
    assert part is not None  # render() always makes both parts
    return str(part.get_content()).encode("utf-8")


def _office(
    settings: GatewaySettings, name: str | None, languages: tuple[str, ...]
) -> OfficeSettings:
    names = [o.name for o in settings.offices]
    if name is not None and name not in names:
        raise PreviewError(f"no office named {name!r} (offices: {', '.join(names)})")
    office = settings.office(name) if name else settings.offices[0]
    if not languages:
        return office
    unknown = [lang for lang in languages if lang not in _SUPPORTED_LANGUAGES]
    if unknown:
        raise PreviewError(f"no templates in {unknown[0]!r} (languages: en, es)")
    # Validated again: each of the languages needs the office's texts in it.
    try:
        return OfficeSettings.model_validate({**office.model_dump(), "languages": list(languages)})
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        raise PreviewError(f"--languages {','.join(languages)}: {key}: {message}") from exc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PreviewError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _replace_received(failed: FailedMessage, received: datetime) -> FailedMessage:
    return replace(failed, received_at=received, reference=_reference(received))


def _reference(received: datetime) -> str:
    # Shaped like the gateway's own references, and plainly not one of them.
    return f"{received.astimezone(UTC):%Y%m%d}-PREVIEW000"


# ---------------------------------------------------------------------------------------------
# Reading a .eml file the way the gateway would see it


def failed_message_from_eml(
    raw: bytes,
    *,
    office: OfficeSettings,
    sender: str | None = None,
    received_at: datetime | None = None,
) -> FailedMessage:
    """What a notice would say about `raw` had it been sent to one of `office`'s addresses.

    A .eml file has no envelope, so unless `sender` is given the preview pretends the sender
    is the Return-Path, else the From address (the gateway itself only ever uses the envelope
    sender). The arrival time defaults to the Date header.

    Raises:
        PreviewError: no replyable sender can be found or was given.
    """
    # The envelope is guessed from the headers; everything else is what the gateway itself
    # would record of these bytes, so the preview shows what a real notice would say.
    parsed = message_from_bytes(raw, policy=email_policy.compat32)
    envelope_sender = sender or _envelope_sender(parsed)
    if envelope_sender is None or not is_replyable_address(envelope_sender):
        raise PreviewError(f"no usable sender {envelope_sender!r}; pass --sender ADDRESS")
    received = received_at or _date(parsed) or sample_message(office).received_at
    return FailedMessage.from_facts(
        extract_facts(raw),
        reference=_reference(received),
        sender=envelope_sender,
        retired_address=_retired_address(parsed, office),
        received_at=received,
    )


def _header(parsed: Message, name: str) -> str | None:
    value = parsed.get(name)
    return None if value is None else str(value)


def _envelope_sender(parsed: Message) -> str | None:
    for name in ("Return-Path", "From"):
        for _, address in getaddresses([str(v) for v in parsed.get_all(name, [])]):
            if is_replyable_address(address):
                return address
    return None


def _date(parsed: Message) -> datetime | None:
    value = _header(parsed, "Date")
    try:
        date = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None
    return None if date is None else (date if date.tzinfo else date.replace(tzinfo=UTC))


def _recipients(parsed: Message) -> Iterable[str]:
    headers = ("X-Original-To", "Delivered-To", "To", "Cc")
    values = [str(v) for name in headers for v in parsed.get_all(name, [])]
    return (address for _, address in getaddresses(values) if "@" in address)


def _retired_address(parsed: Message, office: OfficeSettings) -> str:
    own = {a.lower() for a in office.addresses}
    domains = {a[1:].lower() for a in office.addresses if a.startswith("@")}
    for address in _recipients(parsed):
        if address.lower() in own or address.rpartition("@")[2].lower() in domains:
            return address
    return sample_message(office).retired_address


def _office_name_for(settings: GatewaySettings, raw: bytes) -> str | None:
    parsed = message_from_bytes(raw, policy=email_policy.compat32)
    for address in _recipients(parsed):
        try:
            lookup = settings.address_book.lookup(parse_address(address))
        except ValueError:
            continue
        if lookup.kind is AddressKind.RETIRED:
            return lookup.office
    return None


# ---------------------------------------------------------------------------------------------
# dkim-keygen


def run_dkim_keygen(
    settings: GatewaySettings, *, out_file: Path | None, out: TextIO, err: TextIO
) -> int:
    """Print the DNS record for the notices' DKIM key, creating the key if there is none.

    With `out_file`, a new key is written there instead (never over an existing file).
    Returns the exit status.
    """
    context = NoticeContext.from_settings(settings)
    selector, domain = settings.notices.dkim_selector, dkim.dkim_domain(context)
    try:
        if out_file is not None:
            key, created = dkim.write_new_key(out_file, selector=selector, domain=domain), True
        else:
            key, created = dkim.ensure_key(context)
    except FileExistsError:
        print(f"gateway: {out_file} exists; choose a new file name", file=err)
        return 1
    except OSError as exc:
        print(f"gateway: cannot write {out_file}: {exc.strerror or exc}", file=err)
        return 1
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=err)
        return 2
    state = "created now" if created else "existing"
    print(f"; DKIM key for the notices' signatures ({state}): {key.path}", file=out)
    print(f"; Publish this TXT record at {key.record_name}:", file=out)
    print(dkim.zone_record(key), file=out)
    if out_file is not None:
        print(f'; Then set [notices] dkim_key_file = "{out_file}"', file=out)
    return 0


def run_preview(
    settings: GatewaySettings,
    *,
    office: str | None,
    message: Path | None,
    output: str,
    kind: str,
    sender: str | None,
    languages: str | None,
    received: str | None,
    templates: Path | None,
    out: BinaryIO,
    err: TextIO,
) -> int:
    """Render a preview from the command line's values and write it to `out`.

    Returns the exit status: 0, or 2 when the request or the templates are unusable.
    """
    try:
        request = PreviewRequest(
            office=office,
            message=message,
            format=PreviewFormat(output),
            kind=NoticeKind(kind),
            sender=sender,
            languages=_languages(languages),
            received=_received(received),
            templates=templates,
        )
        out.write(render_preview(settings, request))
    except PreviewError as exc:
        print(f"gateway: preview: {exc}", file=err)
        return 2
    except ConfigError as exc:
        print(f"gateway: template error: {exc}", file=err)
        return 2
    out.flush()
    return 0


def _languages(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _received(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PreviewError(f"--received {text!r} is not an ISO-8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)
