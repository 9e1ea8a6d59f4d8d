"""The facts recorded about a message, from real .eml bytes: well-formed ones built with
EmailMessage, hostile ones written out byte for byte. Pure: no server, no files."""

from __future__ import annotations

import hashlib
import time
from email.message import EmailMessage

import pytest

from gateway.mail.evidence import Attachment, MessageFacts, extract_facts

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 37  # 9,481 bytes: base64 ends in "=" padding
DOCX = b"PK\x03\x04" + bytes(range(251, -1, -1)) * 20  # 5,044 bytes
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def filing(subject: str | None = "Motion to change venue", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Ana Pérez <ana@lawfirm.example>"
    msg["To"] = "eoir-filings@court.example"
    if subject is not None:
        msg["Subject"] = subject
    msg["Date"] = "Tue, 12 Sep 2017 09:15:00 -0500"
    msg["Message-ID"] = "<20170912141500.1234@lawfirm.example>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Dear clerk,\n\nPlease find the motion attached.\n")
    return msg


def with_subject(raw_subject: bytes) -> bytes:
    return b"From: a@example.org\r\nSubject: " + raw_subject + b"\r\n\r\nbody\r\n"


def multipart(*parts: bytes, boundary: bytes = b"b1", close: bool = True) -> bytes:
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return head + body + (b"--" + boundary + b"--\r\n" if close else b"")


def named_part(
    content_type: bytes, disposition: bytes | None = None, body: bytes = b"QUJD"
) -> bytes:
    lines = [b"Content-Type: " + content_type, b"Content-Transfer-Encoding: base64"]
    if disposition is not None:
        lines.append(b"Content-Disposition: " + disposition)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_plain_message_is_recorded_as_sent() -> None:
    raw = filing().as_bytes()
    facts = extract_facts(raw)
    assert facts == MessageFacts(
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        message_id="<20170912141500.1234@lawfirm.example>",
        subject="Motion to change venue",
        date="Tue, 12 Sep 2017 09:15:00 -0500",
        from_header="Ana Pérez <ana@lawfirm.example>",
        headers={},
        received_count=0,
        attachments=(),
        a_numbers=(),
        mime_parts=1,
        truncated=False,
    )


def test_pdf_and_docx_attachments_are_listed_with_exact_decoded_sizes() -> None:
    msg = filing()
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="motion.pdf")
    msg.add_attachment(DOCX, maintype="application", subtype=DOCX_TYPE[12:], filename="brief.docx")
    facts = extract_facts(msg.as_bytes())
    assert facts.attachments == (
        Attachment("motion.pdf", "application/pdf", len(PDF)),
        Attachment("brief.docx", DOCX_TYPE, len(DOCX)),
    )
    assert (facts.mime_parts, facts.truncated) == (4, False)


def test_non_ascii_filename_survives_the_rfc2231_encoding_of_a_real_client() -> None:
    msg = filing()
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="Moción de cambio.pdf")
    assert b"filename*=utf-8''Moci%C3%B3n" in msg.as_bytes()  # the encoding under test
    (attachment,) = extract_facts(msg.as_bytes()).attachments
    assert attachment == Attachment("Moción de cambio.pdf", "application/pdf", len(PDF))


@pytest.mark.parametrize(
    ("content_type", "disposition", "filename"),
    [
        (b"application/pdf", b"attachment; filename=motion.pdf", "motion.pdf"),
        (b'application/pdf; name="motion.pdf"', None, "motion.pdf"),
        (
            b"application/pdf",
            b"attachment; filename*=UTF-8''Moci%C3%B3n%20de%20cambio.pdf",
            "Moción de cambio.pdf",
        ),
        (
            b"application/pdf",
            b"attachment;\r\n filename*0*=UTF-8''Moci%C3%B3n%20de;\r\n filename*1*=%20cambio.pdf",
            "Moción de cambio.pdf",
        ),
        # RFC 2047 inside a quoted filename: not standard, but what Outlook and Gmail send.
        (
            b"application/pdf",
            b'attachment; filename="=?UTF-8?B?TW9jacOzbiBkZSBjYW1iaW8ucGRm?="',
            "Moción de cambio.pdf",
        ),
        (b"application/pdf", 'attachment; filename="Moción.pdf"'.encode(), "Moción.pdf"),
        (b"application/pdf", b'attachment; filename="Moci\xf3n.pdf"', "Moción.pdf"),
        (b"application/pdf", b"attachment; filename*=x-unknown''motion.pdf", "motion.pdf"),
        (b"application/pdf", b"attachment; filename*=idna''motion.pdf", "(unnamed)"),
        (b"application/pdf", b"attachment", "(unnamed)"),
        (b"application/pdf", b'attachment; filename=""', "(unnamed)"),
        (b"application/pdf", b'inline; filename="seal.pdf"', "seal.pdf"),
        (b"application/pdf", b'attachment; filename="../../etc/passwd"', ".._.._etc_passwd"),
        (b"application/pdf", b'attachment; filename="C:\\evil\\x.exe"', "C:_evil_x.exe"),
        (b"application/pdf", b"attachment; filename*=utf-8''a%0D%0Ab%00c.pdf", "a b c.pdf"),
        (
            b"application/pdf",
            b"attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe",
            "invoice fdp.exe",
        ),
        (b"application/pdf", b"attachment; filename=" + b"x" * 400 + b".pdf", "x" * 255),
        (b"APPLICATION/PDF", b"attachment; filename=motion.pdf", "motion.pdf"),
    ],
)
def test_attachment_filenames_are_decoded_and_sanitised(
    content_type: bytes, disposition: bytes | None, filename: str
) -> None:
    raw = multipart(b"Content-Type: text/plain\r\n\r\nhello", named_part(content_type, disposition))
    (attachment,) = extract_facts(raw).attachments
    assert attachment == Attachment(filename, "application/pdf", 3)


@pytest.mark.parametrize(
    "part",
    [
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello",
        b"Content-Type: text/html\r\nContent-Disposition: inline\r\n\r\n<p>hello</p>",
        b"\r\nno headers at all",
    ],
)
def test_unnamed_body_parts_are_not_attachments(part: bytes) -> None:
    facts = extract_facts(multipart(part))
    assert (facts.attachments, facts.mime_parts) == ((), 2)


@pytest.mark.parametrize(
    ("raw_subject", "subject"),
    [
        (b"=?UTF-8?Q?Moci=C3=B3n_urgente?=", "Moción urgente"),
        (b"=?utf-8?B?TW9jacOzbiB1cmdlbnRl?=", "Moción urgente"),
        (b"=?ISO-8859-1?Q?Moci=F3n?= de cambio", "Moción de cambio"),
        (b"Re: =?utf-8?q?Moci=C3=B3n?= =?utf-8?q?_de?= cambio", "Re: Moción de cambio"),
        (b"=?utf-8?q?Moci=C3=B3n?=\r\n =?iso-8859-1?q?_r=E1pida?=", "Moción rápida"),
        (b"=?utf-8?B?TW9jacM=?= =?utf-8?B?s24=?=", "Moción"),  # one character, two words
        (b"=?utf-8*es?q?Moci=C3=B3n?=", "Moción"),  # RFC 2231 language tag
        (b"=?utf-8?b?TW9jacOzbg?=", "Moción"),  # padding left off
        (b"Motion\r\n to change\r\n\tvenue", "Motion to change venue"),
        ("Moción cruda".encode(), "Moción cruda"),  # RFC 6532 UTF-8 header
        (b"Moci\xf3n en latin-1", "Moción en latin-1"),
        ("café =?utf-8?q?cr=C3=A8me?=".encode(), "café crème"),
        # Broken or unknown: kept as written, or decoded as UTF-8; never an exception.
        (b"=?utf-8?b?A?=", "=?utf-8?b?A?="),
        (b"=?utf-8?q?unclosed", "=?utf-8?q?unclosed"),
        (b"=?x-unknown?q?motion?=", "motion"),
        (b"=?idna?q?motion?=", "motion"),
        (b"=?base64?q?motion?=", "motion"),
        (b"=?utf-8?b?A?= =?utf-8?q?ok?=", "=?utf-8?b?A?= ok"),
        (b"", ""),
    ],
)
def test_subject_is_rfc2047_decoded_and_never_raises(raw_subject: bytes, subject: str) -> None:
    assert extract_facts(with_subject(raw_subject)).subject == subject


@pytest.mark.parametrize(
    ("raw_subject", "subject"),
    [
        (b"=?utf-8?q?Motion=0D=0ABcc:_victim@example.org?=", "Motion Bcc: victim@example.org"),
        (b"a\x00b\x1bc\x7fd\x08e", "a b c d e"),
        (b"=?utf-8?q?a=C2=85b=C2=9Bc?=", "a b c"),  # C1 controls: NEL, CSI
        (b"=?utf-8?q?invoice=E2=80=AEfdp.exe?=", "invoice fdp.exe"),  # right-to-left override
        (b"=?utf-8?q?a=E2=81=A6b=E2=80=8Fc?=", "a b c"),  # isolate, right-to-left mark
        (b"=?utf-8?q?a=E2=80=A8b?=", "a b"),  # line separator
        (b"=?unicode_escape?q?a=5Cud800b?=", "a b"),  # a lone surrogate cannot be stored
        (b"tab\tand   spaces ", "tab and spaces"),
    ],
)
def test_control_characters_in_the_subject_become_spaces(raw_subject: bytes, subject: str) -> None:
    assert extract_facts(with_subject(raw_subject)).subject == subject


def test_long_subject_and_from_are_capped_at_one_line_of_998_characters() -> None:
    raw = b"From: " + b"f" * 5000 + b"\r\nSubject: " + b"s" * 5000 + b"\r\n\r\n"
    facts = extract_facts(raw)
    assert (facts.subject, facts.from_header) == ("s" * 998, "f" * 998)


def test_from_header_is_decoded_like_the_subject() -> None:
    raw = b"From: =?utf-8?q?Ana_P=C3=A9rez?=\r\n\t<ana@example.org>\r\n\r\n"
    assert extract_facts(raw).from_header == "Ana Pérez <ana@example.org>"


def test_missing_subject_message_id_and_date_are_none() -> None:
    facts = extract_facts(b"From: a@example.org\r\nTo: b@example.org\r\n\r\nhello\r\n")
    assert (facts.subject, facts.message_id, facts.date) == (None, None, None)
    assert facts.from_header == "a@example.org"


def test_date_and_message_id_are_recorded_as_sent_not_parsed() -> None:
    raw = b"Date: 31 Feb 1999 25:61 +9999\r\nMessage-ID:   not-an-id   \r\n\r\n"
    facts = extract_facts(raw)
    assert (facts.date, facts.message_id) == ("31 Feb 1999 25:61 +9999", "not-an-id")


def test_alternative_nested_in_mixed_is_walked() -> None:
    msg = filing()
    msg.add_alternative("<p>Dear clerk,</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="motion.pdf")
    assert b"multipart/alternative" in msg.as_bytes()
    facts = extract_facts(msg.as_bytes())
    # mixed[alternative[plain, html], pdf]
    assert facts.attachments == (Attachment("motion.pdf", "application/pdf", len(PDF)),)
    assert facts.mime_parts == 5


def test_forwarded_message_is_one_attachment_and_not_opened() -> None:
    inner = filing("The original filing")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="motion.pdf")
    outer = filing("Fwd: The original filing")
    outer.add_attachment(inner)
    facts = extract_facts(outer.as_bytes())
    (forwarded,) = facts.attachments
    assert (forwarded.filename, forwarded.content_type) == ("(forwarded message)", "message/rfc822")
    assert forwarded.size > len(PDF)
    assert facts.mime_parts == 3


def test_forwarded_message_keeps_its_own_filename() -> None:
    part = b'Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename="a.eml"'
    raw = multipart(part + b"\r\n\r\nSubject: x\r\n\r\nhi")
    assert extract_facts(raw).attachments == (Attachment("a.eml", "message/rfc822", 16),)


def test_digest_parts_default_to_forwarded_messages() -> None:
    raw = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n"
        b"--d\r\nContent-Type: text/plain\r\n\r\nnot a message\r\n"
        b"--d--\r\n"
    )
    assert extract_facts(raw).attachments == (
        Attachment("(forwarded message)", "message/rfc822", 21),
    )


@pytest.mark.parametrize(
    ("subject", "a_numbers"),
    [
        ("A12345678", ("A012345678",)),
        ("A123456789", ("A123456789",)),
        ("A-123-456-789", ("A123456789",)),
        ("A 123 456 789", ("A123456789",)),
        ("A#123456789", ("A123456789",)),
        ("A# 123-456-789", ("A123456789",)),
        ("A-12-345-678", ("A012345678",)),
        ("a123456789", ("A123456789",)),
        ("Motion (A123456789) for respondent", ("A123456789",)),
        ("Re: A123456789 and A-123-456-789, A 987 654 321", ("A123456789", "A987654321")),
        ("ref 123456789", ()),
        ("#123456789", ()),
        ("A1234567", ()),  # 7 digits
        ("A1234567890", ()),  # 10 digits
        ("DATA123456789", ()),  # the A belongs to a word
        ("A-123-456789", ()),  # mixed grouping
        ("A 123 456 7890", ()),
        ("12345678A", ()),
        ("A\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19", ()),  # fullwidth digits
    ],
)
def test_a_numbers_are_found_in_the_subject_and_normalised(
    subject: str, a_numbers: tuple[str, ...]
) -> None:
    assert extract_facts(filing(subject).as_bytes()).a_numbers == a_numbers


def test_a_numbers_are_read_from_the_decoded_subject_and_capped_at_20() -> None:
    encoded = extract_facts(with_subject(b"=?utf-8?q?Moci=C3=B3n_A-123-456-789?="))
    assert encoded.a_numbers == ("A123456789",)
    many = " ".join(f"A{n:09d}" for n in range(30))
    assert extract_facts(filing(many).as_bytes()).a_numbers == tuple(f"A{n:09d}" for n in range(20))


def test_ten_thousand_nested_multiparts_stop_at_the_depth_cap_quickly() -> None:
    levels = [b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"]
    for n in range(1, 10_000):
        levels.append(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (n - 1, n))
    levels.extend(b"--b%d--\r\n" % n for n in reversed(range(10_000)))
    started = time.perf_counter()
    facts = extract_facts(b"".join(levels))
    assert time.perf_counter() - started < 2.0
    # The root and 99 nested multiparts fill the 100-boundary stack; the next one stops it.
    assert (facts.mime_parts, facts.truncated) == (101, True)


def test_five_thousand_sibling_parts_stop_at_the_part_cap() -> None:
    raw = multipart(*[named_part(b"application/pdf; name=p%d.pdf" % n) for n in range(5_000)])
    facts = extract_facts(raw)
    assert (facts.mime_parts, facts.truncated, len(facts.attachments)) == (1000, True, 999)
    assert facts.attachments[-1] == Attachment("p998.pdf", "application/pdf", 3)


def test_a_message_at_the_part_cap_is_not_truncated() -> None:
    facts = extract_facts(multipart(*[b"\r\nx"] * 999))
    assert (facts.mime_parts, facts.truncated) == (1000, False)


def test_received_headers_are_counted() -> None:
    msg = filing()
    for hop in range(3):
        msg["Received"] = f"from relay{hop}.example by mx.court.example; Tue, 12 Sep 2017"
    assert extract_facts(msg.as_bytes()).received_count == 3


def test_only_the_headers_decisions_need_are_kept_with_their_first_value() -> None:
    msg = filing(
        Auto_Submitted="auto-replied",
        Precedence="bulk",
        List_Id="Immigration bar <bar.lists.example>",
        List_Unsubscribe="<mailto:leave@lists.example>",
        Return_Path="<bounce@lists.example>",
        X_Eservice_Gateway_Notice="retired-address",
        X_Mailer="Outlook",
    )
    msg["Precedence"] = "list"
    facts = extract_facts(msg.as_bytes())
    assert facts.headers == {
        "auto-submitted": "auto-replied",
        "precedence": "bulk",
        "list-id": "Immigration bar <bar.lists.example>",
        "list-unsubscribe": "<mailto:leave@lists.example>",
        "return-path": "<bounce@lists.example>",
        "x-eservice-gateway-notice": "retired-address",
    }


def test_our_loop_marker_is_kept_however_many_list_headers_come_first() -> None:
    raw = b"".join(b"List-X%d: y\r\n" % n for n in range(50))
    facts = extract_facts(raw + b"X-Eservice-Gateway-Notice: retired-address\r\n\r\n")
    assert facts.headers["x-eservice-gateway-notice"] == "retired-address"
    assert len(facts.headers) == 17  # 16 list-* names, then the cap


def test_kept_header_values_are_unfolded() -> None:
    raw = (
        b"References: <a@example.org>\r\n\t<b@example.org>\r\nIn-Reply-To: <b@example.org>\r\n\r\n"
    )
    assert extract_facts(raw).headers == {
        "references": "<a@example.org> <b@example.org>",
        "in-reply-to": "<b@example.org>",
    }


@pytest.mark.parametrize(
    ("raw", "attachments", "mime_parts"),
    [
        pytest.param(
            multipart(named_part(b"application/pdf; name=a.pdf")).replace(b"\r\n", b"\n"),
            (Attachment("a.pdf", "application/pdf", 3),),
            2,
            id="lf-only-line-ends",
        ),
        pytest.param(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\nThis is a MIME message.\r\n"
            b"--b\r\nContent-Type: text/plain; name=a.txt\r\n\r\nhello\r\n--b--\r\n"
            b"epilogue\r\n--b\r\nContent-Type: text/plain; name=ghost.txt\r\n\r\nx\r\n",
            (Attachment("a.txt", "text/plain", 5),),
            2,
            id="preamble-and-epilogue",
        ),
        pytest.param(
            multipart(
                b"Content-Type: multipart/alternative; boundary=bb\r\n\r\n"
                b"--bb\r\nContent-Type: text/plain; name=a.txt\r\n\r\nab\r\n"
                b"--bbb\r\n--bb--",
                b"Content-Type: text/plain; name=b.txt\r\n\r\nabc",
                boundary=b"b",
            ),
            (Attachment("a.txt", "text/plain", 9), Attachment("b.txt", "text/plain", 3)),
            4,
            id="boundaries-that-are-prefixes-of-each-other",
        ),
        pytest.param(
            multipart(
                b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
                b"--inner\r\nContent-Type: text/plain\r\n\r\nnever closed",
                named_part(b"application/pdf; name=a.pdf"),
            ),
            (Attachment("a.pdf", "application/pdf", 3),),
            4,
            id="inner-multipart-ended-by-the-outer-boundary",
        ),
        pytest.param(
            multipart(named_part(b"application/pdf; name=a.pdf"), close=False),
            (Attachment("a.pdf", "application/pdf", 3),),
            2,
            id="unterminated-root",
        ),
        pytest.param(
            b"Content-Type: multipart/mixed\r\n\r\n--b\r\nContent-Type: text/plain; name=a\r\n",
            (),
            1,
            id="missing-boundary-parameter",
        ),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n\r\nx\r\n----\r\n',
            (),
            1,
            id="empty-boundary-parameter",
        ),
        pytest.param(
            multipart(b"Content-Type: application/pdf; name=a.pdf", b"\r\nx"),
            (Attachment("a.pdf", "application/pdf", 0),),
            3,
            id="part-with-headers-and-no-body",
        ),
        pytest.param(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \t\r\n"
            b"Content-Type: text/plain; name=a.txt\r\n\r\nhello\r\n--b-- \r\n",
            (Attachment("a.txt", "text/plain", 5),),
            2,
            id="transport-padding-after-boundaries",
        ),
        pytest.param(
            multipart(
                b"Content-Type: text/plain; name=a.txt\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db=\r\nc"
            ),
            (Attachment("a.txt", "text/plain", 4),),
            2,
            id="quoted-printable-size",
        ),
        pytest.param(
            multipart(
                b"Content-Type: text/x-sql; name=dump.sql\r\n\r\n" + b"-- a comment\r\n" * 200,
                named_part(b"application/pdf; name=a.pdf"),
            ),
            (Attachment("dump.sql", "text/x-sql", 2800), Attachment("a.pdf", "application/pdf", 3)),
            3,
            id="many-dash-lines-that-are-not-boundaries",
        ),
        pytest.param(
            multipart(
                b"Content-Type: text/plain; name=a.txt\r\n\r\n" + b"--x\r\n" * 100, close=False
            )
            + b"--b1--",
            (Attachment("a.txt", "text/plain", 500),),
            2,
            id="close-delimiter-at-the-very-end-after-many-dash-lines",
        ),
        pytest.param(
            multipart(
                b"Content-Type: text/plain; name=a.txt\r\n\r\n--" + b"b1" * 1000 + b"\r\nok",
                close=False,
            )
            + b"--zz",
            (Attachment("a.txt", "text/plain", 2012),),
            2,
            id="overlong-and-final-dash-lines-are-not-boundaries",
        ),
        pytest.param(
            named_part(b"application/pdf", b"attachment; filename=a.pdf", b"QUJD\r\nRUY=\r\n"),
            (Attachment("a.pdf", "application/pdf", 5),),
            1,
            id="single-part-message-that-is-an-attachment",
        ),
    ],
)
def test_mime_structure_is_walked_as_rfc2046_and_real_clients_write_it(
    raw: bytes, attachments: tuple[Attachment, ...], mime_parts: int
) -> None:
    facts = extract_facts(raw)
    assert (facts.attachments, facts.mime_parts, facts.truncated) == (
        attachments,
        mime_parts,
        False,
    )


def test_oversized_header_block_is_cut_and_marked_truncated() -> None:
    facts = extract_facts(b"Subject: x\r\n" + b"X-Filler: y\r\n" * 30_000 + b"\r\nbody")
    assert (facts.subject, facts.truncated) == ("x", True)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"\n\n\n",
        b"no header separator at all",
        b"\x00\xff\xfe" * 1000,
        bytes(range(256)) * 64,
        b":\r\n: \r\n \r\n\r\n",
        b" leading continuation\r\nSubject: x\r\n\r\n",
        b"From mbox-line Tue Sep 12 2017\r\nSubject: \xc3\x28\xff\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n" * 2000,
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/x;"
        b" boundary*=idna''b\r\n\r\n--b--",
        b"Content-Type: multipart/mixed; boundary*0*=utf-8''%E2%82; boundary*1*=%AC\r\n\r\n",
        b"Content-Type: ;;;===;\r\nContent-Disposition: attachment; filename*0*=;;\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=" + b"b" * 5000 + b"\r\n\r\n--b\r\n",
        b"Subject: =?=?=?utf-8?q?=?=?==?b??=\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + b"X: y\r\n" * 5000,
    ],
)
def test_garbage_never_raises_and_yields_printable_one_line_values(raw: bytes) -> None:
    facts = extract_facts(raw)
    assert facts.size == len(raw)
    texts = [facts.subject, facts.from_header, facts.message_id, facts.date]
    texts += [*facts.headers.values(), *(a.filename for a in facts.attachments)]
    for text in filter(None, texts):
        text.encode("utf-8")  # no lone surrogates
        assert "\n" not in text
        assert "\r" not in text
