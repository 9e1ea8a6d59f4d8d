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

This module links and writes lines; anchoring.py keeps the anchors, verify.py checks them.
None of them decides what is logged (log.py); the two tables are store/anchors.py's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import structlog

from gateway.errors import AuditLogBusy
from gateway.store.anchors import Anchor, Checkpoint, load_anchors, load_checkpoints

__all__ = [
    "GENESIS",
    "Anchor",
    "AuditLogBusy",
    "ChainedLog",
    "Checkpoint",
    "Head",
    "Link",
    "line_hash",
    "link",
    "load_anchors",
    "load_checkpoints",
    "parse_line",
    "read_link",
    "worker_log",
]

GENESIS = "0" * 64
# How often the file writer looks whether its path still names the file it writes.
ROTATION_CHECK_S = 1.0
# Lines kept in memory, in chain order, while the log cannot be written (a full disk); past
# this the oldest are dropped, and verify reports them missing.
MAX_PENDING = 20_000


log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Head:
    """Where a chain stands: its id, the seq of its last line and that line's hash."""

    chain: str
    seq: int
    hash: str


# ---------------------------------------------------------------------------------------------
# Linking: pure


def line_hash(line: bytes) -> str:
    """The SHA-256 (hex) of one log line, without its newline: what the next `prev` holds."""
    return hashlib.sha256(line).hexdigest()


def link(rendered: str, *, chain: str, seq: int, prev: str) -> str:
    """`rendered` (one JSON object) with the chain's keys appended, as the line to write."""
    body = rendered[:-1] if rendered[-1:] == "}" else rendered.rstrip()[:-1].rstrip()
    separator = ", " if body != "{" else ""
    return f'{body}{separator}"chain": "{chain}", "seq": {seq}, "prev": "{prev}"}}'


@dataclass(frozen=True, slots=True)
class Link:
    """What a line says of its place in the chain."""

    chain: str
    seq: int
    prev: str


def parse_line(line: bytes) -> object:
    """The JSON value of a log line, or None when it is not JSON (damaged, or cut short)."""
    try:
        return json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None


def read_link(record: object) -> Link | None:
    """The chain keys of a parsed line, or None when it has none (or they are malformed)."""
    if not isinstance(record, dict):
        return None
    chain, seq, prev = record.get("chain"), record.get("seq"), record.get("prev")
    if isinstance(chain, str) and isinstance(seq, int) and isinstance(prev, str) and seq >= 1:
        return Link(chain, seq, prev)
    return None


def worker_log(log: str, index: int) -> str:
    """Where worker `index` of a supervisor writes the log configured as `log`: a file of its
    own beside it (`gateway.log` -> `gateway.worker-1.log`), so that each file has one writer
    and one chain; standard output stays standard output (each process writes its lines
    whole, under a lock they share: ChainedLog.to_stream), so the chains interleave by line,
    each still in order."""
    if log == "-":
        return log
    path = Path(log)
    return str(path.with_name(f"{path.stem}.worker-{index}{path.suffix}"))


# ---------------------------------------------------------------------------------------------
# Writing


class ChainedLog:
    """The structlog logger of the audit log: links each rendered line and writes it whole.

    Thread-safe: linking and writing happen under one lock, so the order of the lines in the
    file is the order of the chain. Build it with `to_stream()` or `to_file()`.

    A write that fails (ENOSPC, EIO) never reaches the caller: an audit event is logged from
    inside SMTP sessions and the delivery worker, which must answer or carry on whatever the
    disk does. The line stays linked and waits in memory with those after it; `write_error` says
    why until a later write (the next event, or `retry()`) gets them all out, in order. The
    SMTP side reads `write_error` to fail closed: no new record while its events cannot be
    written (server.py), and /readyz reports it.
    """

    def __init__(
        self,
        head: Head,
        *,
        stream: TextIO | None = None,
        path: Path | None = None,
        fd: int | None = None,
        check_every_s: float = ROTATION_CHECK_S,
        shared: int | None = None,
    ) -> None:
        self._chain, self._seq, self._hash = head.chain, head.seq, head.hash
        self._stream = stream
        # An open lock file taken around each line written to a stream that processes share.
        self._shared = shared
        self._path = path
        self._fd = fd
        self._file_id = _file_id(fd) if fd is not None else None
        self._check_every_s = check_every_s
        self._next_check = time.monotonic() + check_every_s
        self._lock = threading.Lock()
        self.is_new = head.seq == 0
        self.started_at = datetime.now(UTC)
        self.first_hash: str | None = None
        self._pending: deque[bytes] = deque()
        self._failure: OSError | None = None
        self._dropped = 0

    @classmethod
    def to_stream(cls, stream: TextIO, *, shared_with: Path | None = None) -> ChainedLog:
        """A new chain written to `stream` (standard output, or a test's buffer).

        `shared_with` names a lock file that every process writing the same stream (a
        supervisor and its workers, on one standard output) takes around each line: a
        write(2) to a pipe longer than PIPE_BUF (4 KiB) may otherwise be split, and another
        process's line land inside it. Each process keeps a chain of its own.

        Raises:
            OSError: the lock file cannot be opened.
        """
        if shared_with is None:
            return cls(_new_head(), stream=stream)
        shared = os.open(shared_with, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return cls(_new_head(), stream=stream, shared=shared)

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
            return Head(self._chain, self._seq, self._hash)

    @property
    def destination(self) -> str:
        """Where the chain began: standard output, or the file's absolute path."""
        return "-" if self._path is None else os.path.abspath(self._path)

    @property
    def write_error(self) -> OSError | None:
        """Why the last write failed, while lines still wait to be written; else None."""
        with self._lock:
            return self._failure

    @property
    def backlog(self) -> tuple[int, int]:
        """Lines waiting to be written, and lines dropped since the log last failed."""
        with self._lock:
            return len(self._pending), self._dropped

    def msg(self, message: str) -> None:
        """Link one rendered event and write it, after any lines still waiting."""
        # The hot path of every audit event: a few microseconds, measured in the README.
        with self._lock:
            if self._fd is not None and time.monotonic() >= self._next_check:
                self._follow_rotation()
            seq = self._seq + 1
            line = link(message, chain=self._chain, seq=seq, prev=self._hash).encode()
            self._seq, self._hash = seq, hashlib.sha256(line).hexdigest()
            if seq == 1:
                self.first_hash = self._hash
            self._pending.append(line + b"\n")
            self._flush()

    def reopen(self) -> bool:
        """Open the path afresh now if the file there is no longer the one being written
        (logrotate's `create`, then SIGHUP or SIGUSR1), rather than within a second; the next
        line links to the last one written to the old file. Returns whether it reopened."""
        with self._lock:
            return self._fd is not None and self._follow_rotation()

    def retry(self) -> bool:
        """Try again to write the lines waiting; returns whether none is left waiting."""
        with self._lock:
            self._flush()
            return self._failure is None

    def _flush(self) -> None:
        while self._pending:
            try:
                self._write(self._pending[0])
            except OSError as exc:
                self._failure = exc
                while len(self._pending) > MAX_PENDING:
                    self._pending.popleft()
                    self._dropped += 1
                return
            self._pending.popleft()
        self._failure, self._dropped = None, 0

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def close(self) -> None:
        with self._lock:
            self._flush()  # the last chance for lines still waiting
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._shared is not None:
                os.close(self._shared)
                self._shared = None

    def _write(self, data: bytes) -> None:
        if self._stream is not None:
            if self._shared is not None:
                fcntl.flock(self._shared, fcntl.LOCK_EX)
            try:
                # The JSON renderer escapes everything outside ASCII, so text and bytes agree.
                self._stream.write(data.decode())
                self._stream.flush()
            finally:
                if self._shared is not None:
                    fcntl.flock(self._shared, fcntl.LOCK_UN)
            return
        assert self._fd is not None
        written = 0
        try:
            # One write(2), so the line lands whole (O_APPEND); more only when the disk fills.
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            if written:
                # Take the part of the line that got out back off the end: it is written
                # again whole later, and a line cut short would read as damage to verify.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            raise

    def _follow_rotation(self) -> bool:
        assert self._path is not None
        self._next_check = time.monotonic() + self._check_every_s
        try:
            current = _file_id_of(self._path)
        except FileNotFoundError:
            current = None
        if current == self._file_id:
            return False
        try:
            fd = _open_locked(self._path)
        except OSError:
            return False  # keep writing to the renamed file, in order; try again later
        old, self._fd, self._file_id = self._fd, fd, _file_id(fd)
        if old is not None:
            os.close(old)
        return True


def _new_head() -> Head:
    return Head(secrets.token_hex(8), 0, GENESIS)


def _open_locked(path: Path) -> int:
    # One writer per log file, held by an exclusive flock for the process's life: a second
    # gateway process on the same file fails at start with AuditLogBusy. A supervisor's
    # workers each write a file of their own (worker_log), with a chain of their own, which a
    # restarted worker continues from its file's last line.
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
    found = read_link(parse_line(last))
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
