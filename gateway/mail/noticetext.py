"""A kept notice as its reader saw it, for a page that must not show what redaction hides.

The bytes as sent are the evidence (`gateway audit notice` writes them, matching their
SHA-256), but they are MIME: a subject quoted in an RFC 2047 encoded-word, or a body in
quoted-printable with a soft line break in the middle of an A-number, would slip past a
redactor that reads the raw text. So the text is decoded first (headers, then every text
part as its charset says) and redacted after. Pure: bytes in, text out.
"""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy
from email.message import Message

from gateway.mail.redaction import Redactor

__all__ = ["readable_notice"]

# Shown for every leaf part that is not text: the notice itself has none, but a kept bounce
# or an operator's resend might.
_OTHER = "({size:,} bytes of {type}{name})"


def readable_notice(data: bytes, redactor: Redactor) -> str:
    """The headers and the text of every part, decoded, then redacted as `redactor` says."""
    message = message_from_bytes(data, policy=email_policy.default)
    lines = _header_lines(message)
    for part in message.walk():
        if part.is_multipart():
            continue
        lines.append("")
        if part is not message and part.get("Content-Type") is None:
            # A delivery-status block (RFC 3464 §2.1): fields, no body.
            lines.extend(_header_lines(part))
            continue
        lines.append(f"--- {part.get_content_type()} ---")
        lines.append(_leaf_text(part))
    return redactor.text("\n".join(lines))


def _header_lines(part: Message) -> list[str]:
    # policy.default gives each value decoded and unfolded (RFC 2047, RFC 5322 §2.2.3).
    return [f"{name}: {value}" for name, value in part.items()]


def _leaf_text(part: Message) -> str:
    payload = part.get_payload(decode=True)  # a leaf's bytes, decoded from its transfer encoding
    body = payload if isinstance(payload, bytes) else b""
    if part.get_content_maintype() != "text":
        name = part.get_filename()
        return _OTHER.format(
            size=len(body), type=part.get_content_type(), name=f", {name}" if name else ""
        )
    charset = part.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, "replace")
    except LookupError:  # a charset Python does not know: the bytes as UTF-8, marked
        return body.decode("utf-8", "replace")
