"""Reading DATA as it arrives: the message up to the size limit, or its head and size past it.

aiosmtpd's own reader throws away everything, headers included, once a message passes the
limit or a line passes 1,000 octets, so the attempt could not be recorded or answered. This
reader keeps reading to the end of data in either case (RFC 5321 §4.2.5: the reply comes
after the final dot), keeps the header block of an oversize message so the sender can be
identified, and never holds much more than the size limit in memory. It decides nothing.

Line ends and the end of data are found exactly as aiosmtpd finds them, line by line: only
CRLF ends a line, a bare CR or LF is data, only "." CRLF at the start of a line ends the
message, a line's leading dot is removed (RFC 5321 §4.5.2), and a line longer than
aiosmtpd's line_length_limit (1001 octets, the dot counted) is flagged. It reads in large
chunks, though, not a line at a time: every end of data ends in "." CRLF, so
`readuntil(b".\\r\\n")` stops at each candidate (rare in mail: a line ending in a dot) and,
when none is near, the stream's LimitOverrunError says how much it holds, all of which is
taken at once. It never reads past the final dot, so commands pipelined behind the data stay
in the stream for the session.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

__all__ = ["HEAD_LIMIT", "ReceivedData", "read_data"]

# What is kept of an oversize message: its header block, at most this many octets.
HEAD_LIMIT = 65536

_DOT_CRLF = b".\r\n"
_CRLF = b"\r\n"
_CR = b"\r"


@dataclass(frozen=True, slots=True)
class ReceivedData:
    """A message as read in DATA, transparency dots removed (RFC 5321 §4.5.2)."""

    content: bytes  # the whole message, or only its header block when it was too big
    size: int  # octets of the whole message as received
    sha256: str  # of the whole message, so a firm can match its sent copy
    is_complete: bool  # False: past the size limit, `content` is the head only
    has_long_line: bool  # a line passed the reader's limit (RFC 5321 §4.5.3.1.6)


@dataclass(slots=True)
class _Collector:
    """The message so far, fed raw pieces that never end between a CR and its LF."""

    size_limit: int
    line_limit: int
    kept: list[bytes] = field(default_factory=list)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0
    is_complete: bool = True
    has_long_line: bool = False
    at_line_start: bool = True  # the next raw octet starts a line
    line_length: int = 0  # raw octets of the line under way

    def add(self, raw: bytes) -> None:
        if not self.has_long_line:
            self._measure_lines(raw)
        # A line's leading dot is transparency (RFC 5321 §4.5.2); so is each after a CRLF.
        data = raw[1:] if self.at_line_start and raw.startswith(b".") else raw
        data = data.replace(b"\r\n.", _CRLF)
        self.at_line_start = raw.endswith(_CRLF)
        self.digest.update(data)
        self.size += len(data)
        if self.is_complete:
            self.kept.append(data)
            if self.size > self.size_limit:
                self._keep_head_only()

    def _measure_lines(self, raw: bytes) -> None:
        # As the line reader did: a line is long when more than `line_limit` octets come
        # before its CRLF, the transparency dot counted.
        if self.line_length + len(raw) <= self.line_limit:
            last = raw.rfind(_CRLF)
            self.line_length = self.line_length + len(raw) if last < 0 else len(raw) - last - 2
            return
        lines = raw.split(_CRLF)
        longest = max(self.line_length + len(lines[0]), max(map(len, lines[1:]), default=0))
        self.line_length = len(lines[-1]) + (self.line_length if len(lines) == 1 else 0)
        self.has_long_line = longest > self.line_limit

    def _keep_head_only(self) -> None:
        # Dropped as soon as the limit is passed: memory stays near the limit. What is kept is
        # what the line reader kept: the whole lines before the one that passed the limit, cut
        # at the end of the header block (if it came before) or at HEAD_LIMIT.
        message = b"".join(self.kept)
        crossing = message.rfind(_CRLF, 0, self.size_limit)
        line_start = crossing + 2 if crossing >= 0 else 0
        head_end = _head_end(message, before=line_start)
        cut = min(line_start, HEAD_LIMIT if head_end is None else head_end, HEAD_LIMIT)
        self.kept = [message[:cut]]
        self.is_complete = False

    def result(self) -> ReceivedData:
        return ReceivedData(
            content=b"".join(self.kept),
            size=self.size,
            sha256=self.digest.hexdigest(),
            is_complete=self.is_complete,
            has_long_line=self.has_long_line,
        )


def _head_end(message: bytes, *, before: int) -> int | None:
    """Where the first empty line starts, if one starts at or before `before`."""
    if message.startswith(_CRLF):
        return 0
    blank = message.find(b"\r\n\r\n", 0, before + 2)
    return None if blank < 0 else blank + 2


async def read_data(
    reader: asyncio.StreamReader, *, size_limit: int, line_limit: int
) -> ReceivedData:
    """Read one message up to its final "." CRLF, flagging lines over `line_limit` octets
    (the line reader's stream limit; the stream's own limit only sets how much is read at once).

    Raises:
        asyncio.IncompleteReadError: the connection ended before the final dot.
    """
    collector = _Collector(size_limit, line_limit)
    pending = b""  # a CR held back from the last piece: its LF may start the next one
    while True:
        try:
            piece = pending + await reader.readuntil(_DOT_CRLF)
            is_candidate = True
        except asyncio.LimitOverrunError as exc:
            # No "." CRLF in the first `consumed` octets, which are all in the buffer.
            piece = pending + await reader.readexactly(exc.consumed)
            is_candidate = False
        pending = b""
        if is_candidate and _ends_data(piece, at_line_start=collector.at_line_start):
            collector.add(piece[:-3])
            return collector.result()
        if piece.endswith(_CR):
            piece, pending = piece[:-1], _CR
        collector.add(piece)


def _ends_data(piece: bytes, *, at_line_start: bool) -> bool:
    """Whether the "." CRLF that ends `piece` is at the start of a line."""
    before = piece[:-3]
    return before.endswith(_CRLF) or (not before and at_line_start)
