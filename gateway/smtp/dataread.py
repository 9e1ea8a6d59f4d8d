"""Reading DATA as it arrives: the message up to the size limit, or its head and size past it.

aiosmtpd's own reader throws away everything, headers included, once a message passes the
limit or a line passes 1,000 octets, so the attempt could not be recorded or answered. This
reader keeps reading to the end of data in either case (RFC 5321 §4.2.5: the reply comes
after the final dot), keeps the header block of an oversize message so the sender can be
identified, and never holds more than the size limit in memory. Line ends and the end of
data are found exactly as aiosmtpd finds them: only CRLF ends a line, a bare CR or LF is
data, and only "." CRLF at the start of a line ends the message. It decides nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

__all__ = ["HEAD_LIMIT", "ReceivedData", "read_data"]

# What is kept of an oversize message: its header block, at most this many octets.
HEAD_LIMIT = 65536

_END = b".\r\n"
_CRLF = b"\r\n"


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
    size_limit: int
    kept: list[bytes]
    size: int = 0
    head_end: int | None = None  # offset of the blank line ending the header block
    is_complete: bool = True
    has_long_line: bool = False

    def add(self, piece: bytes, *, starts_line: bool) -> None:
        if starts_line and piece == _CRLF and self.head_end is None:
            self.head_end = self.size
        self.size += len(piece)
        if self.is_complete and self.size > self.size_limit:
            self._keep_head_only()
        if self.is_complete:
            self.kept.append(piece)

    def _keep_head_only(self) -> None:
        # Dropped as soon as the limit is passed: memory stays under the limit.
        head = b"".join(self.kept)
        cut = HEAD_LIMIT if self.head_end is None else min(self.head_end, HEAD_LIMIT)
        self.kept = [head[:cut]]
        self.is_complete = False


async def read_data(reader: asyncio.StreamReader, *, size_limit: int) -> ReceivedData:
    """Read one message up to its final "." CRLF.

    Raises:
        asyncio.IncompleteReadError: the connection ended before the final dot.
    """
    digest = hashlib.sha256()
    collector = _Collector(size_limit, [])
    starts_line = True
    while True:
        try:
            piece = await reader.readuntil(_CRLF)
        except asyncio.LimitOverrunError as exc:
            # A line longer than the reader's limit: take it in pieces, to its CRLF.
            collector.has_long_line = True
            piece = await reader.readexactly(exc.consumed)
        if starts_line and piece == _END:
            break
        if starts_line and piece.startswith(b"."):
            piece = piece[1:]
        digest.update(piece)
        collector.add(piece, starts_line=starts_line)
        starts_line = piece.endswith(_CRLF)
    return ReceivedData(
        content=b"".join(collector.kept),
        size=collector.size,
        sha256=digest.hexdigest(),
        is_complete=collector.is_complete,
        has_long_line=collector.has_long_line,
    )
