"""A kept notice shown decoded and redacted: what the console shows of the notice as sent."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from gateway.mail.noticetext import readable_notice
from gateway.mail.redaction import A_NUMBER_MARK, Redactor

A_NUMBERS = Redactor(a_numbers=True)
SUBJECT = "Re: Moción de continuación, A 123 456 789, señora Pérez"


def _notice() -> bytes:
    """A notice shaped as ours are: the filing's subject quoted, text and HTML in QP."""
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "OCC eService <no-reply@occ.example>"
    message["To"] = "attorney@lawfirm.example"
    message["Subject"] = f"NOT FILED: {SUBJECT}"
    # A long line, so that quoted-printable breaks it with a soft line break inside the number.
    filler = "Your message of 13 September 2017 about the case was not filed: A-987-654-321."
    message.set_content(filler + " Please use the eService portal.\n", cte="quoted-printable")
    message.add_alternative(
        f"<p>{filler}</p><p>Please use the eService portal.</p>\n",
        subtype="html",
        cte="quoted-printable",
    )
    return message.as_bytes()


def test_the_raw_bytes_hide_the_a_numbers_from_a_plain_text_redactor() -> None:
    # Why decoding comes first: the subject's number is folded across two lines and the HTML's
    # is split by a soft line break, so redacting the wire text leaves both readable.
    raw = _notice()
    redacted_raw = A_NUMBERS.text(raw.decode("ascii"))
    as_read = readable_notice(redacted_raw.encode("ascii"), Redactor())
    assert "A 123 456 789" in as_read
    assert "A-987-654-321" in as_read


def test_headers_and_text_are_decoded_then_redacted() -> None:
    shown = readable_notice(_notice(), A_NUMBERS)
    assert "Subject: NOT FILED: Re: Moción de continuación, [A-number], señora Pérez" in shown
    assert "456" not in shown
    assert "654" not in shown
    assert shown.count(A_NUMBER_MARK) == 3  # the subject, the text, the HTML
    assert "--- text/plain ---" in shown
    assert "--- text/html ---" in shown
    assert "Please use the eService portal." in shown


def test_without_redaction_the_text_is_as_the_reader_saw_it() -> None:
    shown = readable_notice(_notice(), Redactor())
    assert "A 123 456 789" in shown
    assert shown.count("A-987-654-321") == 2


def test_a_base64_bounce_and_its_delivery_status_fields() -> None:
    report = MIMEMultipart("report", report_type="delivery-status")
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.attach(MIMEText("Your message (A123456789) could not be delivered.\n", "plain", "utf-8"))
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; mx.occ.example"
    per_recipient["Final-Recipient"] = "rfc822; clerk@court.example"
    per_recipient["Status"] = "5.1.1"
    status = MIMEBase("message", "delivery-status")
    status.set_payload([per_message, per_recipient])
    report.attach(status)
    headers = MIMEBase("text", "rfc822-headers")
    headers.set_payload("Subject: Motion A123456789\r\n")
    report.attach(headers)
    data = report.as_bytes(policy=policy.SMTP)
    assert b"A123456789) could not" not in data  # the text part is base64 on the wire

    shown = readable_notice(data, A_NUMBERS)

    assert "Your message ([A-number]) could not be delivered." in shown
    assert "Reporting-MTA: dns; mx.occ.example" in shown
    assert "Final-Recipient: rfc822; clerk@court.example\nStatus: 5.1.1" in shown
    assert "--- text/rfc822-headers ---\nSubject: Motion [A-number]" in shown
    assert "123456789" not in shown


def test_a_charset_python_does_not_know_is_read_as_utf8() -> None:
    data = (
        b"Subject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="x-office-legacy"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"QSAxMjMgNDU2IDc4OSwgbW9jacOzbg==\r\n"  # "A 123 456 789, moción"
    )
    assert readable_notice(data, A_NUMBERS).endswith("--- text/plain ---\n[A-number], moción")


def test_a_message_without_mime_headers_is_one_plain_text_part() -> None:
    data = b"Subject: plain\r\n\r\nFile A-123-456-789 again.\r\n"
    assert readable_notice(data, A_NUMBERS) == (
        "Subject: plain\n\n--- text/plain ---\nFile [A-number] again.\r\n"
    )


def test_parts_that_are_not_text_are_named_not_shown() -> None:
    message = EmailMessage()
    message["Subject"] = "resend"
    message.set_content("See attached.\n")
    message.add_attachment(
        b"%PDF-1.7 A123456789",
        maintype="application",
        subtype="pdf",
        filename="motion-A123456789.pdf",
    )
    message.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream")
    shown = readable_notice(message.as_bytes(), A_NUMBERS)
    assert "(19 bytes of application/pdf, motion-[A-number].pdf)" in shown
    assert "(2 bytes of application/octet-stream)" in shown
    assert "%PDF" not in shown
