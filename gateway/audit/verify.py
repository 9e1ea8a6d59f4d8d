"""Verifying the audit log: read log files and check every link of their hash chains.

The chain itself (what each line carries, how lines are written and anchored) is chain.py's.
Here the lines of one or more files, oldest first, are walked once: each must be JSON, carry
its link, follow its predecessor by seq and name that line's SHA-256 as its prev; a chain's
first line must match its anchor in the store and every checkpoint in the store the line
with that seq. Each chain is walked on its own, so the chains of several processes may come
interleaved line by line (a supervisor's workers on one standard output) or in files of their
own (their log files, `gateway.worker-N.log`), in any order between chains. A damaged line
counts against the chain of the line before it. The result lists what is wrong, in the order
of the lines. Reading files is
the only I/O; `verify()` itself is a pure walk over lines already read.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from gateway.audit.chain import GENESIS, Anchor, Checkpoint, Link, line_hash, parse_line, read_link
from gateway.store.db import iso

__all__ = [
    "UNREADABLE",
    "ChainSpan",
    "Finding",
    "LogLine",
    "Problem",
    "Verification",
    "find_log_files",
    "first_link",
    "log_files",
    "open_log",
    "order_files",
    "read_lines",
    "verify",
]


# ---------------------------------------------------------------------------------------------
# Reading log files


@dataclass(frozen=True, slots=True)
class LogLine:
    source: str  # the file's name as given
    number: int  # 1-based, in that file
    raw: bytes  # without the line end
    complete: bool  # ended with a newline

    @property
    def where(self) -> str:
        return f"{self.source}:{self.number}"


def read_lines(path: Path) -> Iterator[LogLine]:
    """The lines of one log file, gzip-compressed (`.gz`, as logrotate leaves it) or not.

    Raises:
        OSError: the file cannot be read.
    """
    with open_log(path) as lines:
        for number, raw in enumerate(lines, start=1):
            complete = raw.endswith(b"\n")
            # CR too: a copy saved on Windows verifies; the gateway never ends a line with CR.
            yield LogLine(str(path), number, raw.rstrip(b"\r\n"), complete)


# What reading a log file can raise besides a bug: the file system's errors (gzip's
# BadGzipFile among them), a gzip cut short (EOFError), and damaged compressed data, which
# zlib raises as its own error, not an OSError.
UNREADABLE = (OSError, EOFError, zlib.error)


def open_log(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when its name ends in `.gz`."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile reads like a file
    return open(path, "rb")


def log_files(log: Path) -> list[Path]:
    """The log and its rotated predecessors (`gateway.log.1`, `gateway.log.2.gz`,
    `gateway.log-20171001`...), and the logs of a supervisor's workers beside it with theirs
    (`gateway.worker-1.log`, `gateway.worker-1.log.1`...; chain.worker_log), oldest first by
    their first chained line (so each chain's files come in the order it wrote them)."""
    return order_files(find_log_files(log))


def find_log_files(log: Path) -> set[Path]:
    """log_files, in no order."""
    workers = f"{log.stem}.worker-*{log.suffix}"
    patterns = (log.name, f"{log.name}[.-]*", workers, f"{workers}[.-]*")
    return {p for pattern in patterns for p in log.parent.glob(pattern) if p.is_file()}


def order_files(paths: Iterable[Path]) -> list[Path]:
    """Log files in the order their lines were written (by each file's first chained line),
    whatever order a shell glob gave them in."""
    return sorted(paths, key=_first_position)


def _first_position(path: Path) -> tuple[str, int]:
    first = first_link(path)
    if first is None:
        return "", 0
    record, found = first
    return str(record.get("timestamp", "")), found.seq


def first_link(path: Path) -> tuple[dict[str, object], Link] | None:
    """A file's first chained line, as parsed, with its chain keys; None when it has none or
    cannot be read (verify reports that in its turn). Read from the beginning: a file
    without a chained line is read to its end."""
    try:
        for line in read_lines(path):
            record = parse_line(line.raw)
            found = read_link(record)
            if found is not None and isinstance(record, dict):
                return record, found
    except UNREADABLE:
        pass
    return None


# ---------------------------------------------------------------------------------------------
# Verifying: pure, over lines already read


class Problem(StrEnum):
    ALTERED = "altered"
    MISSING = "missing"
    REORDERED = "reordered"
    DUPLICATED = "duplicated"
    DAMAGED = "damaged"
    INSERTED = "inserted"
    TRUNCATED = "truncated"
    UNANCHORED = "unanchored"


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    where: str  # "file:line"
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainSpan:
    """One chain as the files show it."""

    chain: str
    first_seq: int
    last_seq: int
    records: int
    anchored: bool | None  # None: no store to check against, or the start is not in the files
    checkpoints_matched: int
    last_checkpoint: int | None  # the highest seq that matched a checkpoint in the store


@dataclass(frozen=True, slots=True)
class Verification:
    records: int
    chains: tuple[ChainSpan, ...]
    findings: tuple[Finding, ...]
    unchained: int  # lines before the first chain (a log begun before the chain existed)

    @property
    def is_intact(self) -> bool:
        return not self.findings


# A jump in seq bigger than this is an edited number, not deleted lines.
_MAX_GAP = 1_000_000
# How many recent seqs are remembered, to name where a repeated record first appeared.
_RECENT = 1024


@dataclass
class _Gap:
    """Seqs `first` to `last` skipped at `where`: missing, unless they turn up later."""

    first: int
    last: int
    where: str


@dataclass
class _Run:
    """A chain being walked: what the next line must say."""

    chain: str
    first_seq: int
    next_seq: int
    prev: str | None  # None: unknown after a damaged line or a gap
    last_where: str
    starts_here: bool
    records: int = 0
    matched: int = 0
    last_checkpoint: int | None = None
    last_seq: int = 0  # the highest seq read, whatever came between
    gaps: list[_Gap] = field(default_factory=list)  # seqs skipped so far, and where
    early: dict[str, list[int]] = field(default_factory=dict)  # break -> seqs that came late
    recent: dict[int, str] = field(default_factory=dict)


class _Verifier:
    def __init__(
        self,
        anchors: Mapping[str, Anchor] | None,
        checkpoints: Mapping[str, Sequence[Checkpoint]] | None,
    ) -> None:
        self.anchors = anchors
        self.checkpoints = {
            chain: {p.seq: p for p in points} for chain, points in (checkpoints or {}).items()
        }
        self.has_store = anchors is not None
        self.findings: list[Finding] = []
        self.spans: list[ChainSpan] = []
        # Every chain being walked, by id: lines of several processes' chains may come
        # interleaved, line by line (the workers' standard output, saved as one file).
        self.runs: dict[str, _Run] = {}
        self.run: _Run | None = None  # the chain of the last chained line
        self.records = 0
        self.unchained = 0
        self.sources: dict[str, int] = {}

    def add(self, problem: Problem, where: str, detail: str) -> None:
        self.findings.append(Finding(problem, where, detail))

    def feed(self, line: LogLine) -> None:
        self.sources.setdefault(line.source, len(self.sources))
        if not line.raw.strip():
            return  # an empty line carries nothing; the links around it still must hold
        record = parse_line(line.raw)
        if not isinstance(record, dict):
            self._damaged(line)
            return
        found = read_link(record)
        if found is None:
            if not self.runs and not self.spans:
                self.unchained += 1
            else:
                self.add(Problem.INSERTED, line.where, "a line without chain, seq and prev")
            return
        self.records += 1
        digest = line_hash(line.raw)
        run = self.runs.get(found.chain)
        if found.seq == 1 and found.prev == GENESIS:
            if run is not None:
                self._finish(run)  # the same chain begun again: its first walk ends here
            self._start(found, line, digest)
        elif run is None:
            # A chain whose beginning is in files not given.
            self.run = _Run(found.chain, found.seq, found.seq + 1, digest, line.where, False, 1)
            self.run.last_seq = found.seq
            self.runs[found.chain] = self.run
            self._checkpoint(found, line, digest)
        else:
            self.run = run
            self._next(run, found, line, digest)

    def _damaged(self, line: LogLine) -> None:
        detail = (
            "cut short: the file ends inside a record"
            if not line.complete
            else ("not a JSON record: edited, or cut short")
        )
        self.add(Problem.DAMAGED, line.where, detail)
        if self.run is not None:
            self.run.next_seq += 1
            self.run.prev = None
            self.run.last_where = line.where

    def _start(self, found: Link, line: LogLine, digest: str) -> None:
        self.run = _Run(found.chain, 1, 2, digest, line.where, True, 1, last_seq=1)
        self.runs[found.chain] = self.run
        if self.anchors is None:
            return
        anchor = self.anchors.get(found.chain)
        if anchor is None:
            self.add(
                Problem.UNANCHORED,
                line.where,
                f"chain {found.chain} is not anchored in the state store"
                " (forged, or written beside another store)",
            )
        elif anchor.first_hash != digest:
            self.add(
                Problem.ALTERED,
                line.where,
                f"the first record of chain {found.chain} differs from its anchor in the store",
            )
        self._checkpoint(found, line, digest)

    def _next(self, run: _Run, found: Link, line: LogLine, digest: str) -> None:
        seq = found.seq
        if seq < run.next_seq:
            self._late(run, seq, line)
            return
        if seq > run.next_seq:
            self._gap(run, seq, line)
        elif run.prev is not None and found.prev != run.prev:
            self.add(
                Problem.ALTERED,
                run.last_where,
                f"record seq {seq - 1} was changed: its SHA-256 is not the prev of {line.where}",
            )
        run.records += 1
        run.next_seq, run.prev, run.last_where, run.last_seq = seq + 1, digest, line.where, seq
        run.recent[seq] = line.where
        if len(run.recent) > _RECENT:
            del run.recent[next(iter(run.recent))]
        self._checkpoint(found, line, digest)

    def _gap(self, run: _Run, seq: int, line: LogLine) -> None:
        if seq - run.next_seq > _MAX_GAP:
            self.add(Problem.ALTERED, line.where, f"seq {seq} where {run.next_seq} was due")
            return
        run.gaps.append(_Gap(run.next_seq, seq - 1, line.where))

    def _late(self, run: _Run, seq: int, line: LogLine) -> None:
        gap = next((g for g in run.gaps if g.first <= seq <= g.last), None)
        if gap is not None:  # skipped earlier, here now: out of order, not missing
            run.gaps.remove(gap)
            run.gaps += [
                _Gap(first, last, gap.where)
                for first, last in ((gap.first, seq - 1), (seq + 1, gap.last))
                if first <= last
            ]
            run.early.setdefault(gap.where, []).append(seq)
            run.records += 1
            return
        first = run.recent.get(seq)
        earlier = f" (first at {first})" if first else ""
        self.add(Problem.DUPLICATED, line.where, f"seq {seq} appears again{earlier}")

    def _checkpoint(self, found: Link, line: LogLine, digest: str) -> None:
        point = self.checkpoints.get(found.chain, {}).get(found.seq)
        if point is None or self.run is None:
            return
        if point.hash == digest:
            self.run.matched += 1
            self.run.last_checkpoint = max(found.seq, self.run.last_checkpoint or 0)
        else:
            self.add(
                Problem.ALTERED,
                line.where,
                f"record seq {found.seq} differs from the store's checkpoint of {iso(point.at)}",
            )

    def _finish(self, run: _Run) -> None:
        del self.runs[run.chain]
        if self.run is run:
            self.run = None
        for broke, seqs in run.early.items():
            self.add(
                Problem.REORDERED,
                broke,
                f"{_records(seqs)} {'comes' if len(seqs) == 1 else 'come'} later in the log"
                " than records after it",
            )
        by_break: dict[str, list[_Gap]] = {}
        for gap in sorted(run.gaps, key=lambda g: g.first):
            by_break.setdefault(gap.where, []).append(gap)
        for broke, gaps in by_break.items():
            count = sum(g.last - g.first + 1 for g in gaps)
            spans = ", ".join(
                str(g.first) if g.first == g.last else f"{g.first}-{g.last}" for g in gaps
            )
            what = f"record seq {spans} is" if count == 1 else f"records seq {spans} are"
            self.add(Problem.MISSING, broke, f"{what} not in the log")
        last = run.last_seq
        beyond = [p for s, p in self.checkpoints.get(run.chain, {}).items() if s > last]
        if beyond:
            point = max(beyond, key=lambda p: p.seq)
            self.add(
                Problem.TRUNCATED,
                run.last_where,
                f"the log ends at seq {last} but the store recorded seq {point.seq} of chain"
                f" {run.chain} at {iso(point.at)}: the records after seq {last} are missing"
                " (cut off, or in a file not given)",
            )
        anchored = (
            (run.chain in self.anchors) if self.anchors is not None and run.starts_here else None
        )
        self.spans.append(
            ChainSpan(
                run.chain,
                run.first_seq,
                last,
                run.records,
                anchored,
                run.matched,
                run.last_checkpoint,
            )
        )

    def result(self) -> Verification:
        for run in list(self.runs.values()):
            self._finish(run)
        ordered = sorted(self.findings, key=lambda f: _sort_key(f.where, self.sources))
        return Verification(self.records, tuple(self.spans), tuple(ordered), self.unchained)


def verify(
    lines: Iterable[LogLine],
    *,
    anchors: Mapping[str, Anchor] | None = None,
    checkpoints: Mapping[str, Sequence[Checkpoint]] | None = None,
) -> Verification:
    """Walk the lines of one or more log files, oldest first, and report every broken link,
    in the order of the lines.

    `anchors` and `checkpoints` come from the state store; without them (None) the chains'
    beginnings and ends are not checked against it.
    """
    verifier = _Verifier(anchors, checkpoints)
    for line in lines:
        verifier.feed(line)
    return verifier.result()


def _sort_key(where: str, rank: Mapping[str, int]) -> tuple[int, int]:
    source, _, number = where.rpartition(":")
    return rank.get(source, 0), int(number) if number.isdigit() else 0


def _records(seqs: Sequence[int]) -> str:
    return f"record{'s' if len(seqs) > 1 else ''} seq {_ranges(seqs)}"


def _ranges(seqs: Iterable[int]) -> str:
    """ "3-5, 9" for [3, 4, 5, 9]."""
    ordered = sorted(seqs)
    parts: list[str] = []
    start = prev = ordered[0]
    for seq in [*ordered[1:], None]:
        if seq is not None and seq == prev + 1:
            prev = seq
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if seq is not None:
            start = prev = seq
    return ", ".join(parts)
