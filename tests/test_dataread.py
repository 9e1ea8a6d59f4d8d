"""The chunked DATA reader finds exactly what the line-by-line reader before it found.

`line_reader` below is gateway/smtp/dataread.py as it was up to this change (one
`readuntil(CRLF)` per line, aiosmtpd's own way): the reference. Random bodies made of CR, LF,
dots, CRLF and long runs, sent in random TCP-sized pieces with commands pipelined behind the
final dot, must give the same bytes, size, hash, flags and errors from both, and leave the
same bytes in the stream for the session. The smuggling defences are spelled out as cases too.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smtp.dataread import HEAD_LIMIT, ReceivedData, read_data

Reader = Callable[[asyncio.StreamReader], Awaitable[ReceivedData]]

# -- the reference: the line reader ---------------------------------------------------------


async def line_reader(reader: asyncio.StreamReader, *, size_limit: int) -> ReceivedData:
    digest = hashlib.sha256()
    kept: list[bytes] = []
    size, head_end, is_complete, has_long_line = 0, None, True, False
    starts_line = True
    while True:
        try:
            piece = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            has_long_line = True
            piece = await reader.readexactly(exc.consumed)
        if starts_line and piece == b".\r\n":
            break
        if starts_line and piece.startswith(b"."):
            piece = piece[1:]
        digest.update(piece)
        if starts_line and piece == b"\r\n" and head_end is None:
            head_end = size
        size += len(piece)
        if is_complete and size > size_limit:
            head = b"".join(kept)
            kept = [head[: HEAD_LIMIT if head_end is None else min(head_end, HEAD_LIMIT)]]
            is_complete = False
        if is_complete:
            kept.append(piece)
        starts_line = piece.endswith(b"\r\n")
    return ReceivedData(b"".join(kept), size, digest.hexdigest(), is_complete, has_long_line)


# -- driving a reader over a stream that arrives in pieces ------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    result: ReceivedData | None  # None: the connection ended before the final dot
    rest: bytes  # what the reader left in the stream


async def read_in_pieces(read: Reader, pieces: Sequence[bytes], *, limit: int) -> Read:
    """Feed `pieces` one at a time, each only once the reader has taken what it could."""
    stream = asyncio.StreamReader(limit=limit)

    async def feed() -> None:
        for piece in pieces:
            stream.feed_data(piece)
            for _ in range(3):  # let the reader run until it waits for more
                await asyncio.sleep(0)
        stream.feed_eof()

    async with asyncio.timeout(10):
        feeder = asyncio.create_task(feed())
        try:
            result: ReceivedData | None = await read(stream)
        except asyncio.IncompleteReadError:
            result = None
        await feeder
        return Read(result, await stream.read())


def cut(data: bytes, at: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted({a % (len(data) + 1) for a in at}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def chunked(*, size_limit: int, line_limit: int) -> Reader:
    return lambda stream: read_data(stream, size_limit=size_limit, line_limit=line_limit)


def by_line(*, size_limit: int) -> Reader:
    return lambda stream: line_reader(stream, size_limit=size_limit)


# -- the property ---------------------------------------------------------------------------

TOKENS = st.sampled_from(
    [b"a", b"Subject: s", b"\r", b"\n", b"\r\n", b".", b"..", b"\r\n.", b"\r\n\r\n", b"\n.\n"]
)
MORE_TOKENS = st.sampled_from([b"\r.\r\n", b".\r\n", b"\r\n.\r", b"x" * 20, b"y" * 70, b"\xff"])
BODIES = st.lists(st.one_of(TOKENS, MORE_TOKENS), max_size=60).map(b"".join)
ENDINGS = st.sampled_from(
    [b"\r\n.\r\n", b".\r\n", b"\r\n.\r\nQUIT\r\n", b"\r\n.\r\nMAIL FROM:<", b""]
)
LIMITS = st.sampled_from([4, 9, 16, 64, 1001, 65536])
SIZE_LIMITS = st.one_of(st.integers(min_value=0, max_value=300), st.just(1 << 62))
CUTS = st.lists(st.integers(min_value=0, max_value=2000), max_size=12)


@settings(max_examples=400, deadline=None)
@given(
    body=BODIES,
    ending=ENDINGS,
    limit=LIMITS,
    stream_limit=LIMITS,
    size_limit=SIZE_LIMITS,
    at=CUTS,
)
async def test_chunked_reading_finds_what_line_reading_found(
    body: bytes, ending: bytes, limit: int, stream_limit: int, size_limit: int, at: list[int]
) -> None:
    # The line reader's stream limit was its line limit; the chunked reader's stream may
    # have any limit (server.py gives it 64 KiB): only how much it reads at once changes.
    stream = body + ending
    pieces = cut(stream, at)
    new_reader = chunked(size_limit=size_limit, line_limit=limit)
    new = await read_in_pieces(new_reader, pieces, limit=stream_limit)
    old = await read_in_pieces(by_line(size_limit=size_limit), pieces, limit=limit)
    assert new.rest == old.rest  # nothing read past the final dot (or both read to the end)
    if new.result is None or old.result is None:
        assert new.result == old.result  # both ended before the final dot
        return
    assert _all_but_content(new.result) == _all_but_content(old.result)
    if new.result.content != old.result.content:
        _assert_only_the_line_readers_segment_dependence(new.result, old.result)
    # Wherever the pieces fall, the chunked reader reads the same.
    whole = await read_in_pieces(new_reader, [stream], limit=stream_limit)
    assert new == whole


def _all_but_content(data: ReceivedData) -> tuple[int, str, bool, bool]:
    return data.size, data.sha256, data.is_complete, data.has_long_line


def _assert_only_the_line_readers_segment_dependence(new: ReceivedData, old: ReceivedData) -> None:
    # The one place the line reader depended on how TCP cut the stream: when the size
    # limit is passed inside an over-long line before any blank line, it kept the pieces of
    # that line read before (one per segment, and the line without its CRLF). The chunked
    # reader keeps whole lines only, wherever the segments fall.
    assert not new.is_complete
    assert new.has_long_line
    assert old.content.startswith(new.content)
    assert b"\r\n" not in old.content[len(new.content) :]


# -- the smuggling defences, case by case ---------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b".\r\n", b""),
        (b"a\r\n.\r\n", b"a\r\n"),
        # A bare LF or CR around the dot is data: only CRLF "." CRLF ends the message.
        (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n"),
        (b"a\r.\r\nb\r\n.\r\n", b"a\r.\r\nb\r\n"),
        (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n"),
        (b"a\r\n.\n.\r\n.\r\n", b"a\r\n\n.\r\n"),
        (b"end.\r\nmore\r\n.\r\n", b"end.\r\nmore\r\n"),
        # Transparency: a line's first dot goes, the rest stay (RFC 5321 §4.5.2).
        (b"..\r\n...x\r\n.y\r\n.\r\n", b".\r\n..x\r\ny\r\n"),
        (b".a\r\n.\r\n", b"a\r\n"),
    ],
)
@pytest.mark.parametrize("piece_size", [1, 2, 3, 7, 1 << 20])
async def test_only_crlf_dot_crlf_ends_the_data_and_leading_dots_are_removed(
    stream: bytes, content: bytes, piece_size: int
) -> None:
    pieces = [stream[i : i + piece_size] for i in range(0, len(stream), piece_size)]
    pieces.append(b"QUIT\r\n")
    got = await read_in_pieces(chunked(size_limit=1 << 62, line_limit=1001), pieces, limit=1001)
    assert got.result is not None
    assert (got.result.content, got.result.size) == (content, len(content))
    assert got.rest == b"QUIT\r\n"


async def test_a_line_over_the_limit_is_flagged_and_one_at_it_is_not() -> None:
    at_limit = b"x" * 1001 + b"\r\n.\r\n"
    over = b"." + b"x" * 1001 + b"\r\n.\r\n"  # the transparency dot counts, as it did
    reader = chunked(size_limit=1 << 62, line_limit=1001)
    flags = [(await read_in_pieces(reader, [s], limit=1001)).result for s in (at_limit, over)]
    assert [f.has_long_line if f else None for f in flags] == [False, True]


async def test_past_the_size_limit_only_the_header_block_is_kept_and_all_is_counted() -> None:
    head = b"Subject: big\r\nFrom: a@b.example\r\n"
    body = b"".join(b"line %d\r\n" % i for i in range(5000))
    got = await read_in_pieces(
        chunked(size_limit=1000, line_limit=1001),
        cut(head + b"\r\n" + body + b".\r\n", range(0, 60000, 1400)),
        limit=1001,
    )
    assert got.result is not None
    whole = head + b"\r\n" + body
    assert (got.result.content, got.result.is_complete) == (head, False)
    assert (got.result.size, got.result.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
