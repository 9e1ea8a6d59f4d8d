"""Every SMTP reply the gateway sends: the only module where reply strings exist.

Each reply carries an RFC 3463 enhanced status code; aiosmtpd's own replies are rewritten to
carry one too (RFC 2034 §3). Decisions come from elsewhere as values; this module only says
them, in 7-bit text within RFC 5321's 512-octet line.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import OfficeSettings
from gateway.errors import ConfigError
from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import Reply, ReplyKind

__all__ = [
    "MAX_REPLY",
    "REPLY_BAD_RECIPIENT",
    "REPLY_BAD_SENDER",
    "REPLY_CHANGED",
    "REPLY_GONE",
    "REPLY_IDLE_TIMEOUT",
    "REPLY_INTERNAL",
    "REPLY_LOOP",
    "REPLY_NO_AUTH",
    "REPLY_NO_MAILBOX",
    "REPLY_RECIPIENT_OK",
    "REPLY_RELAY_DENIED",
    "REPLY_SENDER_OK",
    "REPLY_SEPARATE_TRANSACTION",
    "REPLY_SESSION_TIMEOUT",
    "REPLY_SHUTTING_DOWN",
    "REPLY_SIZE_EXCEEDED",
    "REPLY_STORE_FAILED",
    "REPLY_TOO_MANY_CONNECTIONS",
    "REPLY_TOO_MANY_RECIPIENTS",
    "REPLY_VRFY",
    "accepted_reply",
    "check_replies",
    "cite",
    "line_too_long_reply",
    "oversize_reply",
    "rate_limited_reply",
    "reply_code",
    "reply_for",
    "retired_reply",
    "retired_separate_transaction_reply",
    "retired_too_many_recipients_reply",
    "sender_check_failed_reply",
    "unknown_mailbox_reply",
    "with_enhanced_code",
]

# RFC 5321 §4.2: a reply line is at most 512 octets including CRLF.
MAX_REPLY = 510
_SAMPLE_REFERENCE = "20991231-ZZZZZZZZZZZZZ"

# aiosmtpd's own replies, rewritten to carry RFC 3463 enhanced codes (RFC 2034 §3: every
# 2xx/4xx/5xx except the greeting and the HELO/EHLO replies).
_STOCK_REPLIES = {
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "500 Error: bad syntax": "500 5.5.2 Syntax error",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    "500 Error: strict ASCII mode": "500 5.6.7 Non-ASCII data needs SMTPUTF8",
    "552 Error: Too much mail data": "552 5.3.4 Message too big for this system",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds the fixed limit"
    ),
    "503 Error: need MAIL command": "503 5.5.1 Need MAIL command first",
    "503 Error: need RCPT command": "503 5.5.1 Need RCPT command first",
    "503 Error: nested MAIL command": "503 5.5.1 Sender already given",
    "503 Error: send HELO first": "503 5.5.1 Send HELO or EHLO first",
    "503 Error: send EHLO first": "503 5.5.1 Send EHLO first",
    "554 Command refused due to lack of security": "554 5.7.0 TLS negotiation failed",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "502 EXPN not implemented": "502 5.5.1 EXPN not available",
    "555 MAIL FROM parameters not recognized or not implemented": (
        "555 5.5.4 MAIL FROM parameters not recognized"
    ),
    "555 RCPT TO parameters not recognized or not implemented": (
        "555 5.5.4 RCPT TO parameters not recognized"
    ),
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": "501 5.5.4 BODY must be 7BIT or 8BITMIME",
    "501 Error: SMTPUTF8 takes no arguments": "501 5.5.4 SMTPUTF8 takes no arguments",
    "501 Error: SMTPUTF8 disabled": "501 5.5.4 SMTPUTF8 not available",
}
_STOCK_PREFIXES = (
    ("501 Syntax: ", "501 5.5.4 Syntax: "),
    ('500 Error: command "', '500 5.5.1 Command not recognized: "'),
    ("250 Syntax: ", "250 2.0.0 Syntax: "),
    ("250 Supported commands: ", "250 2.0.0 Supported commands: "),
    ("501 Supported commands: ", "501 5.5.4 Supported commands: "),
)

REPLY_SENDER_OK = "250 2.1.0 Sender OK"
REPLY_RECIPIENT_OK = "250 2.1.5 Recipient OK"
REPLY_BAD_SENDER = "553 5.1.7 Bad sender address syntax"
REPLY_BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
REPLY_RELAY_DENIED = "554 5.7.1 Relay access denied"
REPLY_NO_MAILBOX = "550 5.1.1 No such mailbox here"
REPLY_GONE = "550 5.1.1 This address no longer exists"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_SEPARATE_TRANSACTION = "452 4.5.3 Send to this recipient in a separate transaction"
REPLY_NO_AUTH = "502 5.5.1 AUTH not available on this server"
REPLY_VRFY = "252 2.5.0 Cannot VRFY; send a message and the reply will tell"
REPLY_INTERNAL = "451 4.3.0 Temporary local problem, please try again later"
REPLY_STORE_FAILED = "451 4.3.0 Temporary local problem, message not accepted; try again later"
REPLY_CHANGED = "451 4.3.0 Recipient status changed during the transaction; please try again"

REPLY_SIZE_EXCEEDED = "552 5.3.4 Message size exceeds the fixed limit"
REPLY_LOOP = "554 5.4.6 Mail loop detected; this message is not answered"
REPLY_TOO_MANY_CONNECTIONS = "421 4.3.2 Too many connections, try again later"
REPLY_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
REPLY_IDLE_TIMEOUT = "421 4.4.2 Idle too long, closing connection"
REPLY_SESSION_TIMEOUT = "421 4.4.2 Session time limit reached, closing connection"


def cite(reference: str, public_url: str | None = None) -> str:
    """How a reply names its record: the reference, and its receipt page when one is published
    ([lookup] public_url)."""
    return f"ref {reference}" if public_url is None else f"ref {reference}, {public_url}{reference}"


def retired_reply(office: OfficeSettings, reference: str, *, public_url: str | None = None) -> str:
    """The 550 for a retired address: what happened, where to file instead, our reference."""
    retired_on = office.lifecycle.retires.astimezone(office.zone).date().isoformat()
    return (
        f"550 5.1.6 NOT FILED: this address was retired on {retired_on};"
        f" {_nothing_filed(office)} {_file_electronically(office)}"
        f" ({cite(reference, public_url)})"
    )


def accepted_reply(
    reference: str,
    office: OfficeSettings | None,
    *,
    notice_follows: bool = True,
    public_url: str | None = None,
) -> str:
    """The 250 at the end of DATA; when the message is not filed, it says so.

    `notice_follows` False: no notice will be sent (suppressed, say), so none is promised.
    """
    if office is None:
        receipt = "" if public_url is None else f" ({public_url}{reference})"
        return f"250 2.0.0 Queued as {reference}{receipt}"
    promise = "; a notice follows" if notice_follows else ""
    return (
        f"250 2.0.0 Received but NOT FILED: {office.short_name} takes electronic filings only"
        f" via {office.portal_url}{promise} ({cite(reference, public_url)})"
    )


def unknown_mailbox_reply(
    office: OfficeSettings | None, reference: str, *, public_url: str | None = None
) -> str:
    """The 550 for an unknown local part in a served domain: perhaps a typo of a filing
    address, or a reply to the notices' no-reply address. It is on record, hence `reference`."""
    if office is None:
        return REPLY_NO_MAILBOX
    reply = (
        f"{REPLY_NO_MAILBOX}; nothing was filed. Electronic filings to {office.short_name} go"
        f" only via {office.portal_url} ({cite(reference, public_url)})"
    )
    return _with_contact(reply, office)


def oversize_reply(
    office: OfficeSettings | None, reference: str, *, public_url: str | None = None
) -> str:
    """The 552 for a message over the size limit (RFC 5321 §4.5.3.1.10), declared at MAIL and
    answered at RCPT, or found in DATA; None: not a filing (relayed or postmaster mail)."""
    # RFC 3463 X.3.4 "Message too big for system": the limit is ours, not the mailbox's.
    if office is None:
        return f"552 5.3.4 Message too big for this system ({cite(reference, public_url)})"
    return (
        f"552 5.3.4 NOT FILED: message too big for this system; {_nothing_filed(office)}"
        f" {_file_electronically(office)} ({cite(reference, public_url)})"
    )


def line_too_long_reply(reference: str, *, public_url: str | None = None) -> str:
    """The 554 for mail to be relayed with a line over 1000 octets (RFC 5321 §4.5.3.1.6)."""
    # Not 500 5.5.2: the fault is in the message content, not in a command's syntax, and it is
    # answered after the end of DATA, where RFC 5321 §4.3.2 lists 554, not 500. RFC 3463 X.6.0
    # "Other or undefined media error" is the content-format code that fits. Filings with a
    # long line are not refused for it (nothing is passed on), so this names no portal.
    return (
        "554 5.6.0 Line over 1000 octets (RFC 5321 4.5.3.1.6); not relayed"
        f" ({cite(reference, public_url)})"
    )


def _nothing_filed(office: OfficeSettings) -> str:
    return f"nothing was filed with or served on {office.short_name}."


def _file_electronically(office: OfficeSettings) -> str:
    # The portal is the only *electronic* way; paper service, when configured, still works.
    text = f"File electronically only via {office.portal_url}"
    return f"{text}; paper service still accepted" if any(office.paper_service.values()) else text


def _with_contact(reply: str, office: OfficeSettings) -> str:
    contact = _reply_contact(office)
    longer = f"{reply}; questions: {contact}"
    return longer if contact is not None and len(longer) <= MAX_REPLY else reply


def _reply_contact(office: OfficeSettings) -> str | None:
    """The contact as SMTP can carry it: English if given, else the first language; ASCII only."""
    if office.contact is None:
        return None
    contact = office.contact.get("en") or office.contact[office.languages[0]]
    return contact if contact.isascii() else None


_SCOPE_WORDS = {
    NoticeScope.SENDER: "from this sender",
    NoticeScope.DOMAIN: "from this sender's domain",
    NoticeScope.CLIENT: "from this client address",
    NoticeScope.TOTAL: "in all",
}


def _not_filed(office: OfficeSettings | None) -> str:
    # A temporary failure may be all a sender's MTA ever shows them (in a delay warning).
    if office is None:
        return ""
    return f"; NOT FILED: file {office.short_name} electronically via {office.portal_url}"


def rate_limited_reply(
    scope: NoticeScope,
    reference: str,
    office: OfficeSettings | None = None,
    *,
    public_url: str | None = None,
) -> str:
    """The 451 for a message whose notice would pass a rate limit: try later, not refused."""
    return (
        f"451 4.7.1 Too many messages {_SCOPE_WORDS[scope]} this hour; not accepted,"
        f" please try again later{_not_filed(office)} ({cite(reference, public_url)})"
    )


def sender_check_failed_reply(
    reference: str, office: OfficeSettings | None = None, *, public_url: str | None = None
) -> str:
    """The 451 when DNS trouble kept us from checking the sender: retried, never dropped."""
    return (
        "451 4.4.3 Could not check the sender's domain (DNS trouble); not accepted,"
        f" please try again later{_not_filed(office)} ({cite(reference, public_url)})"
    )


def reply_for(
    reply: Reply, reference: str, office: OfficeSettings | None, *, public_url: str | None = None
) -> str:
    """The words of the end-of-DATA `reply` (policy/verdict.py); `office` is the one the reply
    names (`reply.office`), if any; `public_url` is [lookup]'s, where receipts are published."""
    url = public_url
    if reply.kind is ReplyKind.RETIRED and office is not None:
        return retired_reply(office, reference, public_url=url)
    if reply.kind is ReplyKind.ACCEPTED:
        promised = reply.is_notice_promised
        return accepted_reply(reference, office, notice_follows=promised, public_url=url)
    if reply.kind is ReplyKind.TOO_BIG:
        return oversize_reply(office, reference, public_url=url)
    if reply.kind is ReplyKind.LINE_TOO_LONG:
        return line_too_long_reply(reference, public_url=url)
    if reply.kind is ReplyKind.SENDER_CHECK_FAILED:
        return sender_check_failed_reply(reference, office, public_url=url)
    if reply.kind is ReplyKind.RATE_LIMITED and reply.scope is not None:
        return rate_limited_reply(reply.scope, reference, office, public_url=url)
    return _FIXED_REPLIES[reply.kind]


# Replies that name neither the message nor an office.
_FIXED_REPLIES = {
    ReplyKind.GONE: REPLY_GONE,
    ReplyKind.LOOP: REPLY_LOOP,
    ReplyKind.CHANGED: REPLY_CHANGED,
}


# -- RCPT answered 452 for a retired address: the recipient's part is still to come ----------


def _send_again(office: OfficeSettings) -> str:
    # An attorney may see this only in a delay warning or a bounce: it must say that
    # nothing was filed for this address yet, that the message has to go again on its own
    # (which their mail server normally does by itself, RFC 5321 §4.5.3.1.10), and where
    # filings go.
    return (
        "NOT FILED for this retired address: send it again separately (your mail server"
        f" normally retries); file {office.short_name} electronically via {office.portal_url}"
    )


def retired_too_many_recipients_reply(office: OfficeSettings) -> str:
    """The 452 for a retired address past [server] max_recipients (RFC 5321 §4.5.3.1.8)."""
    return f"{REPLY_TOO_MANY_RECIPIENTS}; {_send_again(office)}"


def retired_separate_transaction_reply(office: OfficeSettings) -> str:
    """The 452 for a retired address whose answer differs from the transaction's others."""
    return f"452 4.5.3 {_send_again(office)}"


def check_replies(offices: Iterable[OfficeSettings], *, public_url: str | None = None) -> None:
    """Refuse at startup any office whose replies would break RFC 5321's line limit.

    Raises:
        ConfigError: a reply would exceed 512 octets or is not ASCII.
    """
    for index, office in enumerate(offices):
        for reply in _office_replies(office, public_url):
            if len(reply) > MAX_REPLY or not reply.isascii():
                shorten = "short_name or portal_url" + (", or lookup.public_url" * bool(public_url))
                raise ConfigError(
                    f"offices[{index}]",
                    f"SMTP reply would be {len(reply)} octets; shorten {shorten}",
                )


def _office_replies(office: OfficeSettings, url: str | None) -> tuple[str, ...]:
    ref = _SAMPLE_REFERENCE
    return (
        retired_reply(office, ref, public_url=url),
        accepted_reply(ref, office, public_url=url),
        accepted_reply(ref, office, notice_follows=False, public_url=url),
        unknown_mailbox_reply(office, ref, public_url=url),
        oversize_reply(office, ref, public_url=url),
        rate_limited_reply(NoticeScope.DOMAIN, ref, office, public_url=url),
        sender_check_failed_reply(ref, office, public_url=url),
        retired_too_many_recipients_reply(office),
        retired_separate_transaction_reply(office),
    )


def reply_code(reply: str) -> int:
    """The three-digit code of a reply line."""
    return int(reply[:3])


def with_enhanced_code(status: str) -> str:
    """aiosmtpd's own reply `status`, rewritten with an enhanced code; others unchanged."""
    stock = _STOCK_REPLIES.get(status)
    if stock is not None:
        return stock
    for prefix, replacement in _STOCK_PREFIXES:
        if status.startswith(prefix):
            return replacement + status[len(prefix) :]
    return status
