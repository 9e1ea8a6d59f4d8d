"""The audit log's hash chain: each JSON line carries the SHA-256 of the line before it.

Every line the audit logger writes ends with three keys: `chain` (16 hex digits naming the
chain), `seq` (1 for a chain's first line, then +1 per line) and `prev` (the SHA-256, in hex,
of the previous line's exact bytes without its newline; 64 zeros on the first line). Editing,
deleting, inserting or moving a line therefore breaks a link that `gateway audit verify`
finds. A chain outlives its file:

- a restart appending to the same file continues the chain from the file's last line;
- rotation (logrotate's default `create`: rename, then the new file appears) is noticed by
  the writer within a second; it reopens the path and the new file's first line links to
  the old file's last one. `copytruncate` loses the lines written between the copy and the
  truncation (logrotate says so), and verify reports them missing;
- standard output (Docker) cannot be read back, so each start begins a new chain; the saved
  stream (`docker logs gateway > saved.log`) verifies like a file.

Each chain is anchored in the state store: `audit_chains` holds its id and the hash of its
first line (a forged or replaced beginning is caught), `audit_checkpoints` its head, recorded
at start, every `checkpoint_interval` and at stop (a tail that was cut off is caught).

This module links, writes and verifies lines; it never decides what is logged (audit.py) nor
opens the store except to write and read those two tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, TextIO

import structlog

from gateway.errors import GatewayError
from gateway.store import Store, connect, iso

__all__ = [
    "GENESIS",
    "Anchor",
    "AuditLogBusy",
    "ChainedLog",
    "Checkpoint",
    "Finding",
    "Head",
    "LogLine",
    "Problem",
    "Verification",
    "anchored",
    "line_hash",
    "link",
    "load_anchors",
    "load_checkpoints",
    "log_files",
    "order_files",
    "read_lines",
    "verify",
]

GENESIS = "0" * 64
# How often the file writer looks whether its path still names the file it writes.
ROTATION_CHECK_S = 1.0


log = structlog.get_logger()


class AuditLogBusy(GatewayError, OSError):
    """Another process holds the audit log file: two writers would fork its chain."""


@dataclass(frozen=True, slots=True)
class Head:
    """Where a chain stands: its id, the seq of its last line and that line's hash."""

    chain: str
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Anchor:
    chain: str
    started_at: datetime
    log: str  # the file, or "-" for standard output
    first_hash: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain: str
    seq: int
    hash: str
    at: datetime


# ---------------------------------------------------------------------------------------------
# Linking: pure


def line_hash(line: bytes) -> str:
    """The SHA-256 (hex) of one log line, without its newline: what the next `prev` holds."""
    return hashlib.sha256(line).hexdigest()


def link(rendered: str, *, chain: str, seq: int, prev: str) -> str:
    """`rendered` (one JSON object) with the chain's keys appended, as the line to write."""
    body = rendered.rstrip()[:-1].rstrip()
    separator = ", " if body != "{" else ""
    return f'{body}{separator}"chain": "{chain}", "seq": {seq}, "prev": "{prev}"}}'


@dataclass(frozen=True, slots=True)
class _Link:
    chain: str
    seq: int
    prev: str


def _read_link(record: object) -> _Link | None:
    if not isinstance(record, dict):
        return None
    chain, seq, prev = record.get("chain"), record.get("seq"), record.get("prev")
    if isinstance(chain, str) and isinstance(seq, int) and isinstance(prev, str) and seq >= 1:
        return _Link(chain, seq, prev)
    return None


def _parse(line: bytes) -> object:
    try:
        return json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None


# ---------------------------------------------------------------------------------------------
# Writing


class ChainedLog:
    """The structlog logger of the audit log: links each rendered line and writes it whole.

    Thread-safe: linking and writing happen under one lock, so the order of the lines in the
    file is the order of the chain. Build it with `to_stream()` or `to_file()`.
    """

    def __init__(
        self,
        head: Head,
        *,
        stream: TextIO | None = None,
        path: Path | None = None,
        fd: int | None = None,
        check_every_s: float = ROTATION_CHECK_S,
    ) -> None:
        self._head = head
        self._stream = stream
        self._path = path
        self._fd = fd
        self._file_id = _file_id(fd) if fd is not None else None
        self._check_every_s = check_every_s
        self._next_check = time.monotonic() + check_every_s
        self._lock = threading.Lock()
        self.is_new = head.seq == 0
        self.started_at = datetime.now(UTC)
        self.first_hash: str | None = None

    @classmethod
    def to_stream(cls, stream: TextIO) -> ChainedLog:
        """A new chain written to `stream` (standard output, or a test's buffer)."""
        return cls(_new_head(), stream=stream)

    @classmethod
    def to_file(cls, path: Path, *, check_every_s: float = ROTATION_CHECK_S) -> ChainedLog:
        """Append to `path`, continuing the chain of its last line, else starting one.

        Raises:
            AuditLogBusy: another process is writing the file.
            OSError: it cannot be opened.
        """
        fd = _open_locked(path)
        try:
            head = _resume(path, fd)
        except OSError:
            os.close(fd)
            raise
        return cls(head, path=path, fd=fd, check_every_s=check_every_s)

    @property
    def head(self) -> Head:
        with self._lock:
            return self._head

    @property
    def destination(self) -> str:
        """Where the chain began: standard output, or the file's absolute path."""
        return "-" if self._path is None else os.path.abspath(self._path)

    def msg(self, message: str) -> None:
        """Link and write one rendered event."""
        with self._lock:
            if self._fd is not None and time.monotonic() >= self._next_check:
                self._follow_rotation()
            head = self._head
            line = link(message, chain=head.chain, seq=head.seq + 1, prev=head.hash).encode()
            self._write(line + b"\n")
            self._head = Head(head.chain, head.seq + 1, line_hash(line))
            if self._head.seq == 1:
                self.first_hash = self._head.hash

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _write(self, data: bytes) -> None:
        if self._stream is not None:
            # The JSON renderer escapes everything outside ASCII, so text and bytes agree.
            self._stream.write(data.decode())
            self._stream.flush()
            return
        assert self._fd is not None
        view = memoryview(data)
        while view:  # one write(2) for a line, unless the disk is full
            view = view[os.write(self._fd, view) :]

    def _follow_rotation(self) -> None:
        assert self._path is not None
        self._next_check = time.monotonic() + self._check_every_s
        try:
            current = _file_id_of(self._path)
        except FileNotFoundError:
            current = None
        if current == self._file_id:
            return
        try:
            fd = _open_locked(self._path)
        except OSError:
            return  # keep writing to the renamed file; the lines stay in order, try again later
        old, self._fd, self._file_id = self._fd, fd, _file_id(fd)
        if old is not None:
            os.close(old)


def _new_head() -> Head:
    return Head(secrets.token_hex(8), 0, GENESIS)


def _open_locked(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise AuditLogBusy(f"audit log {path} is being written by another process") from exc
    return fd


def _file_id(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def _file_id_of(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _resume(path: Path, fd: int) -> Head:
    """The head of the chain the file ends with, or a new chain's when it ends otherwise."""
    last, has_newline = _tail(path)
    if not last:
        return _new_head()
    if not has_newline:
        # A line cut short (the disk filled, or a crash inside a write): end it, so that the
        # new chain starts on a line of its own; verify reports the damaged one.
        os.write(fd, b"\n")
        return _new_head()
    found = _read_link(_parse(last))
    if found is None:
        return _new_head()  # a log from before the chain, or a damaged last line
    return Head(found.chain, found.seq, line_hash(last))


def _tail(path: Path, *, chunk: int = 65536) -> tuple[bytes, bool]:
    """The file's last line (without newline) and whether the file ends with a newline."""
    with open(path, "rb") as reader:
        end = reader.seek(0, os.SEEK_END)
        if end == 0:
            return b"", True
        reader.seek(end - 1)
        has_newline = reader.read(1) == b"\n"
        stop = end - 1 if has_newline else end
        start, data = stop, b""
        while start > 0 and b"\n" not in data:
            start = max(0, start - chunk)
            reader.seek(start)
            data = reader.read(stop - start)
        return data.rpartition(b"\n")[2], has_newline


# ---------------------------------------------------------------------------------------------
# Anchoring in the state store


def _save_anchor(conn: sqlite3.Connection, anchor: Anchor) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO audit_chains (chain, started_at, log, first_hash) VALUES (?,?,?,?)",
        (anchor.chain, iso(anchor.started_at), anchor.log, anchor.first_hash),
    )


def _save_checkpoint(conn: sqlite3.Connection, point: Checkpoint) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO audit_checkpoints (chain, seq, hash, at) VALUES (?,?,?,?)",
        (point.chain, point.seq, point.hash, iso(point.at)),
    )


def _save_head(conn: sqlite3.Connection, chain: ChainedLog, head: Head) -> None:
    """The chain's anchor once its first line is written (again: ignored), and its head."""
    if chain.is_new and chain.first_hash is not None:
        first = Anchor(head.chain, chain.started_at, chain.destination, chain.first_hash)
        _save_anchor(conn, first)
    if head.seq:
        _save_checkpoint(conn, Checkpoint(head.chain, head.seq, head.hash, datetime.now(UTC)))


async def _write_start(database: Path, chain: ChainedLog) -> None:
    store = Store(database)  # creates the file and the tables on a first start
    await store.open()
    try:
        await store.write(lambda conn: _save_head(conn, chain, chain.head))
    finally:
        await store.close()


class _Checkpoints:
    """A thread that records the chain's head in the store every `every_s` seconds."""

    def __init__(self, chain: ChainedLog, database: Path, *, every_s: float) -> None:
        self._chain = chain
        self._database = database
        self._every_s = every_s
        self._stop = threading.Event()
        self._saved = chain.head
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and record the head one last time."""
        self._stop.set()
        self._thread.join()
        self._save()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._save()

    def _save(self) -> None:
        head = self._chain.head
        if head == self._saved or head.seq == 0:
            return
        try:
            with contextlib.closing(connect(self._database)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                _save_head(conn, self._chain, head)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("store.checkpoint_failed", error=str(exc))
            return
        self._saved = head


@contextlib.contextmanager
def anchored(chain: ChainedLog | None, database: Path, *, every_s: float) -> Iterator[None]:
    """Anchor `chain` in the store, checkpoint its head while the body runs and once more
    when it ends. Does nothing for a log without a chain (the console format).

    Raises:
        StoreError: the store cannot be opened or written.
    """
    if chain is None:
        yield
        return
    asyncio.run(_write_start(database, chain))
    checkpoints = _Checkpoints(chain, database, every_s=every_s)
    checkpoints.start()
    try:
        yield
    finally:
        checkpoints.close()


def load_anchors(conn: sqlite3.Connection) -> dict[str, Anchor]:
    """Every chain anchored in the store, by id."""
    rows = conn.execute("SELECT chain, started_at, log, first_hash FROM audit_chains")
    return {r[0]: Anchor(r[0], datetime.fromisoformat(r[1]), r[2], r[3]) for r in rows.fetchall()}


def load_checkpoints(conn: sqlite3.Connection) -> dict[str, list[Checkpoint]]:
    """Every chain's checkpoints, by id, in seq order."""
    found: dict[str, list[Checkpoint]] = {}
    rows = conn.execute("SELECT chain, seq, hash, at FROM audit_checkpoints ORDER BY chain, seq")
    for chain, seq, digest, at in rows.fetchall():
        found.setdefault(chain, []).append(
            Checkpoint(chain, seq, digest, datetime.fromisoformat(at))
        )
    return found


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
    with _open_log(path) as lines:
        for number, raw in enumerate(lines, start=1):
            complete = raw.endswith(b"\n")
            # CR too: a copy saved on Windows verifies; the gateway never ends a line with CR.
            yield LogLine(str(path), number, raw.rstrip(b"\r\n"), complete)


def _open_log(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile reads like a file
    return open(path, "rb")


def log_files(log: Path) -> list[Path]:
    """The log and its rotated predecessors (`gateway.log.1`, `gateway.log.2.gz`,
    `gateway.log-20171001`...), oldest first by their first chained line."""
    siblings = [p for p in log.parent.glob(f"{log.name}[.-]*") if p.is_file()]
    return order_files([*siblings, log] if log.is_file() else siblings)


def order_files(paths: Iterable[Path]) -> list[Path]:
    """Log files in the order their lines were written (by each file's first chained line),
    whatever order a shell glob gave them in."""
    return sorted(paths, key=_first_position)


def _first_position(path: Path) -> tuple[str, int]:
    try:
        for line in read_lines(path):
            record = _parse(line.raw)
            found = _read_link(record)
            if found is not None and isinstance(record, dict):
                return str(record.get("timestamp", "")), found.seq
    except (OSError, EOFError):
        pass  # unreadable: verify reports it in its turn
    return "", 0


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
    gaps: dict[int, str] = field(default_factory=dict)  # missing seq -> where the order broke
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
        self.run: _Run | None = None
        self.records = 0
        self.unchained = 0
        self.sources: dict[str, int] = {}

    def add(self, problem: Problem, where: str, detail: str) -> None:
        self.findings.append(Finding(problem, where, detail))

    def feed(self, line: LogLine) -> None:
        self.sources.setdefault(line.source, len(self.sources))
        if not line.raw.strip():
            return  # an empty line carries nothing; the links around it still must hold
        record = _parse(line.raw)
        if not isinstance(record, dict):
            self._damaged(line)
            return
        found = _read_link(record)
        if found is None:
            if self.run is None and not self.spans:
                self.unchained += 1
            else:
                self.add(Problem.INSERTED, line.where, "a line without chain, seq and prev")
            return
        self.records += 1
        digest = line_hash(line.raw)
        run = self.run
        if found.seq == 1 and found.prev == GENESIS:
            self._finish()
            self._start(found, line, digest)
        elif run is None or run.chain != found.chain:
            self._finish()
            self.run = _Run(found.chain, found.seq, found.seq + 1, digest, line.where, False, 1)
            self.run.last_seq = found.seq
            self._checkpoint(found, line, digest)
        else:
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

    def _start(self, found: _Link, line: LogLine, digest: str) -> None:
        self.run = _Run(found.chain, 1, 2, digest, line.where, True, 1, last_seq=1)
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

    def _next(self, run: _Run, found: _Link, line: LogLine, digest: str) -> None:
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
        for missing in range(run.next_seq, seq):
            run.gaps[missing] = line.where

    def _late(self, run: _Run, seq: int, line: LogLine) -> None:
        broke = run.gaps.pop(seq, None)
        if broke is not None:
            run.early.setdefault(broke, []).append(seq)
            run.records += 1
            return
        first = run.recent.get(seq)
        earlier = f" (first at {first})" if first else ""
        self.add(Problem.DUPLICATED, line.where, f"seq {seq} appears again{earlier}")

    def _checkpoint(self, found: _Link, line: LogLine, digest: str) -> None:
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

    def _finish(self) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        for broke, seqs in run.early.items():
            self.add(
                Problem.REORDERED,
                broke,
                f"records seq {_ranges(seqs)} come later in the log than records after them",
            )
        by_break: dict[str, list[int]] = {}
        for missing, broke in run.gaps.items():
            by_break.setdefault(broke, []).append(missing)
        for broke, seqs in by_break.items():
            self.add(Problem.MISSING, broke, f"records seq {_ranges(seqs)} are not in the log")
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
        self._finish()
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
