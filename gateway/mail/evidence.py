"""What the gateway records about a received message: the facts, never a judgement.

Pure: bytes in, a MessageFacts value out. Only the header blocks and the MIME structure are
read, never decoded body parts, and the walk is iterative with hard caps so that a hostile
message (10,000 nested multiparts, a million parts) costs little and cannot recurse.
It must not log, touch files or raise: whatever bytes arrive, it returns what it found.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from gateway.mail.headertext import MAX_TEXT, a_numbers_in, clean, clean_filename, header_text

__all__ = ["Attachment", "MessageFacts", "extract_facts", "header_block"]

# Real header blocks are a few KB (a long Received chain, tens of KB; a MIME part's, a few
# hundred bytes); these only bound abuse.
_MAX_HEADER_BLOCK = 256 * 1024
_MAX_PART_HEADER_BLOCK = 16 * 1024
_MAX_DEPTH = 100  # open multiparts (boundaries on the stack), the root included
_MAX_PARTS = 1_000  # MIME entities counted, the root and the multiparts included
_MAX_PREFIXED_HEADERS = 16  # list-* and x-eservice-gateway-* names kept in `headers`
# RFC 2046 §5.1.1 allows 70 characters of boundary; a longer one is tolerated up to this,
# and a boundary line may carry some transport padding after it.
_MAX_BOUNDARY = 200
_MAX_BOUNDARY_LINE = 1_024
# "--" lines that are not boundaries tolerated before the search for boundary lines switches
# from a Python loop over every "--" line to a compiled pattern that skips them at C speed.
_MAX_PLAIN_MISSES = 64

_KEPT_HEADERS = frozenset(
    {
        "auto-submitted",  # RFC 3834
        "precedence",
        "x-auto-response-suppress",  # Microsoft Exchange
        "x-autoreply",  # vacation responders that predate RFC 3834
        "x-autorespond",
        "return-path",
        "in-reply-to",
        "references",
        "x-eservice-gateway-notice",  # our own loop marker; never crowded out by the cap below
    }
)
# RFC 2369 and RFC 2919 list headers, and the rest of our own x-eservice-gateway-* family.
_KEPT_PREFIXES = ("list-", "x-eservice-gateway-")
_FORWARDED = frozenset({"message/rfc822", "message/global"})  # RFC 2046 §5.2.1, RFC 6532 §3.5


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))

_BLANK_LINE = re.compile(rb"\n\r?\n")
# The only fields of a part's header block the walk reads, with their continuation lines.
_PART_FIELDS = re.compile(
    rb"\ncontent-(?:type|disposition|transfer-encoding):[^\n]*(?:\n[ \t][^\n]*)*", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A named MIME part: the document that was sent (and, after the cutoff, not filed)."""

    filename: str
    content_type: str
    size: int  # decoded size in bytes (estimated from the transfer encoding)


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What one received message says about itself, as evidence of the attempt."""

    size: int
    sha256: str
    message_id: str | None
    subject: str | None
    date: str | None
    from_header: str | None
    # Lowercase header name -> first value, for the headers decisions look at
    # (auto-submitted, precedence, list-*, x-eservice-gateway-*...).
    headers: Mapping[str, str] = field(default_factory=dict)
    received_count: int = 0
    attachments: tuple[Attachment, ...] = ()
    a_numbers: tuple[str, ...] = ()
    mime_parts: int = 0
    # True when a cap stopped the MIME walk or cut a header block short: the record says the
    # list may be incomplete.
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class _Head:
    """What one header block says about its part."""

    content_type: str
    boundary: bytes | None  # set only for a multipart with a usable boundary
    label: str | None  # the Attachment filename when the part is an attachment, else None
    encoding: str  # Content-Transfer-Encoding, lowercase


@dataclass(frozen=True, slots=True)
class _Line:
    """A boundary line found in the body of an open multipart."""

    body_end: int  # the CRLF before the line belongs to the boundary (RFC 2046 §5.1.1)
    start: int
    next: int  # first byte of the line after it
    depth: int  # stack index of the multipart whose boundary it is
    is_close: bool


@dataclass(frozen=True, slots=True)
class _Structure:
    attachments: tuple[Attachment, ...]
    parts: int
    truncated: bool


def extract_facts(raw: bytes, *, sha256: str | None = None) -> MessageFacts:
    """Record what `raw`, a message as received in DATA, says about itself; never raises.

    `sha256`: `raw`'s digest when the caller has it already (the server hashes DATA as it
    reads it), so a large message is not hashed twice.
    """
    head_end, body_start, is_capped = _header_end(raw, 0, _MAX_HEADER_BLOCK)
    msg, codec = _parse_block(raw[:head_end])
    first, received = _first_values(msg)
    subject = header_text(first.get("subject"), is_encoded=True)
    if is_capped:
        structure = _Structure((), 1, True)
    else:
        structure = _walk(raw, _head_of(msg, codec, in_digest=False), body_start)
    return MessageFacts(
        size=len(raw),
        sha256=sha256 or hashlib.sha256(raw).hexdigest(),
        message_id=header_text(first.get("message-id")),
        subject=subject,
        date=header_text(first.get("date")),
        from_header=header_text(first.get("from"), is_encoded=True),
        headers=_decision_headers(first),
        received_count=received,
        attachments=structure.attachments,
        a_numbers=a_numbers_in(subject or ""),
        mime_parts=structure.parts,
        truncated=structure.truncated,
    )


def header_block(raw: bytes) -> bytes:
    """`raw`'s header section, up to the blank line that ends it (all of `raw` when none)."""
    return raw[: _header_end(raw, 0, len(raw))[0]]


def _header_end(raw: bytes, start: int, cap: int) -> tuple[int, int, bool]:
    """End of the header block at `start`, start of its body, and whether `cap` cut it."""
    if raw.startswith(b"\n", start):
        return start, start + 1, False
    if raw.startswith(b"\r\n", start):
        return start, start + 2, False
    limit = start + cap
    blank = _BLANK_LINE.search(raw, start, limit)
    if blank is not None:
        return blank.start() + 1, blank.end(), False
    if limit >= len(raw):
        return len(raw), len(raw), False  # no separator: all header, no body
    cut = raw.rfind(b"\n", start, limit) + 1 or limit
    return cut, cut, True


def _parse_block(block: bytes) -> tuple[Message[str, str], str]:
    """Parse a header block with the cheap compat32 parser; also return the codec used."""
    # RFC 6532 allows UTF-8 in headers; other 8-bit bytes are legacy text, and Latin-1
    # decodes any byte, so no value ever holds surrogate escapes.
    try:
        text, codec = block.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, codec = block.decode("latin-1"), "latin-1"
    return HeaderParser(policy=compat32).parsestr(text), codec


def _first_values(msg: Message[str, str]) -> tuple[dict[str, str], int]:
    """Lowercase name -> first raw value of each header, and the number of Received lines."""
    first: dict[str, str] = {}
    received = 0
    for name, value in msg.raw_items():
        key = name.lower()
        if key == "received":
            received += 1
        first.setdefault(key, value)
    return first, received


def _decision_headers(first: Mapping[str, str]) -> dict[str, str]:
    kept: dict[str, str] = {}
    prefixed = 0
    for name, value in first.items():
        if name in _KEPT_HEADERS:
            kept[name] = clean(value, MAX_TEXT)
        elif name.startswith(_KEPT_PREFIXES) and prefixed < _MAX_PREFIXED_HEADERS:
            kept[name] = clean(value, MAX_TEXT)
            prefixed += 1
    return kept


def _head_of(msg: Message[str, str], codec: str, *, in_digest: bool) -> _Head:
    if in_digest:
        msg.set_default_type("message/rfc822")  # RFC 2046 §5.1.5
    content_type = msg.get_content_type()
    boundary = _boundary(msg, codec) if content_type.startswith("multipart/") else None
    return _Head(
        content_type=content_type,
        boundary=boundary,
        label=None if boundary is not None else _label(msg, content_type),
        encoding=(msg.get("content-transfer-encoding") or "").strip().lower(),
    )


def _boundary(msg: Message[str, str], codec: str) -> bytes | None:
    """The boundary as the bytes it appears as in the body, or None when unusable."""
    try:
        boundary = msg.get_boundary()
    except (LookupError, ValueError):  # an RFC 2231 charset Python cannot decode with
        return None
    if not boundary or len(boundary) > _MAX_BOUNDARY:
        return None  # a multipart that cannot be split is recorded as one opaque part
    return boundary.encode(codec, "replace")


def _label(msg: Message[str, str], content_type: str) -> str | None:
    """The Attachment filename for a leaf part, or None when it is not an attachment."""
    try:
        name = msg.get_filename()  # decodes RFC 2231 parameters, Content-Type name too
    except (LookupError, ValueError):  # named, in an RFC 2231 charset that will not decode
        name = ""
    if content_type in _FORWARDED:
        return clean_filename(name) if name else "(forwarded message)"
    if name is None and msg.get_content_disposition() != "attachment":
        return None
    return clean_filename(name or "")


def _decoded_size(body: bytes, encoding: str) -> int:
    """The decoded size of a part body, estimated from its encoded form without decoding."""
    if encoding == "base64":
        # RFC 2045 §6.8: every 4 alphabet characters are 3 octets; all else is ignored.
        return len(body.translate(None, _NOT_BASE64)) * 3 // 4
    if encoding == "quoted-printable":
        # RFC 2045 §6.7: "=" CRLF is a soft break (decodes to nothing), "=XX" one octet.
        soft_crlf, soft_lf = body.count(b"=\r\n"), body.count(b"=\n")
        escapes = body.count(b"=") - soft_crlf - soft_lf
        return max(0, len(body) - 3 * soft_crlf - 2 * soft_lf - 2 * escapes)
    return len(body)


def _attachment(head: _Head, body: bytes) -> Attachment:
    label = head.label or "(unnamed)"
    return Attachment(label, head.content_type, _decoded_size(body, head.encoding))


def _walk(raw: bytes, root: _Head, body_start: int) -> _Structure:
    """Walk the MIME tree with an explicit stack of open multiparts, never recursing."""
    if root.boundary is None:
        whole = (_attachment(root, raw[body_start:]),) if root.label is not None else ()
        return _Structure(whole, 1, False)
    found: list[Attachment] = []
    stack = [(root.boundary, root.content_type == "multipart/digest")]
    depths = {root.boundary: 0}  # boundary -> innermost stack index holding it
    leaf: tuple[_Head, int] | None = None  # an attachment and its body start, awaiting its end
    parts, pos, is_truncated = 1, body_start, False
    while stack:
        line = _next_boundary(raw, pos, depths, len(raw))
        if line is None:
            break  # unterminated multiparts end with the message
        if leaf is not None:
            found.append(_attachment(leaf[0], raw[leaf[1] : line.body_end]))
            leaf = None
        depths = _unwind(stack, depths, line)
        pos = line.next
        if line.is_close:
            continue
        if parts == _MAX_PARTS:
            return _Structure(tuple(found), parts, True)
        parts += 1
        head, pos, is_capped = _read_part(raw, pos, depths, in_digest=stack[-1][1])
        is_truncated = is_truncated or is_capped
        if head.boundary is None:
            leaf = (head, pos) if head.label is not None else None
        elif len(stack) == _MAX_DEPTH:
            return _Structure(tuple(found), parts, True)
        else:
            depths[head.boundary] = len(stack)
            stack.append((head.boundary, head.content_type == "multipart/digest"))
    if leaf is not None:
        found.append(_attachment(leaf[0], raw[leaf[1] :]))
    return _Structure(tuple(found), parts, is_truncated)


def _unwind(
    stack: list[tuple[bytes, bool]], depths: dict[bytes, int], line: _Line
) -> dict[bytes, int]:
    """Close what `line` closes; return the boundary -> stack index map for what stays open."""
    keep = line.depth if line.is_close else line.depth + 1
    if keep == len(stack):
        return depths
    # An outer boundary also ends every multipart still open inside it (RFC 2046 §5.1.2).
    del stack[keep:]
    return {boundary: i for i, (boundary, _) in enumerate(stack)}


def _read_part(
    raw: bytes, start: int, depths: Mapping[bytes, int], *, in_digest: bool
) -> tuple[_Head, int, bool]:
    """The head of the part at `start`, where its body starts, and whether a cap cut it."""
    head_end, body_start, is_capped = _header_end(raw, start, _MAX_PART_HEADER_BLOCK)
    # A boundary line before the blank line ends a part that has headers but no body.
    line = _next_boundary(raw, start, depths, head_end)
    if line is not None:
        head_end = body_start = line.start
        is_capped = False
    # Only the Content-* fields go to the parser: it costs a microsecond a line, and a
    # hostile part can carry thousands of other lines.
    fields = _PART_FIELDS.findall(raw, start - 1, head_end)
    msg, codec = _parse_block(b"".join(fields)[1:])
    return _head_of(msg, codec, in_digest=in_digest), body_start, is_capped


def _next_boundary(raw: bytes, pos: int, depths: Mapping[bytes, int], end: int) -> _Line | None:
    """The first boundary line of an open multipart starting at or after line start `pos`."""
    # RFC 2046 §5.1.1: "--" + boundary at the start of a line, then optional white space,
    # or "--" + boundary + "--" to close. Bare LF line ends are accepted as well as CRLF.
    find: Callable[[bytes, int, int], int] = _find_dash_line
    newline, misses = find(raw, max(pos - 1, 0), end), 0
    while newline >= 0:
        eol = raw.find(b"\n", newline + 3)
        stop = len(raw) if eol < 0 else eol
        if stop - newline <= _MAX_BOUNDARY_LINE:
            found = _match_boundary(raw[newline + 3 : stop].rstrip(), depths)
            if found is not None:
                cr = newline > 0 and raw[newline - 1] == 0x0D
                after = len(raw) if eol < 0 else eol + 1
                return _Line(newline - cr, newline + 1, after, found[0], found[1])
        if eol < 0:
            return None
        misses += 1
        if misses == _MAX_PLAIN_MISSES:
            find = _boundary_finder(depths)
        newline = find(raw, eol, end)
    return None


def _find_dash_line(raw: bytes, start: int, end: int) -> int:
    """Index of the next "\n--" at or after `start`, or -1."""
    # Jumping to the first "-" (a memchr) before the 3-byte search makes scanning a base64
    # body, which cannot hold a "-", about ten times faster.
    hyphen = raw.find(b"-", start + 1, end)
    return -1 if hyphen < 0 else raw.find(b"\n--", hyphen - 1, end)


def _boundary_finder(depths: Mapping[bytes, int]) -> Callable[[bytes, int, int], int]:
    """A search for lines that may be boundary lines, skipping other "--" lines at C speed."""
    # Every line _match_boundary accepts matches this pattern; it only filters, and each
    # match is still checked there. re caches the compiled pattern per boundary set.
    names = b"|".join(re.escape(boundary) for boundary in depths)
    pattern = re.compile(rb"\n--(?:" + names + rb")(?:--)?[ \t\r\x0b\x0c]*(?:\n|\Z)")

    def find(raw: bytes, start: int, end: int) -> int:
        match = pattern.search(raw, start, end)
        return -1 if match is None else match.start()

    return find


def _match_boundary(token: bytes, depths: Mapping[bytes, int]) -> tuple[int, bool] | None:
    """(stack index, is close) for the text after "--" on a line; the innermost match wins."""
    depth = depths.get(token, -1)
    if token.endswith(b"--"):
        closed = depths.get(token[:-2], -1)
        if closed > depth:
            return closed, True
    return (depth, False) if depth >= 0 else None
