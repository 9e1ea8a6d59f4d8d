"""Which audit log files can hold lines about one attempt, from where each file begins.

Each writer (the log, each supervisor worker) keeps one chain going from file to file as
logrotate renames them, and a renamed file is never written again once its writer follows
the rotation (chain.py): so every line of a file comes before the first line of the next file
of its chain, and that first line bounds when the file ends without reading it through (a
gzipped file must be decompressed to its end to read its last line).

An attempt's lines are written from its SMTP session on (the session opens at most
`[server] session_timeout` before the store's arrival time and closes at most that long
after), and later lines naming its reference may come at any time (a delivery retry, an
operator's queue action, a receipt-page lookup, a console view). So a file that ends before
the session could have opened holds nothing about it, and only the files that begin before
the session could have closed hold the session's own lines. The store's time and the log's
come from different clocks (another node's, on a shared store), hence a margin for skew.

`story_files` decides, with plain values; `read_starts` reads each file's first chained
line. Nothing here searches a file's lines or knows what a line says about an attempt
(events.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

from gateway.audit.verify import first_link

__all__ = ["CLOCK_SKEW", "FileStart", "StoryFiles", "read_starts", "story_files", "whole_log"]

# How far the log's clock may be from the store's (another process's or node's clock).
CLOCK_SKEW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class FileStart:
    """Where a log file begins: its first chained line's chain, seq and time."""

    path: Path
    chain: str | None = None  # None: no chained line (empty, unreadable, or before chains)
    seq: int = 0
    at: datetime | None = None  # None: no readable timestamp
    stamp: str = ""  # the timestamp as written, which verify.order_files sorts by


@dataclass(frozen=True, slots=True)
class StoryFiles:
    """The files to read for an attempt, each in the order of `every`."""

    every: tuple[Path, ...]  # all the log's files
    mentions: tuple[Path, ...]  # can hold lines naming its reference
    session: tuple[Path, ...]  # can hold its SMTP session's own lines (a subset of mentions)
    why_whole: str = ""  # why every file is read, when they are

    @property
    def skipped(self) -> int:
        """Files that end before the attempt arrived."""
        return len(self.every) - len(self.mentions)

    @property
    def is_whole(self) -> bool:
        return self.mentions == self.every and self.session == self.every


def whole_log(files: Sequence[Path], *, why: str = "") -> StoryFiles:
    """Every file, for both: when there is no arrival time to go by (a purged record)."""
    every = tuple(files)
    return StoryFiles(every, every, every, why_whole=why)


def story_files(
    starts: Sequence[FileStart], arrival: datetime, *, session_limit: timedelta
) -> StoryFiles:
    """The files that can hold lines about an attempt that arrived at `arrival`, whose SMTP
    session lasted at most `session_limit`; `starts` in the order to read them."""
    margin = session_limit + CLOCK_SKEW
    opened, closed = arrival - margin, arrival + margin
    ends = _ends(starts)
    mentions = [s for s in starts if (end := ends.get(s.path)) is None or end >= opened]
    session = [s.path for s in mentions if s.at is None or s.at <= closed]
    every = tuple(s.path for s in starts)
    return StoryFiles(every, tuple(s.path for s in mentions), tuple(session))


def _ends(starts: Sequence[FileStart]) -> dict[Path, datetime]:
    """For each file with a successor in its chain: that successor's first time, by which
    every line of the file had been written."""
    by_chain: dict[str, list[FileStart]] = {}
    for start in starts:
        if start.chain is not None:
            by_chain.setdefault(start.chain, []).append(start)
    ends: dict[Path, datetime] = {}
    for files in by_chain.values():
        files.sort(key=lambda s: s.seq)
        for this, following in pairwise(files):
            if following.seq > this.seq and following.at is not None:
                ends[this.path] = following.at
    return ends


def read_starts(paths: Iterable[Path]) -> list[FileStart]:
    """Each file's first chained line, read from its beginning (a gzipped file's first
    block; one with no chained line is read to its end); a file that cannot be read begins
    nowhere (it is read whole, and fails there).
    In verify.order_files's order: that of the lines, each chain's files as it wrote them."""
    return sorted((_start(path) for path in paths), key=lambda s: (s.stamp, s.seq))


def _start(path: Path) -> FileStart:
    first = first_link(path)
    if first is None:
        return FileStart(path)
    record, found = first
    stamp = record.get("timestamp", "")
    return FileStart(path, found.chain, found.seq, _time(stamp), str(stamp))


def _time(stamp: object) -> datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None  # the log writes UTC with its offset
