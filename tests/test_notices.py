"""Notices: rendering from real-looking .eml samples, hostile input, and the message as sent."""

from __future__ import annotations

import email
import re
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime
from email import policy
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import pytest

from gateway.config import (
    GatewaySettings,
    NoticeSettings,
    OfficeSettings,
    default_config_path,
    load_settings,
)
from gateway.errors import ConfigError
from gateway.mail.evidence import Attachment, MessageFacts
from gateway.notices.context import NoticeContext
from gateway.notices.render import (
    FailedMessage,
    NoticeError,
    NoticeKind,
    NoticeRenderer,
    clean_text,
    cutoff_text,
    date_text,
    datetime_text,
    decode_header_text,
    notice_bytes,
    sample_message,
    size_text,
    templates_dir,
)
from gateway.ops.preview import failed_message_from_eml

SAMPLES = Path(__file__).parent / "samples"
NOTICE_SAMPLES = ("plain", "multipart-attachments", "encoded-subject", "no-subject", "injection")
NOW = datetime(2017, 9, 12, 17, 0, tzinfo=UTC)
PORTAL = "https://eservice.ice.gov/"
# Every header a notice may carry; anything else would be an injection.
NOTICE_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-auto-response-suppress",
    "precedence",
    "x-eservice-gateway-reference",
    "mime-version",
    "content-type",
    "content-language",
}
RECIPIENT_HEADERS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc", "reply-to")


@pytest.fixture(scope="module")
def settings() -> GatewaySettings:
    return load_settings(default_config_path(), environ={})


@pytest.fixture(scope="module")
def renderer(settings: GatewaySettings) -> NoticeRenderer:
    return NoticeRenderer(notices_of(settings))


def notices_of(settings: GatewaySettings, *offices: OfficeSettings) -> NoticeContext:
    """What notices are made from in `settings`; of `offices` alone, when given."""
    context = NoticeContext.from_settings(settings)
    return replace(context, offices=offices) if offices else context


def office_in(settings: GatewaySettings, *languages: str) -> OfficeSettings:
    office = settings.offices[0]
    return office.model_copy(update={"languages": list(languages)}) if languages else office


def failed_from(name: str, office: OfficeSettings, sender: str | None = None) -> FailedMessage:
    raw = (SAMPLES / f"{name}.eml").read_bytes()
    return failed_message_from_eml(raw, office=office, sender=sender)


def sent(
    renderer: NoticeRenderer,
    office: OfficeSettings,
    failed: FailedMessage,
    kind: NoticeKind = NoticeKind.NOT_FILED,
) -> EmailMessage:
    """Render, serialise as the delivery code will, and parse back with the stdlib parser."""
    raw = notice_bytes(renderer.render(kind, office, failed, now=NOW))
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    # Parsed from the wire, the parts keep their CRLF line ends.
    return (
        str(text.get_content()).replace("\r\n", "\n"),
        str(html.get_content()).replace("\r\n", "\n"),
    )


def recipients(message: EmailMessage) -> list[str]:
    values = [str(v) for name in RECIPIENT_HEADERS for v in message.get_all(name, [])]
    return [address for _, address in getaddresses(values)]


# ---------------------------------------------------------------------------------------------
# Every sample, language and kind


@pytest.mark.parametrize("languages", [("en",), ("es",), ("en", "es"), ("es", "en")])
@pytest.mark.parametrize("kind", list(NoticeKind))
@pytest.mark.parametrize("sample", NOTICE_SAMPLES)
def test_every_sample_renders_as_a_two_part_reply_to_the_envelope_sender_only(
    settings: GatewaySettings,
    renderer: NoticeRenderer,
    sample: str,
    kind: NoticeKind,
    languages: tuple[str, ...],
) -> None:
    office = office_in(settings, *languages)
    failed = failed_from(sample, office)
    message = sent(renderer, office, failed, kind)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert recipients(message) == [failed.sender]
    assert {name.lower() for name in message} <= NOTICE_HEADERS
    assert all(len(message.get_all(name, [])) == 1 for name in message)
    assert message["Content-Language"] == ", ".join(languages)
    text, html = parts(message)
    for body in (text, html):
        assert PORTAL in body
        assert failed.reference in body


@pytest.mark.parametrize(
    ("languages", "first_words"),
    [(("en",), "NOT FILED OR SERVED: your e-mail"), (("es",), "NO PRESENTADO NI NOTIFICADO:")],
)
def test_first_line_says_not_filed_names_the_message_and_gives_the_portal(
    settings: GatewaySettings,
    renderer: NoticeRenderer,
    languages: tuple[str, ...],
    first_words: str,
) -> None:
    office = office_in(settings, *languages)
    text, html = parts(sent(renderer, office, failed_from("plain", office)))
    first_line = text.splitlines()[0]
    assert first_line.startswith(first_words)
    assert "RUIZ HERNANDEZ, Carlos - A098-765-432" in first_line
    assert first_line.endswith(PORTAL)
    # In HTML, the banner with the same statement is the first visible text.
    body = html.split("<body", 1)[1].split(">", 1)[1]
    visible = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    assert visible.strip().startswith(first_words.split(":")[0])


def test_notice_identifies_the_failed_message_in_both_parts(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    failed = failed_from("multipart-attachments", office)
    text, html = parts(sent(renderer, office, failed))
    assert "Arrived: Wednesday, September 13, 2017, 4:45 PM CDT" in text
    assert "Sent to: occ-chicago-service@occ-chicago.example" in text
    assert "A-number: A123-456-789" in text
    assert "  - Motion to Continue.pdf (3.0 KB)\n" in text
    assert "  - Proposed order.docx (1.5 KB)\n" in text
    for body in (text, html):
        assert "Motion to Continue - GARCIA LOPEZ, Maria - A 123 456 789" in body
        assert "&lt;CAF3xV2k9Q+7mT_b1=Kp0@mail.garcia-partners.example&gt;" in body or (
            "<CAF3xV2k9Q+7mT_b1=Kp0@mail.garcia-partners.example>" in body
        )
        assert "Exhibit A - Medical records.pdf" in body
        assert "20170913-PREVIEW000" in body


def test_rfc2047_subject_and_non_ascii_filenames_are_shown_decoded(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings, "en", "es")
    message = sent(renderer, office, failed_from("encoded-subject", office))
    subject = "Moción para reabrir \u2013 NÚÑEZ GÓMEZ, Lucía - A#12345678"
    assert message["Subject"] == f"Auto: NOT FILED - {subject}"
    text, html = parts(message)
    for body in (text, html):
        assert subject in body
        assert "Moción para reabrir.pdf" in body
        assert "Declaración de Lucía Núñez.pdf" in body
        assert "A012-345-678" in body


def test_missing_subject_and_message_id_are_said_and_nothing_is_threaded(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    message = sent(renderer, office, failed_from("no-subject", office))
    assert message["Subject"] == "Auto: NOT FILED - (no subject)"
    assert message["In-Reply-To"] is None
    assert message["References"] is None
    text, _ = parts(message)
    assert "Subject: (no subject)" in text
    assert "Message-ID: (none)" in text
    assert "Documents NOT filed: none attached" in text


def test_headers_make_an_rfc3834_auto_reply_in_the_senders_thread(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    message = sent(renderer, office, failed_from("plain", office))
    original = "<5f1c2a9e-3b7d-4c1a-9d2e-0a1b2c3d4e5f@ruizlaw.example>"
    assert message["From"] == (
        '"ICE OCC Chicago eService notices (no-reply)" <no-reply@occ-chicago.example>'
    )
    assert message["To"] == "ana.ruiz@ruizlaw.example"
    assert message["Subject"] == (
        "Auto: NOT FILED - Notice of Entry of Appearance (E-28) - RUIZ HERNANDEZ, Carlos - "
        "A098-765-432"
    )
    assert message["In-Reply-To"] == original
    assert message["References"] == original
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["Precedence"] == "bulk"
    assert message["Message-ID"].strip() == (
        "<20170912-PREVIEW000.not-filed.ice-occ-chicago@occ-chicago.example>"
    )
    assert message["Date"].datetime == NOW
    assert message["X-Eservice-Gateway-Reference"] == "20170912-PREVIEW000"


def test_rendering_is_reproducible_byte_for_byte(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    failed = failed_from("multipart-attachments", office)
    first = notice_bytes(renderer.render(NoticeKind.NOT_FILED, office, failed, now=NOW))
    again = notice_bytes(renderer.render(NoticeKind.NOT_FILED, office, failed, now=NOW))
    assert first == again
    assert b"\r\n" in first
    assert b"\n" not in first.replace(b"\r\n", b"")


def test_a_renderer_in_use_makes_each_notice_as_a_new_renderer_does(
    settings: GatewaySettings,
) -> None:
    # The renderer keeps its email policies and header classes from notice to notice; none
    # of one notice (a UTF-8 address, another sample's headers) may carry into the next.
    office = office_in(settings)
    cases = [
        (kind, failed_from(name, office, sender=sender))
        for sender in ("josé@abogados.example", "paralegal@lawfirm.example")
        for name, kind in [(n, NoticeKind.NOT_FILED) for n in NOTICE_SAMPLES]
        + [("plain", NoticeKind.ADVISORY)]
    ]
    expected = [
        notice_bytes(NoticeRenderer(notices_of(settings)).render(kind, office, failed, now=NOW))
        for kind, failed in cases
    ]
    used = NoticeRenderer(notices_of(settings))
    for _ in range(2):
        made = [notice_bytes(used.render(kind, office, f, now=NOW)) for kind, f in cases]
        assert made == expected


def test_wire_form_is_seven_bit_and_lines_fit_rfc5322(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings, "es", "en")
    raw = notice_bytes(
        renderer.render(
            NoticeKind.NOT_FILED, office, failed_from("encoded-subject", office), now=NOW
        )
    )
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


# ---------------------------------------------------------------------------------------------
# Hostile input


def test_injection_sample_adds_no_header_no_recipient_and_no_markup(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    failed = failed_from("injection", office)
    raw = notice_bytes(renderer.render(NoticeKind.NOT_FILED, office, failed, now=NOW))
    # Neither the From display name ("Paralegal\r\nBcc: boss@...") nor To, Cc or Reply-To of
    # the original reaches the notice: only the envelope sender does.
    for planted in (b"boss@victim", b"second@victim", b"third@victim", b"replyto@victim"):
        assert planted not in raw
    message = sent(renderer, office, failed)
    assert recipients(message) == ["attacker@evil.example"]
    assert {name.lower() for name in message} <= NOTICE_HEADERS
    assert "\n" not in message["Subject"]
    assert "\u202e" not in message["Subject"]
    # The folded "Bcc:" continuation makes the Message-ID invalid: it is not threaded at all.
    assert message["In-Reply-To"] is None
    text, html = parts(message)
    assert not any(re.match(r"(?i)(bcc|cc|to|content-type):", line) for line in text.splitlines())
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>bold<" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The recorded file name has its path separators replaced; the markup is shown as text.
    assert "&lt;b&gt;bold&lt;_b&gt;.pdf" in html
    assert "\u202e" not in text + html


HOSTILE_SUBJECTS = [
    "Motion\r\nBcc: victim@evil.example",
    "Motion\nTo: second@evil.example",
    "Motion\rCc: third@evil.example",
    "Motion\u2028Bcc: ls@evil.example",
    "Motion\x85Bcc: nel@evil.example",
    "=?utf-8?q?Motion=0D=0ABcc:_encoded@evil.example?=",
    "=?utf-8?b?TW90aW9uDQpCY2M6IGI2NEBldmlsLmV4YW1wbGU=?=",
    "</td></tr></table><a href='https://evil.example/'>Pay the filing fee here</a>",
    '" onmouseover="alert(1)',
    "{{ office.portal_url }} {% raw %}",
]


@pytest.mark.parametrize("subject", HOSTILE_SUBJECTS)
def test_hostile_subject_and_filename_cannot_add_headers_recipients_or_markup(
    settings: GatewaySettings, renderer: NoticeRenderer, subject: str
) -> None:
    office = office_in(settings)
    failed = _failed(subject=subject, attachments=(Attachment(subject, "application/pdf", 10),))
    message = sent(renderer, office, failed)
    assert recipients(message) == ["paralegal@lawfirm.example"]
    assert {name.lower() for name in message} <= NOTICE_HEADERS
    assert "\n" not in message["Subject"]
    text, html = parts(message)
    assert not any(re.match(r"(?i)(bcc|cc|to):", line) for line in text.splitlines())
    assert "<a href='https://evil.example/'>" not in html
    assert "</td></tr></table><a" not in html
    assert '" onmouseover="' not in html


def test_template_syntax_in_a_subject_is_shown_not_evaluated(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    message = sent(renderer, office_in(settings), _failed(subject="{{ office.portal_url }}"))
    assert message["Subject"] == "Auto: NOT FILED - {{ office.portal_url }}"


@pytest.mark.parametrize(
    "message_id",
    [
        "<abc@evil.example>\r\nBcc: x@evil.example",
        "<abc@evil.example> Bcc: x@evil.example",
        "<abc@evil.example>, <def@evil.example>",
        "<a<b@evil.example>",
        "no-angle-brackets@evil.example",
        "<no-at-sign>",
        "<" + "x" * 300 + "@evil.example>",
        "<caf\u00e9@evil.example>",
        "",
    ],
)
def test_malformed_message_id_is_neither_threaded_nor_shown(
    settings: GatewaySettings, renderer: NoticeRenderer, message_id: str
) -> None:
    office = office_in(settings)
    message = sent(renderer, office, _failed(message_id=message_id))
    assert message["In-Reply-To"] is None
    assert message["References"] is None
    assert "Message-ID: (none)" in parts(message)[0]


def test_long_valid_message_id_is_threaded_unencoded(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    message_id = "<" + "k" * 200 + ".outlook@namprd02.prod.outlook.example>"
    office = office_in(settings)
    raw = notice_bytes(
        renderer.render(NoticeKind.NOT_FILED, office, _failed(message_id=message_id), now=NOW)
    )
    assert f"In-Reply-To: {message_id}\r\n".encode() in raw
    assert f"References: {message_id}\r\n".encode() in raw


@pytest.mark.parametrize(
    "sender",
    [
        "",
        "a@b.example, c@d.example",
        "a@b.example\r\nBcc: c@d.example",
        "<a@b.example>",
        '"a b"@b.example',
        "Name <a@b.example>",
        "a@b.example (comment)",
        "no-domain",
        "a@localhost",
        "a@[192.0.2.1]",
        "a\u202e@b.example",
        "group: a@b.example;",
    ],
)
def test_notice_is_refused_unless_the_sender_is_one_plain_address(
    settings: GatewaySettings, renderer: NoticeRenderer, sender: str
) -> None:
    with pytest.raises(NoticeError):
        renderer.render(NoticeKind.NOT_FILED, office_in(settings), _failed(sender=sender), now=NOW)


def test_non_ascii_sender_is_addressed_in_utf8(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    raw = notice_bytes(
        renderer.render(
            NoticeKind.NOT_FILED, office, _failed(sender="josé@abogados.example"), now=NOW
        )
    )
    assert "To: josé@abogados.example\r\n".encode() in raw
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert recipients(parsed) == ["josé@abogados.example"]


def test_naive_times_and_malformed_references_are_refused(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    naive = datetime(2017, 9, 12, 9, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        _failed(received_at=naive)
    with pytest.raises(NoticeError, match="aware"):
        renderer.render(NoticeKind.NOT_FILED, office, _failed(), now=naive)
    with pytest.raises(NoticeError, match="reference"):
        renderer.render(NoticeKind.NOT_FILED, office, _failed(reference="x\r\nBcc: y"), now=NOW)


def test_long_subject_is_capped_and_keeps_its_a_number_in_the_subject_line(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    subject = "Respondent's motion to reopen and reconsider " * 10 + "A123-456-789"
    failed = _failed(subject=subject, a_numbers=("A123-456-789",))
    line = sent(renderer, office_in(settings), failed)["Subject"]
    assert line.startswith("Auto: NOT FILED - Respondent's motion")
    assert "…" in line
    assert line.endswith(" [A123-456-789]")
    assert len(line) <= 18 + 150 + 16


def test_many_attachments_are_listed_up_to_a_cap(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    attachments = tuple(
        Attachment(f"exhibit-{n:02d}.pdf", "application/pdf", 2048) for n in range(30)
    )
    text, html = parts(sent(renderer, office_in(settings), _failed(attachments=attachments)))
    assert "exhibit-24.pdf" in text
    assert "exhibit-25.pdf" not in text
    assert "and 5 more" in text
    assert "and 5 more" in html


def test_long_filename_keeps_its_extension(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    name = "Declaration " * 20 + ".pdf"
    text, _ = parts(
        sent(renderer, office, _failed(attachments=(Attachment(name, "application/pdf", 1),)))
    )
    listed = next(line for line in text.splitlines() if "Declaration" in line and "bytes" in line)
    assert "….pdf (1 bytes)" in listed
    assert len(listed) < 120


def test_long_filename_without_an_extension_is_capped(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    name = "Scan" * 60
    failed = _failed(attachments=(Attachment(name, "application/octet-stream", 1),))
    text, _ = parts(sent(renderer, office_in(settings), failed))
    listed = next(line for line in text.splitlines() if "ScanScan" in line)
    assert listed == "  - " + "Scan" * 24 + "Sca… (1 bytes)"


# ---------------------------------------------------------------------------------------------
# Content: what the attorney reads


def test_default_set_carries_the_founding_cases_guidance(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    text, html = parts(sent(renderer, office, failed_from("plain", office)))
    for body in (text, html):
        assert "not filed" in body.lower()
        assert "September 12, 2017" in body
        assert "https://eserviceregistration.ice.gov/" in body
        assert "verify your account" in body
        assert "A-numbers" in body
        assert "do not have to list every client" in body
        assert "E-28" in body
        assert "USCIS" in body
        for line in office.paper_service["en"]:
            assert line.replace("'", "&#39;") in body or line in body


def test_office_facts_come_from_the_config_not_the_templates(settings: GatewaySettings) -> None:
    office = OfficeSettings.model_validate(
        {
            **settings.offices[0].model_dump(),
            **{
                "name": "springfield",
                "display_name": "Springfield Office of Examples",
                "short_name": "Springfield OE",
                "portal_name": "Springfield filing portal",
                "portal_url": "https://portal.springfield.example/file",
                "registration_url": None,
                "instructions_url": "https://portal.springfield.example/howto",
                "paper_service": ["At the front desk, 1 Main St."],
                "contact": "the clerk, +1 555 0100",
                "retires": date(2031, 3, 4),
                "portal_opens": None,
                "timezone": "Europe/Madrid",
                "addresses": ["filings@springfield.example"],
                "legacy_host": None,
            },
        }
    )
    renderer = NoticeRenderer(notices_of(settings, office))
    text, html = parts(sent(renderer, office, sample_message(office)))
    for body in (text, html):
        assert "https://portal.springfield.example/file" in body
        assert "https://portal.springfield.example/howto" in body
        assert "At the front desk, 1 Main St." in body
        assert "March 4, 2031" in body
        assert "Springfield OE" in body
        assert "CET" in body
        for founding_fact in ("ice.gov", "Van Buren", "2017", "Chicago", "OCC", "ICE "):
            assert founding_fact not in body


SEPARATOR = "=" * 70
CONTACT = {
    "en": "ICE OCC Chicago main line, listed at https://occ-chicago.example/contact",
    "es": "Línea principal de ICE OCC Chicago, indicada en https://occ-chicago.example/contact",
}
QUESTIONS = {"en": "Questions: ", "es": "Consultas: "}
TIPS = {
    "en": (
        "Before your first filing",
        "read the ICE eService portal's instruction sheet",
        "Whenever you serve a document on the immigration court, you must also serve a copy on"
        " ICE OCC Chicago",
    ),
    "es": (
        "Antes de su primera presentación",
        "lea la hoja de instrucciones del portal eService de ICE",
        "Siempre que notifique un documento al tribunal de inmigración, debe notificar también"
        " una copia a ICE OCC Chicago",
    ),
}


def shown(body: str, text: str) -> bool:
    """Whether `text` is in a text or HTML part (where jinja escapes quotes)."""
    return text in body or text.replace("'", "&#39;") in body


@pytest.mark.parametrize("kind", list(NoticeKind))
@pytest.mark.parametrize("lang", ["en", "es"])
def test_notice_names_whom_to_ask_next_to_the_reference(
    settings: GatewaySettings, renderer: NoticeRenderer, kind: NoticeKind, lang: str
) -> None:
    office = office_in(settings, lang)
    failed = sample_message(office, kind)
    text, html = parts(sent(renderer, office, failed, kind))
    footer = text[text.rindex("\n--\n") :]
    assert failed.reference in footer
    assert QUESTIONS[lang] + CONTACT[lang] in footer
    assert QUESTIONS[lang] + CONTACT[lang] in html
    assert html.index(failed.reference, html.index(QUESTIONS[lang]) - 400) < html.index(
        QUESTIONS[lang]
    )


def test_notice_without_a_contact_names_nobody(settings: GatewaySettings) -> None:
    office = settings.offices[0].model_copy(update={"contact": None})
    renderer = NoticeRenderer(notices_of(settings, office))
    text, html = parts(sent(renderer, office, sample_message(office)))
    for body in (text, html):
        assert "Questions:" not in body
        assert "occ-chicago.example/contact" not in body


@pytest.mark.parametrize("kind", list(NoticeKind))
@pytest.mark.parametrize("lang", ["en", "es"])
def test_notice_gives_the_instruction_sheet_and_court_service_tips(
    settings: GatewaySettings, renderer: NoticeRenderer, kind: NoticeKind, lang: str
) -> None:
    office = office_in(settings, lang)
    text, html = parts(sent(renderer, office, sample_message(office, kind), kind))
    for body in (text, html):
        for tip in TIPS[lang]:
            assert shown(body, tip), tip


@pytest.mark.parametrize(
    ("lang", "said", "untrue"),
    [
        (
            "en",
            "Your e-mail was received, but nothing in it was filed or served.",
            "has been received",
        ),
        (
            "es",
            "Su correo se recibió, pero nada de lo que contiene se presentó ni se notificó.",
            "se ha recibido",
        ),
    ],
)
def test_not_filed_notice_says_the_email_was_received_but_nothing_filed_or_served(
    settings: GatewaySettings, renderer: NoticeRenderer, lang: str, said: str, untrue: str
) -> None:
    office = office_in(settings, lang)
    text, html = parts(sent(renderer, office, sample_message(office)))
    for body in (text, html):
        assert said in body
        assert untrue not in body


def test_spanish_notice_shows_the_spanish_office_texts_and_subject_prefix(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings, "es")
    message = sent(renderer, office, sample_message(office))
    assert str(message["Subject"]).strip().startswith("Auto: NO PRESENTADO - Motion to Continue")
    text, html = parts(message)
    for body in (text, html):
        assert "Oficina del Asesor Jurídico Principal de ICE en Chicago" in body
        assert "a través del portal eService de ICE" in body
        for line in (
            "Por correo postal a ICE Office of the Chief Counsel, 525 W. Van Buren St., Suite 701",
            "En el buzón de la OCC en la planta baja de 525 W. Van Buren St., Chicago",
            "En la sala del tribunal, durante la audiencia de la persona demandada",
        ):
            assert line in body


def english_office_texts(settings: GatewaySettings) -> list[str]:
    """The built-in office's English texts that its notices' bodies show."""
    texts = settings.offices[0].texts("en")
    assert texts.contact is not None
    return [texts.display_name, texts.portal_name, *texts.paper_service, texts.contact]


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_no_english_office_text_leaks_into_the_spanish_notice(
    settings: GatewaySettings, renderer: NoticeRenderer, kind: NoticeKind
) -> None:
    office = office_in(settings, "es")
    message = sent(renderer, office, sample_message(office, kind), kind)
    text, html = parts(message)
    english_prefix = settings.notices.subject_prefix_in("en").strip()
    for english in [*english_office_texts(settings), english_prefix]:
        for where in (text, html, str(message["Subject"])):
            assert not shown(where, english), english


def test_no_english_office_text_leaks_into_the_spanish_half_of_a_bilingual_notice(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings, "en", "es")
    text, html = parts(sent(renderer, office, sample_message(office)))
    english_half, spanish_half = text.split(SEPARATOR)
    spanish_html = html[html.index('<div lang="es"') :]
    for english in english_office_texts(settings):
        assert shown(english_half, english), english
        assert not shown(spanish_half, english), english
        assert not shown(spanish_html, english), english


def test_templates_hold_no_office_specific_facts() -> None:
    for path in templates_dir().rglob("*.j2"):
        content = path.read_text(encoding="utf-8")
        for fact in ("ice.gov", "Van Buren", "2017", "Chicago", "OCC", "http"):
            assert fact not in content, f"{path} mentions {fact!r}"


def test_advisory_says_the_address_still_works_until_the_cutoff(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings)
    failed = sample_message(office, NoticeKind.ADVISORY)
    message = sent(renderer, office, failed, NoticeKind.ADVISORY)
    assert message["Subject"] == (
        "Auto: this address stops accepting documents on September 12, 2017 - "
        "Motion to Continue - GARCIA LOPEZ, Maria - A123-456-789"
    )
    assert message["Message-ID"].strip().startswith("<20170911-7K3QM9XD0A.advisory.")
    text, html = parts(message)
    assert text.startswith("FROM SEPTEMBER 12, 2017, E-MAIL TO occ-chicago-filings@")
    assert "was passed on to ICE Office of the Chief Counsel, Chicago as usual" in text
    assert "Arrived: Monday, September 11, 2017, 9:14 AM CDT" in text
    assert "will NOT be filed or served" in html


def test_bilingual_notice_shows_the_first_language_first_and_points_to_the_other(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings, "en", "es")
    text, html = parts(sent(renderer, office, failed_from("plain", office)))
    lines = text.splitlines()
    assert lines[0].startswith("NOT FILED OR SERVED")
    assert lines[1] == "Versión en español más abajo."
    assert text.index("WHAT TO DO NOW") < text.index("QUÉ HACER AHORA")
    assert "Recibido: martes, 12 de septiembre de 2017, 10:02 (CDT)" in text
    assert '<div lang="es" id="notice-es">' in html
    assert 'href="#notice-es"' in html


def test_html_is_self_contained_for_mail_readers(
    settings: GatewaySettings, renderer: NoticeRenderer
) -> None:
    office = office_in(settings, "en", "es")
    _, html = parts(sent(renderer, office, failed_from("multipart-attachments", office)))
    lowered = html.lower()
    for forbidden in ("<img", "<script", "<link", "<style", "src=", "url(", "@import"):
        assert forbidden not in lowered
    assert '<meta name="viewport"' in html
    hrefs = set(re.findall(r'href="([^"]+)"', html))
    assert hrefs == {PORTAL, "https://eserviceregistration.ice.gov/", "#notice-es"}


# ---------------------------------------------------------------------------------------------
# Startup checks and configuration


def test_missing_template_set_is_a_config_error_naming_the_office(
    settings: GatewaySettings,
) -> None:
    office = settings.offices[0].model_copy(update={"templates": "springfield"})
    with pytest.raises(ConfigError) as caught:
        NoticeRenderer(notices_of(settings, office))
    assert caught.value.key == "offices[0].templates"


def test_template_error_is_found_at_startup_not_on_the_first_notice(
    settings: GatewaySettings, tmp_path: Path
) -> None:
    shutil.copytree(templates_dir(), tmp_path, dirs_exist_ok=True)
    body = tmp_path / "default" / "advisory" / "en" / "body.txt.j2"
    body.write_text(body.read_text(encoding="utf-8") + "{{ office.fax_number }}\n", "utf-8")
    with pytest.raises(ConfigError, match="advisory") as caught:
        NoticeRenderer(notices_of(settings), tmp_path)
    assert caught.value.key == "offices[0].templates"


def test_template_syntax_error_names_the_file(settings: GatewaySettings, tmp_path: Path) -> None:
    shutil.copytree(templates_dir(), tmp_path, dirs_exist_ok=True)
    (tmp_path / "default" / "not_filed" / "subject.txt.j2").write_text("{% if %}", "utf-8")
    with pytest.raises(ConfigError, match=r"subject\.txt\.j2"):
        NoticeRenderer(notices_of(settings), tmp_path)


def test_configured_templates_dir_is_used(settings: GatewaySettings, tmp_path: Path) -> None:
    shutil.copytree(templates_dir(), tmp_path, dirs_exist_ok=True)
    (tmp_path / "default" / "not_filed" / "subject.txt.j2").write_text(
        "Custom: {{ message.subject }}", "utf-8"
    )
    custom = load_settings(
        default_config_path(), environ={"GATEWAY_NOTICES__TEMPLATES_DIR": str(tmp_path)}
    )
    office = custom.offices[0]
    message = NoticeRenderer(notices_of(custom)).render(
        NoticeKind.NOT_FILED, office, sample_message(office), now=NOW
    )
    assert message["Subject"].startswith("Custom: Motion to Continue")


def test_notice_settings_default_to_the_server_hostname() -> None:
    settings = load_settings(default_config_path(), environ={})
    bare = settings.model_copy(update={"notices": NoticeSettings()})
    office = bare.offices[0]
    message = NoticeRenderer(notices_of(bare)).render(
        NoticeKind.NOT_FILED, office, sample_message(office), now=NOW
    )
    assert message["From"] == (
        '"eService filing notices (no-reply)" <no-reply@mx.occ-chicago.example>'
    )
    assert message["Message-ID"].endswith("@mx.occ-chicago.example>")


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"GATEWAY_NOTICES__FROM_NAME": "x\ny"}, "notices.from_name"),
        ({"GATEWAY_NOTICES__FROM_ADDRESS": "Name <a@b.example>"}, "notices.from_address"),
        ({"GATEWAY_NOTICES__SUBJECT_PREFIX": "Auto:\r\nBcc: x"}, "notices.subject_prefix"),
        ({"GATEWAY_NOTICES__DKIM_SELECTOR": "bad selector"}, "notices.dkim_selector"),
        ({"GATEWAY_NOTICES__DKIM_DOMAIN": "other.example"}, "notices.dkim_domain"),
        ({"GATEWAY_NOTICES__DKIM_KEY_FILE": "/nonexistent/key.pem"}, "notices.dkim_key_file"),
        ({"GATEWAY_NOTICES__TEMPLATES_DIR": "/nonexistent"}, "notices.templates_dir"),
        ({"GATEWAY_NOTICES__NO_SUCH_KEY": "1"}, "GATEWAY_NOTICES__NO_SUCH_KEY"),
    ],
)
def test_notice_settings_are_validated_naming_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(default_config_path(), environ=environ)
    assert caught.value.key == key


def test_dkim_domain_may_be_a_parent_of_the_from_domain() -> None:
    settings = load_settings(
        default_config_path(),
        environ={
            "GATEWAY_NOTICES__FROM_ADDRESS": "no-reply@notices.occ-chicago.example",
            "GATEWAY_NOTICES__DKIM_DOMAIN": "occ-chicago.example",
        },
    )
    assert settings.notices.dkim_domain == "occ-chicago.example"


def test_office_languages_are_validated(tmp_path: Path) -> None:
    text = default_config_path().read_text(encoding="utf-8")
    for languages, problem in (
        ('["en", "en"]', "twice"),
        ('["fr"]', "'en' or 'es'"),
        ("[]", "at least 1"),
    ):
        config = tmp_path / "gateway.toml"
        config.write_text(text.replace('languages = ["en"]', f"languages = {languages}"), "utf-8")
        with pytest.raises(ConfigError, match=problem) as caught:
            load_settings(config, environ={})
        assert caught.value.key.startswith("offices[0].languages")


def test_failed_message_from_facts_keeps_what_the_notice_needs() -> None:
    facts = MessageFacts(
        size=10,
        sha256="0" * 64,
        message_id="<m@x.example>",
        subject="S",
        date=None,
        from_header=None,
        attachments=(Attachment("a.pdf", "application/pdf", 5),),
        a_numbers=("A123-456-789",),
    )
    failed = FailedMessage.from_facts(
        facts, reference="R1", sender="s@x.example", retired_address="r@y.example", received_at=NOW
    )
    assert (failed.subject, failed.message_id, failed.a_numbers) == (
        "S",
        "<m@x.example>",
        ("A123-456-789",),
    )
    assert failed.attachments == facts.attachments


# ---------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Motion\r\nBcc: x", "Motion Bcc: x"),
        ("a\u2028b\u2029c\x85d\x0be", "a b c d e"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("  many   spaces\t\there ", "many spaces here"),
        ("x" * 30, "x" * 19 + "…"),
        ("Núñez \u2013 日本語", "Núñez \u2013 日本語"),
    ],
)
def test_clean_text_makes_one_safe_line(raw: str, expected: str) -> None:
    assert clean_text(raw, limit=20 if len(raw) == 30 else 200) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain subject", "plain subject"),
        ("=?UTF-8?Q?Moci=C3=B3n?=", "Moción"),
        ("=?utf-8?b?SG9sYQ==?=\r\n =?utf-8?q?_Jos=C3=A9?=", "Hola José"),
        ("=?x-unknown?q?abc?= def", "abc def"),
        ("broken =?utf-8?q?", "broken =?utf-8?q?"),
    ],
)
def test_decode_header_text_is_lenient(raw: str, expected: str) -> None:
    assert decode_header_text(raw) == expected


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "Tuesday, September 12, 2017, 9:14 AM CDT"),
        ("es", "martes, 12 de septiembre de 2017, 9:14 (CDT)"),
    ],
)
def test_datetime_text(lang: str, expected: str) -> None:
    office = load_settings(default_config_path(), environ={}).offices[0]
    moment = datetime(2017, 9, 12, 14, 14, tzinfo=UTC).astimezone(office.zone)
    assert datetime_text(moment, lang) == expected


@pytest.mark.parametrize(
    ("value", "lang", "expected"),
    [
        (datetime(2017, 9, 12, 0, 0, tzinfo=UTC), "en", "September 12, 2017"),
        (datetime(2017, 9, 12, 0, 0, tzinfo=UTC), "es", "12 de septiembre de 2017"),
        (
            datetime(2017, 9, 12, 17, 30, tzinfo=UTC),
            "en",
            "Tuesday, September 12, 2017, 5:30 PM UTC",
        ),
        (
            datetime(2017, 9, 12, 0, 5, tzinfo=UTC),
            "en",
            "Tuesday, September 12, 2017, 12:05 AM UTC",
        ),
    ],
)
def test_cutoff_text_shows_a_time_only_when_there_is_one(
    value: datetime, lang: str, expected: str
) -> None:
    assert cutoff_text(value, lang) == expected
    assert date_text(value.date(), lang) in expected


@pytest.mark.parametrize(
    ("size", "lang", "expected"),
    [
        (0, "en", "0 bytes"),
        (1023, "en", "1023 bytes"),
        (1024, "en", "1.0 KB"),
        (251_904, "en", "246 KB"),
        (1_363_148, "en", "1.3 MB"),
        (1_363_148, "es", "1,3 MB"),
        (30 * 1024 * 1024, "es", "30 MB"),
    ],
)
def test_size_text(size: int, lang: str, expected: str) -> None:
    assert size_text(size, lang) == expected


def _failed(
    *,
    reference: str = "20170912-7K3QM9XD0A",
    sender: str = "paralegal@lawfirm.example",
    received_at: datetime = datetime(2017, 9, 12, 14, 14, tzinfo=UTC),
    subject: str | None = "Motion",
    message_id: str | None = "<m1@lawfirm.example>",
    attachments: tuple[Attachment, ...] = (),
    a_numbers: tuple[str, ...] = (),
) -> FailedMessage:
    return FailedMessage(
        reference=reference,
        sender=sender,
        retired_address="occ-chicago-filings@occ-chicago.example",
        received_at=received_at,
        subject=subject,
        message_id=message_id,
        attachments=attachments,
        a_numbers=a_numbers,
    )


@pytest.mark.parametrize(("lang", "label"), [("en", "Receipt"), ("es", "Constancia")])
def test_a_notice_links_to_its_receipt_page_when_receipts_are_published(
    settings: GatewaySettings, lang: str, label: str
) -> None:
    receipts = "https://eservice-mx.agency.example/ref/"
    office = office_in(settings, lang)
    published = NoticeRenderer(replace(notices_of(settings, office), public_url=receipts))
    failed = failed_from("multipart-attachments", office)
    text, html = parts(sent(published, office, failed))
    url = f"{receipts}{failed.reference}"
    assert f"{label}: {url}\n" in text
    assert f'<a href="{url}">{url}</a>' in html
    unpublished = NoticeRenderer(notices_of(settings, office))
    plain_text, plain_html = parts(sent(unpublished, office, failed))
    assert receipts not in plain_text + plain_html
