"""Finding the audit log lines that hold a given byte string, without splitting every line.

A year of logs is millions of lines, of which a story needs a handful: each file is read in
large blocks (decompressed, when gzipped) and searched with bytes.find, and only the lines
around a hit become LogLines, numbered as verify.read_lines numbers them. Nothing here
parses a line or decides which lines matter (events.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from gateway.audit.verify import UNREADABLE, LogLine, open_log

__all__ = ["LogSearch", "lines_holding"]

# Bytes read at a time: large enough that the search, not Python, does the work.
_BLOCK = 1 << 20


def lines_holding(paths: Iterable[Path], needles: Sequence[bytes]) -> Iterator[LogLine]:
    """The lines of `paths`, in order, that hold any of `needles` (none holding a newline).

    Raises:
        OSError, EOFError, zlib.error: a file cannot be read (verify.UNREADABLE).
    """
    for path in paths:
        yield from _file_lines(path, needles)


class LogSearch:
    """`lines_holding` that goes on past a file it cannot read (a damaged or truncated gzip,
    one removed meanwhile), keeping the lines found before the damage, and says which:
    `unreadable`, each file with the reason, for the caller to report."""

    def __init__(self) -> None:
        self.unreadable: dict[Path, str] = {}

    def __call__(self, paths: Iterable[Path], needles: Sequence[bytes]) -> Iterator[LogLine]:
        for path in paths:
            try:
                yield from _file_lines(path, needles)
            except UNREADABLE as exc:
                self.unreadable[path] = str(exc) or type(exc).__name__


def _file_lines(path: Path, needles: Sequence[bytes]) -> Iterator[LogLine]:
    source = str(path)
    counted = 0  # lines wholly before `data`
    carry = b""
    with open_log(path) as file:
        while block := file.read(_BLOCK):
            data = carry + block
            cut = data.rfind(b"\n") + 1  # what follows the last newline waits for more
            yield from _hits(source, data[:cut], counted, needles)
            counted += data.count(b"\n", 0, cut)
            carry = data[cut:]
    if carry:  # the last line, without a newline
        yield from _hits(source, carry, counted, needles)


def _hits(source: str, data: bytes, counted: int, needles: Sequence[bytes]) -> Iterator[LogLine]:
    """The lines of `data` (whole lines, the last maybe without its newline) holding a needle;
    `counted` lines came before it."""
    starts: set[int] = set()
    for needle in needles:
        at = data.find(needle)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            starts.add(start)
            end = data.find(b"\n", at)
            at = data.find(needle, end) if end >= 0 else -1
    number, counted_to = counted, 0
    for start in sorted(starts):
        number += data.count(b"\n", counted_to, start)
        counted_to = start
        end = data.find(b"\n", start)
        raw = data[start : end if end >= 0 else len(data)]
        # As read_lines: CR too, and a final line without newline is not complete.
        yield LogLine(source, number + 1, raw.rstrip(b"\r\n"), end >= 0)
