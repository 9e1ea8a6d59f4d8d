"""Notices: what the sender of a message to a retired address is told, as an EmailMessage.

templates/<set>/<kind>/ and a FailedMessage make a multipart/alternative RFC 3834 auto-reply
to the envelope sender. Every value taken from the incoming message is cleaned here before a
template sees it, and headers are built only from validated values, so no Subject, filename
or Message-ID can add or split a header, inject markup or add a recipient.

This module never sends, signs or logs, and reads nothing but the templates (once, when a
NoticeRenderer is built): delivery/worker.py sends the message with MAIL FROM:<> to its one To
address, dkim.py signs the bytes that `notice_bytes()` returns.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from importlib import resources
from pathlib import Path

import jinja2

from gateway.config import Language, OfficeSettings
from gateway.errors import ConfigError, NoticeError
from gateway.mail.evidence import Attachment, MessageFacts
from gateway.notices.context import NoticeContext
from gateway.notices.text import (
    A_NUMBER_TEXT,
    MAX_A_NUMBERS,
    SUBJECT_LIMIT,
    a_number_text,
    clean_filename,
    clean_message_id,
    clean_text,
    cutoff_text,
    date_text,
    datetime_text,
    decode_header_text,
    digits_of,
    size_text,
)
from gateway.notices.wire import notice_bytes, wire_policy
from gateway.policy.decision import is_replyable_address, notice_suppression

__all__ = [
    "FailedMessage",
    "NoticeError",
    "NoticeKind",
    "NoticeRenderer",
    "clean_text",
    "cutoff_text",
    "date_text",
    "datetime_text",
    "decode_header_text",
    "notice_bytes",
    "sample_message",
    "size_text",
    "suppression_reason",
    "templates_dir",
]

_MAX_DOCUMENTS = 25
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BLANK_RUNS = re.compile(r"\n{3,}")
_TEMPLATE_FILES = ("subject.txt.j2", "body.txt.j2", "body.html.j2")


class NoticeKind(enum.StrEnum):
    NOT_FILED = "not-filed"  # after the cutoff: the document was not filed or served
    ADVISORY = "advisory"  # the warn phase: delivered, but the address retires soon

    @property
    def directory(self) -> str:
        return self.value.replace("-", "_")


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """What the notice says about the message that was not filed; all of it may be hostile."""

    reference: str  # gateway reference id, the same as in the SMTP reply and the audit log
    sender: str  # envelope sender, normalised; the notice's only recipient
    retired_address: str
    received_at: datetime  # aware; shown in the office's zone
    subject: str | None
    message_id: str | None
    attachments: tuple[Attachment, ...]
    a_numbers: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")

    @classmethod
    def from_facts(
        cls,
        facts: MessageFacts,
        *,
        reference: str,
        sender: str,
        retired_address: str,
        received_at: datetime,
    ) -> FailedMessage:
        """The notice's view of a recorded message."""
        return cls(
            reference=reference,
            sender=sender,
            retired_address=retired_address,
            received_at=received_at,
            subject=facts.subject,
            message_id=facts.message_id,
            attachments=facts.attachments,
            a_numbers=facts.a_numbers,
        )


# ---------------------------------------------------------------------------------------------
# What the templates see


@dataclass(frozen=True, slots=True)
class Document:
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class MessageView:
    subject: str  # decoded, cleaned and capped; "" when there was none
    retired_address: str
    received: datetime  # in the office's zone
    message_id: str | None  # only a well-formed one
    documents: tuple[Document, ...]
    documents_omitted: int
    a_numbers: tuple[str, ...]
    a_numbers_not_in_subject: tuple[str, ...]
    reference: str
    receipt_url: str | None = None  # the public receipt page ([lookup] public_url), if any


@dataclass(frozen=True, slots=True)
class OfficeView:
    name: str
    display_name: str
    short_name: str
    portal_name: str
    portal_url: str
    registration_url: str | None
    instructions_url: str | None
    paper_service: tuple[str, ...]
    contact: str | None
    retires: datetime  # in the office's zone


def _office_view(office: OfficeSettings, lang: Language) -> OfficeView:
    """The office as a notice in `lang` shows it: its texts in that language."""
    texts = office.texts(lang)
    return OfficeView(
        name=office.name,
        display_name=texts.display_name,
        short_name=office.short_name,
        portal_name=texts.portal_name,
        portal_url=office.portal_url,
        registration_url=office.registration_url,
        instructions_url=office.instructions_url,
        paper_service=texts.paper_service,
        contact=texts.contact,
        retires=office.lifecycle.retires.astimezone(office.zone),
    )


def _message_view(
    failed: FailedMessage, office: OfficeSettings, subject_limit: int, public_url: str | None
) -> MessageView:
    subject = clean_text(decode_header_text(failed.subject or ""), limit=subject_limit)
    a_numbers = tuple(
        a_number_text(a)
        for a in (clean_text(n, limit=20) for n in failed.a_numbers[:MAX_A_NUMBERS])
        if A_NUMBER_TEXT.fullmatch(a)
    )
    documents = tuple(
        Document(clean_filename(a.filename) or "(unnamed)", max(a.size, 0))
        for a in failed.attachments[:_MAX_DOCUMENTS]
    )
    return MessageView(
        subject=subject,
        retired_address=clean_text(failed.retired_address, limit=254),
        received=failed.received_at.astimezone(office.zone),
        message_id=clean_message_id(failed.message_id),
        documents=documents,
        documents_omitted=max(len(failed.attachments) - _MAX_DOCUMENTS, 0),
        a_numbers=a_numbers,
        # A capped or missing subject may have lost the A-number; the notice's subject adds it.
        a_numbers_not_in_subject=tuple(
            a for a in a_numbers if digits_of(a) not in digits_of(subject)
        ),
        reference=failed.reference,
        receipt_url=None if public_url is None else f"{public_url}{failed.reference}",
    )


_FILTERS: Mapping[str, Callable[..., str]] = {
    "date_text": date_text,
    "datetime_text": datetime_text,
    "cutoff_text": cutoff_text,
    "size_text": size_text,
}


# ---------------------------------------------------------------------------------------------
# Addresses and suppression


def suppression_reason(
    context: NoticeContext, *, sender: str, headers: Mapping[str, str]
) -> str | None:
    """policy.notice_suppression() with the gateway's own domains and addresses filled in."""
    return notice_suppression(
        sender,
        headers,
        own_domains=context.own_domains,
        own_addresses=frozenset({context.from_address.lower()}),
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def templates_dir() -> Path:
    """The notice templates: packaged with the wheel, or templates/ in a source checkout."""
    packaged = resources.files("gateway").joinpath("_data/templates")
    if packaged.is_dir():  # pragma: no cover - only in an installed wheel
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "templates"


def _is_html(name: str | None) -> bool:
    return name is not None and name.endswith(".html.j2")


def _environment(root: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        autoescape=_is_html,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # compiled once at startup; edits take effect on restart
    )
    env.filters.update(_FILTERS)
    return env


@dataclass(frozen=True, slots=True)
class _TemplateSet:
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template


class NoticeRenderer:
    """Renders notices from compiled templates; built once at startup."""

    def __init__(self, context: NoticeContext, templates: Path | None = None) -> None:
        """Compile every office's templates and render each once with a sample message.

        Raises:
            ConfigError: an office's template set is missing, or fails to render.
        """
        self._notices = context.notices
        self._public_url = context.public_url
        self._root = templates or context.notices.templates_dir or templates_dir()
        self._from = Address(display_name=context.notices.from_name, addr_spec=context.from_address)
        self._environments: dict[str, jinja2.Environment] = {}
        self._sets: dict[tuple[str, NoticeKind], _TemplateSet] = {}
        # Made once: a policy holds the header registry and its classes (keyed by is_utf8).
        self._policies = {utf8: wire_policy(utf8=utf8) for utf8 in (False, True)}
        for index, office in enumerate(context.offices):
            self._check_office(index, office)

    def _check_office(self, index: int, office: OfficeSettings) -> None:
        key = f"offices[{index}].templates"
        if not (self._root / office.templates).is_dir():
            raise ConfigError(key, f"no template set {office.templates!r} in {self._root}")
        for kind in NoticeKind:
            sample = sample_message(office, kind)
            try:
                self._template_set(office.templates, kind)
                self.render(kind, office, sample, now=sample.received_at)
            except jinja2.TemplateSyntaxError as exc:
                where = f"{exc.filename}:{exc.lineno}"
                raise ConfigError(key, f"{kind} notice: {where}: {exc.message or exc}") from exc
            # A template can fail in its own ways too: an undefined name, a filter given an
            # unknown language. Any of them is the operator's to fix before the first notice.
            except (jinja2.TemplateError, LookupError, TypeError, ValueError) as exc:
                raise ConfigError(key, f"{kind} notice: {exc}") from exc

    def _template_set(self, name: str, kind: NoticeKind) -> _TemplateSet:
        cached = self._sets.get((name, kind))
        if cached is None:
            env = self._environments.get(name) or _environment(self._root / name)
            self._environments[name] = env
            subject, text, html = (
                env.get_template(f"{kind.directory}/{file}") for file in _TEMPLATE_FILES
            )
            cached = self._sets[(name, kind)] = _TemplateSet(subject, text, html)
        return cached

    def render(
        self, kind: NoticeKind, office: OfficeSettings, failed: FailedMessage, *, now: datetime
    ) -> EmailMessage:
        """The notice for `failed`, addressed to its envelope sender and nobody else.

        Raises:
            NoticeError: the sender is not one replyable address, `now` is naive, or the
                reference is malformed.
        """
        if not is_replyable_address(failed.sender):
            raise NoticeError(f"cannot address a notice to {failed.sender!r}")
        if now.tzinfo is None:
            raise NoticeError("now must be timezone-aware")
        if _REFERENCE.fullmatch(failed.reference) is None:
            raise NoticeError(f"malformed reference {failed.reference!r}")
        templates = self._template_set(office.templates, kind)
        limit = self._notices.subject_max_chars
        message_view = _message_view(failed, office, limit, self._public_url)
        views = {lang: _office_view(office, lang) for lang in office.languages}
        first = office.languages[0]
        variables: dict[str, object] = {
            "office": views[first],  # in the first language; offices[lang] for the others
            "offices": views,
            "message": message_view,
            "languages": tuple(office.languages),
            "subject_prefix": self._notices.subject_prefix_in(first),
        }
        subject = clean_text(templates.subject.render(variables), limit=SUBJECT_LIMIT)
        message = self._headers(
            kind, office, failed, subject=subject, now=now, in_reply_to=message_view.message_id
        )
        # Quoted-printable keeps both parts 7-bit clean (no 8BITMIME needed) and readable raw.
        message.set_content(_tidy_text(templates.text.render(variables)), cte="quoted-printable")
        message.add_alternative(
            templates.html.render(variables), subtype="html", cte="quoted-printable"
        )
        # A boundary from the reference makes the notice reproducible byte for byte, and "=_"
        # cannot occur in quoted-printable text, so it can never collide with a part.
        message.set_boundary(f"=_{failed.reference}.{kind}")
        # After the parts: set_content() clears every Content-* header it finds.
        message["Content-Language"] = ", ".join(office.languages)
        return message

    def _headers(
        self,
        kind: NoticeKind,
        office: OfficeSettings,
        failed: FailedMessage,
        *,
        subject: str,
        now: datetime,
        in_reply_to: str | None,
    ) -> EmailMessage:
        message = EmailMessage(policy=self._policies[not failed.sender.isascii()])
        message["From"] = self._from
        # RFC 3834 §4: to the envelope sender only, never to addresses from the headers. It
        # is one dot-atom address (checked in render()), so it parses only one way.
        message["To"] = failed.sender
        message["Subject"] = subject
        message["Date"] = format_datetime(now.astimezone(office.zone))
        domain = self._from.domain
        message["Message-ID"] = f"<{failed.reference}.{kind}.{office.name}@{domain}>"
        if in_reply_to is not None:  # RFC 3834 §3.1.5: lands in the sender's thread
            message["In-Reply-To"] = in_reply_to
            message["References"] = in_reply_to
        message["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
        message["X-Auto-Response-Suppress"] = "All"  # Exchange: no out-of-office reply to us
        message["Precedence"] = "bulk"  # for responders that predate RFC 3834
        message["X-Eservice-Gateway-Reference"] = failed.reference
        return message


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


def sample_message(
    office: OfficeSettings,
    kind: NoticeKind = NoticeKind.NOT_FILED,
    *,
    sender: str = "paralegal@lawfirm.example",
) -> FailedMessage:
    """A realistic filing for `office`, for previews and the startup check.

    It arrives at 9:14 on the day the address retires, or, for an advisory, the day before.
    """
    day = office.lifecycle.retires.astimezone(office.zone)
    if kind is NoticeKind.ADVISORY:
        day -= timedelta(days=1)
    received = (day + timedelta(hours=9, minutes=14)).astimezone(UTC)
    address = next(
        (a for a in office.addresses if not a.startswith("@")), "filings" + office.addresses[0]
    )
    return FailedMessage(
        reference=f"{received:%Y%m%d}-7K3QM9XD0A",
        sender=sender,
        retired_address=address,
        received_at=received,
        subject="Motion to Continue - GARCIA LOPEZ, Maria - A123-456-789",
        message_id="<CAF3xV2k9Q+7mT@mail.lawfirm.example>",
        attachments=(
            Attachment("Motion to Continue.pdf", "application/pdf", 251_904),
            Attachment("Exhibit A - Medical records.pdf", "application/pdf", 1_363_148),
        ),
        a_numbers=("A123-456-789",),
    )
