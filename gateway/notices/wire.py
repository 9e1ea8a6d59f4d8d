"""A notice as bytes on the wire: the email policies it is built and written with.

render.py builds notices with these policies; DKIM signs, and SMTP sends, what
notice_bytes() makes of them.
"""

from __future__ import annotations

from email import policy as email_policy
from email.headerregistry import BaseHeader, HeaderRegistry, MessageIDHeader
from email.message import EmailMessage
from typing import cast

__all__ = ["notice_bytes", "wire_policy"]


def notice_bytes(message: EmailMessage) -> bytes:
    """The notice as it goes on the wire (CRLF line ends): what DKIM signs and SMTP sends."""
    return message.as_bytes()


class _HeaderClasses(HeaderRegistry):
    """email's header registry, making each header's class once.

    The standard one builds a new class with type() for every header it parses, which was
    a tenth of a notice's rendering; the classes are stateless, so one per name will do.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        made = self._made.get(name.lower())
        if made is None:
            made = self._made[name.lower()] = super().__getitem__(name)
        return made


def wire_policy(*, utf8: bool) -> email_policy.EmailPolicy[EmailMessage]:
    """The policy notices are built and written with: SMTP's (CRLF, 78-column folding), or
    SMTPUTF8's for a non-ASCII envelope; its header classes made once."""
    registry = _HeaderClasses()
    # As unstructured headers, a long msg-id would be RFC 2047-encoded, which breaks threading.
    # (The registry mixes BaseHeader into the class; the stubs do not know that.)
    msg_id = cast("type[BaseHeader]", MessageIDHeader)
    registry.map_to_type("in-reply-to", msg_id)
    registry.map_to_type("references", msg_id)
    base = email_policy.SMTPUTF8 if utf8 else email_policy.SMTP
    return base.clone(header_factory=registry)
