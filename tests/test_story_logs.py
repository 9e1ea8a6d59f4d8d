"""`gateway audit show` reads only the log files that can tell of the attempt.

A host keeps its log, its workers' logs and their daily rotations (renamed, then gzipped, as
logrotate leaves them), each writer one chain from file to file. The story of an attempt
lists the lines naming it, wherever they are (a delivery retry two days later, a
receipt-page lookup on the day the operator asks), and its SMTP session's opening and
closing; files that end before the attempt arrived are not read. The lines listed are the
ones that reading every file twice, as `audit show` used to, finds; and an attempt whose
record was purged still gets every file read.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit.chain import ChainedLog, link, worker_log
from gateway.audit.events import LoggedEvent, _event, has_arrival, logged_events
from gateway.audit.search import lines_holding
from gateway.audit.spans import FileStart, StoryFiles, read_starts, story_files, whole_log
from gateway.audit.verify import LogLine, log_files, read_lines
from gateway.config import GatewaySettings
from gateway.mail.evidence import MessageFacts
from gateway.ops.auditcmd import AuditRequest, run_audit
from gateway.store.db import Store
from gateway.store.messages import MessageRecord, RecipientRecord, insert_gated
from tests.conftest import RETIRED, make_settings

DAY = datetime(2017, 9, 1, tzinfo=UTC)  # the first day of the host's logs
SESSION_LIMIT = timedelta(minutes=30)


# -- which files: pure, on plain values ---------------------------------------------------------


def at(day: int, hour: float = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hour)


def start(name: str, chain: str | None, seq: int, day: int | None) -> FileStart:
    return FileStart(Path(name), chain, seq, None if day is None else at(day))


# Two writers' chains, a file a day each: day 0, 1, 2 and today's (day 3).
STARTS = [
    start("log-1.gz", "a", 1, 0),
    start("w1-1.gz", "b", 1, 0),
    start("log-2.gz", "a", 500, 1),
    start("w1-2.gz", "b", 900, 1),
    start("log-3", "a", 1000, 2),
    start("w1-3", "b", 1800, 2),
    start("log", "a", 1500, 3),
    start("w1", "b", 2700, 3),
]


@pytest.mark.parametrize(
    ("arrival", "mentions", "session"),
    [
        # Noon on day 1: day 0's files end before its session could open.
        (at(1, 12), ["log-2.gz", "w1-2.gz", "log-3", "w1-3", "log", "w1"], ["log-2.gz", "w1-2.gz"]),
        # Just after midnight: the session may have opened in the day before's files, and
        # may close in the next day's.
        (at(2, 0.1), [s.path.name for s in STARTS[2:]], ["log-2.gz", "w1-2.gz", "log-3", "w1-3"]),
        # Today: only today's files and yesterday's (which end at today's first line).
        (at(3, 9), ["log", "w1"], ["log", "w1"]),
        # Before the log begins: everything can name it.
        (at(-5), [s.path.name for s in STARTS], []),
    ],
)
def test_files_that_end_before_the_session_could_open_are_left_out(
    arrival: datetime, mentions: list[str], session: list[str]
) -> None:
    chosen = story_files(STARTS, arrival, session_limit=SESSION_LIMIT)
    assert [p.name for p in chosen.mentions] == mentions
    assert [p.name for p in chosen.session] == session
    assert chosen.skipped == len(STARTS) - len(mentions)


@pytest.mark.parametrize(
    "starts",
    [
        # No chained line (a log from before the chain, empty or unreadable): no bound.
        [start("old.log", None, 0, None), start("log", "a", 1, 3)],
        # A successor without a readable time bounds nothing.
        [start("log.1", "a", 1, 0), start("log", "a", 50, None)],
        # A copy that begins where the file begins is not its successor.
        [start("log.1", "a", 1, 0), start("log.1.copy", "a", 1, 0)],
        # Another chain's later file says nothing of this one's end.
        [start("log.1", "a", 1, 0), start("w1", "b", 1, 3)],
    ],
)
def test_a_file_whose_end_nothing_bounds_is_read(starts: list[FileStart]) -> None:
    chosen = story_files(starts, at(3, 12), session_limit=SESSION_LIMIT)
    assert chosen.mentions == tuple(s.path for s in starts)
    assert chosen.skipped == 0


def test_without_a_record_every_file_is_read_for_both() -> None:
    files = [s.path for s in STARTS]
    every = tuple(files)
    assert whole_log(files, why="purged") == StoryFiles(every, every, every, "purged")


def chained(timestamp: object) -> str:
    return link(json.dumps({"event": "x", "timestamp": timestamp}), chain="c", seq=7, prev="0")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", FileStart(Path("f"))),
        (b'{"event": "before the chain"}\n', FileStart(Path("f"))),
        (
            f"{chained('2017-09-01T10:00:00Z')}\n".encode(),
            FileStart(Path("f"), "c", 7, at(0, 10), "2017-09-01T10:00:00Z"),
        ),
        (f"{chained(12)}\n".encode(), FileStart(Path("f"), "c", 7, None, "12")),
        (f"{chained('yesterday')}\n".encode(), FileStart(Path("f"), "c", 7, None, "yesterday")),
        (  # no offset: not the log's UTC
            f"{chained('2017-09-01T10:00:00')}\n".encode(),
            FileStart(Path("f"), "c", 7, None, "2017-09-01T10:00:00"),
        ),
    ],
)
def test_a_file_begins_at_its_first_chained_lines_time_when_it_has_one(
    tmp_path: Path, content: bytes, expected: FileStart
) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    # The stamp as written is what verify.order_files sorts by.
    assert read_starts([path]) == [replace(expected, path=path)]


def test_a_gzipped_file_that_cannot_be_read_begins_nowhere(tmp_path: Path) -> None:
    broken = tmp_path / "gateway.log.2.gz"
    broken.write_bytes(b"not gzip at all\n")
    assert read_starts([broken]) == [FileStart(broken)]


def logged(event: str, timestamp: str) -> LoggedEvent:
    return LoggedEvent("f:1", 1, timestamp, event, ())


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([logged("smtp.message.received", "2017-09-03T12:00:01Z")], True),
        ([logged("smtp.recipient.refused", "2017-09-03T12:59:00+00:00")], True),
        ([logged("smtp.message.received", "2017-09-03T14:00:01Z")], False),  # 2 h off
        ([logged("delivery.succeeded", "2017-09-03T12:00:01Z")], False),  # not its arrival
        ([logged("smtp.reply.sent", "noon"), logged("smtp.reply.sent", "2017-09-03T12:00")], False),
        ([], False),
    ],
)
def test_an_arrival_is_found_only_at_the_time_the_store_gives(
    events: list[LoggedEvent], expected: bool
) -> None:
    assert has_arrival(events, at(2, 12), within=timedelta(hours=1)) is expected


# -- the lines found: as every line read one by one finds them -----------------------------------


def test_the_block_search_finds_and_numbers_lines_as_reading_each_line_does(
    tmp_path: Path,
) -> None:
    # Over 1 MiB, so that lines straddle the blocks read; CR LF line ends, an empty line, and
    # a last line without its newline.
    lines = [f'{{"n": {n}, "pad": "{"x" * (n % 400)}"}}'.encode() for n in range(8000)]
    lines[3] = b""
    body = b"".join(line + (b"\r\n" if n % 5 == 0 else b"\n") for n, line in enumerate(lines))
    for path in (tmp_path / "plain.log", tmp_path / "rotated.log.1.gz"):
        data = body + b'{"n": "9", "last": true'
        path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
        needles = [b'"n": 7', b'"n": 4123', b'"last"']
        expected = [
            line for line in read_lines(path) if any(needle in line.raw for needle in needles)
        ]
        assert list(lines_holding([path], needles)) == expected
        assert len(expected) > 100
        assert not expected[-1].complete


# -- a host's rotated, gzipped logs, written by the gateway's writer -------------------------------


@dataclass
class Writer:
    """One process's ChainedLog on its file, rotated daily as logrotate does (dateext,
    compress, delaycompress): renamed, the writer follows, the day before's gzipped."""

    path: Path
    log: ChainedLog

    @classmethod
    def open(cls, path: Path) -> Writer:
        return cls(path, ChainedLog.to_file(path, check_every_s=0))

    def write(self, when: datetime, event: str, **fields: object) -> None:
        stamp = when.isoformat().replace("+00:00", "Z")
        self.log.msg(json.dumps({**fields, "event": event, "level": "info", "timestamp": stamp}))

    def rotate(self, day: datetime) -> None:
        rotated = self.path.with_name(f"{self.path.name}-{day:%Y%m%d}")
        self.path.rename(rotated)
        assert self.log.reopen()
        for older in self.path.parent.glob(f"{self.path.name}-*"):
            if older != rotated and older.suffix != ".gz":
                with older.open("rb") as plain, gzip.open(f"{older}.gz", "wb") as packed:
                    shutil.copyfileobj(plain, packed)
                older.unlink()


@dataclass(frozen=True, slots=True)
class Host:
    log: Path
    refs: dict[str, str]  # name -> reference
    arrivals: dict[str, datetime]


def session(w: Writer, opened: datetime, session_id: str, reference: str) -> datetime:
    """A session whose message is refused after DATA; returns when it was received."""
    received = opened + timedelta(seconds=40)
    w.write(opened, "smtp.session.opened", session_id=session_id, peer_ip="192.0.2.7")
    w.write(received, "smtp.message.received", session_id=session_id, reference=reference)
    w.write(received, "smtp.reply.sent", session_id=session_id, reference=reference, reply_code=550)
    w.write(received + timedelta(seconds=1), "smtp.session.closed", session_id=session_id)
    return received


def write_host(folder: Path) -> Host:
    """Five days of a host with two SMTP workers: three attempts among others."""
    folder.mkdir()
    log = folder / "gateway.log"
    main = Writer.open(log)
    workers = [Writer.open(Path(worker_log(str(log), n))) for n in (1, 2)]
    refs = {
        "kept": "20170903-KEPTKEPTKEPT1",
        "midnight": "20170904-MIDNIGHT0001",
        "purged": "20170901-PURGEDPURGED1",
    }
    arrivals: dict[str, datetime] = {}
    for day in range(5):
        if day == 3:  # the midnight session's message, in the first minute of the new files
            workers[0].write(at(3, 0.001), "smtp.session.refused", peer_ip="192.0.2.99")
            received = at(3, 0.01)
            workers[0].write(received, "smtp.message.received", session_id="m1",
                             reference=refs["midnight"])  # fmt: skip
            workers[0].write(received, "smtp.session.closed", session_id="m1")
            arrivals["midnight"] = received
        for n in range(20):  # other attempts, every hour or so, in both workers
            w = workers[n % 2]
            session(w, at(day, n + 0.5), f"s{day}-{n}", f"2017090{day + 1}-OTHER{day}{n:05d}")
            main.write(at(day, n + 0.6), "delivery.succeeded", reference=f"OTHER{day}{n:05d}")
        if day == 0:
            arrivals["purged"] = session(workers[0], at(0, 9), "p1", refs["purged"])
        if day == 2:
            arrivals["kept"] = session(workers[1], at(2, 12), "k1", refs["kept"])
            main.write(at(2, 12.1), "delivery.deferred", reference=refs["kept"], attempt=1)
            # The midnight session opens just before the day's file is rotated.
            workers[0].write(at(2, 23.99), "smtp.session.opened", session_id="m1")
        if day == 3:
            main.write(at(3, 8), "delivery.succeeded", reference=refs["kept"], attempt=2)
            main.write(at(3, 9), "receipt.looked_up", reference=refs["purged"], found=False)
        if day == 4:
            main.write(at(4, 10), "receipt.looked_up", reference=refs["kept"], found=True)
            main.write(at(4, 11), "console.viewed", reference=refs["midnight"], view="attempt")
        if day < 4:
            for w in (main, *workers):
                w.rotate(at(day + 1))
    for w in (main, *workers):
        w.log.close()
    return Host(log, refs, arrivals)


async def record(settings: GatewaySettings, reference: str, received: datetime) -> None:
    """The attempt's record in the store, as the SMTP side writes it."""
    facts = MessageFacts(2048, "0" * 64, "<m@firm.example>", "Motion", None, None)
    decision = RecipientRecord(
        RETIRED,
        "retired",
        "reject-after-data",
        "address retired; refused after DATA",
        received,
        office="ice-occ-chicago",
        phase="retired",
        local_time=received.isoformat(),
    )
    message = MessageRecord(
        reference=reference,
        received_at=received,
        session_id="-",
        peer_ip="192.0.2.7",
        peer_port=40000,
        helo="mail.firm.example",
        tls=None,
        mail_from="clerk@firm.example",
        facts=facts,
        recipients=(decision,),
        outcome="rejected",
        reply="550 5.1.6 not filed",
        notice="suppressed:duplicate",
        auth=None,
    )
    store = Store(settings.storage.state_dir / "gateway.sqlite3")
    await store.open()
    try:
        await store.write(lambda conn: insert_gated(conn, message, None))
    finally:
        await store.close()


async def build_host(
    tmp_path: Path, *, shift: timedelta = timedelta(0)
) -> tuple[Host, GatewaySettings]:
    """The host's logs, and a store with the records of two of the three attempts, their
    times `shift` from the log's (a gateway run with `serve --as-of`)."""
    written = write_host(tmp_path / "logs")
    settings = make_settings(
        tmp_path, audit={"log": str(written.log)}, server={"session_timeout": 1800.0}
    )
    settings.storage.state_dir.mkdir(parents=True, exist_ok=True)
    for name in ("kept", "midnight"):  # the purged one's record is gone
        await record(settings, written.refs[name], written.arrivals[name] + shift)
    return written, settings


@pytest.fixture
async def host(tmp_path: Path) -> tuple[Host, GatewaySettings]:
    return await build_host(tmp_path)


def told_by_every_file(files: list[Path], reference: str) -> list[LoggedEvent]:
    """The lines as `audit show` found them before: every line of every file, twice."""

    def lines() -> Iterator[LogLine]:
        for path in files:
            yield from read_lines(path)

    needle = reference.encode()
    mentions = [e for e in (_event(line) for line in lines() if needle in line.raw) if e]
    sessions = {str(v) for e in mentions for k, v in e.fields if k == "session_id"}
    if not sessions:
        return mentions
    keys = [s.encode() for s in sessions]
    return [
        e
        for line in lines()
        if needle in line.raw or any(k in line.raw for k in keys)
        if (e := _event(line)) is not None
        and (needle in line.raw or e.event.startswith("smtp.session"))
    ]


def show(settings: GatewaySettings, reference: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    request = AuditRequest(action="show", targets=(reference,))
    status = run_audit(settings, request, now=at(4, 12), out=out, err=err)
    return status, out.getvalue() + err.getvalue()


def listed(text: str) -> list[str]:
    """Each audit log line of the story: file name, line and event."""
    part = text[text.index("audit log (") :].splitlines()[1:]
    words = [line.split() for line in part if "(seq " in line]
    return [f"{Path(w[0].rpartition(':')[0]).name} {w[4]}" for w in words]


@pytest.mark.parametrize("name", ["kept", "midnight", "purged"])
async def test_the_story_lists_the_same_lines_as_reading_every_file(
    host: tuple[Host, GatewaySettings], name: str
) -> None:
    written, settings = host
    files = log_files(written.log)
    reference = written.refs[name]
    expected = told_by_every_file(files, reference)
    chosen = (
        story_files(read_starts(files), written.arrivals[name], session_limit=SESSION_LIMIT)
        if name != "purged"
        else whole_log(files)
    )
    assert logged_events(lines_holding, reference, chosen) == expected
    status, text = show(settings, reference)
    assert status == (1 if name == "purged" else 0)
    assert listed(text) == [f"{Path(e.where.rpartition(':')[0]).name} {e.event}" for e in expected]
    assert expected  # each attempt has lines to list


async def test_a_retry_and_a_receipt_lookup_in_later_files_are_listed_older_files_unread(
    host: tuple[Host, GatewaySettings],
) -> None:
    written, settings = host
    status, text = show(settings, written.refs["kept"])
    assert status == 0, text
    # Files in the order their first lines were written: the day's log began before the
    # worker's file that took the attempt.
    assert listed(text) == [
        "gateway.log-20170904.gz delivery.deferred",
        "gateway.worker-2.log-20170904.gz smtp.session.opened",
        "gateway.worker-2.log-20170904.gz smtp.message.received",
        "gateway.worker-2.log-20170904.gz smtp.reply.sent",
        "gateway.worker-2.log-20170904.gz smtp.session.closed",
        "gateway.log-20170905 delivery.succeeded",  # the retry, the next day
        "gateway.log receipt.looked_up",  # today
    ]
    header = text[text.index("audit log (") :].splitlines()[0]
    assert "gateway.log-20170903.gz" not in header  # the day before's files end before it
    assert header.endswith("; 6 older ones end before it arrived, not read)")


async def test_a_session_opened_in_the_day_befores_file_is_listed(
    host: tuple[Host, GatewaySettings],
) -> None:
    written, settings = host
    status, text = show(settings, written.refs["midnight"])
    assert status == 0, text
    assert listed(text) == [
        "gateway.worker-1.log-20170904.gz smtp.session.opened",  # 23:59:24, before rotation
        "gateway.worker-1.log-20170905 smtp.message.received",
        "gateway.worker-1.log-20170905 smtp.session.closed",
        "gateway.log console.viewed",
    ]


async def test_a_purged_attempt_still_gets_every_file_read(
    host: tuple[Host, GatewaySettings],
) -> None:
    written, settings = host
    status, text = show(settings, written.refs["purged"])
    assert status == 1
    assert f"no attempt {written.refs['purged']} in the store" in text
    assert listed(text) == [
        "gateway.worker-1.log-20170902.gz smtp.session.opened",
        "gateway.worker-1.log-20170902.gz smtp.message.received",
        "gateway.worker-1.log-20170902.gz smtp.reply.sent",
        "gateway.worker-1.log-20170902.gz smtp.session.closed",
        "gateway.log-20170905 receipt.looked_up",
    ]
    assert "no record in the store to date the attempt by: every file read)" in text


@pytest.mark.parametrize("shift", [timedelta(days=2), timedelta(days=-400)])
async def test_when_the_stores_clock_was_shifted_every_file_is_read(
    tmp_path: Path, shift: timedelta
) -> None:
    written, settings = await build_host(tmp_path, shift=shift)
    for name in ("kept", "midnight"):
        status, text = show(settings, written.refs[name])
        assert status == 0, text
        expected = told_by_every_file(log_files(written.log), written.refs[name])
        assert listed(text) == [
            f"{Path(e.where.rpartition(':')[0]).name} {e.event}" for e in expected
        ]
        assert any(line.endswith(" smtp.session.opened") for line in listed(text))
        assert "(a clock shifted with --as-of, or its lines lost): every file read)" in text


def cut_short(packed: bytes) -> bytes:
    return packed[:-40]  # a disk that filled as logrotate compressed


def garbled(packed: bytes) -> bytes:
    damaged = bytearray(packed)
    damaged[30] ^= 0xFF  # inside the deflate data: zlib's own error, not an OSError
    return bytes(damaged)


@pytest.mark.parametrize("damage", [cut_short, garbled])
async def test_a_damaged_gzip_file_is_named_and_the_rest_of_the_story_still_told(
    host: tuple[Host, GatewaySettings], damage: Callable[[bytes], bytes]
) -> None:
    written, settings = host
    # The retry's day, gzipped by logrotate, then damaged.
    day = Path(settings.audit.log).parent / "gateway.log-20170905"
    damaged = day.with_name(day.name + ".gz")
    damaged.write_bytes(damage(gzip.compress(day.read_bytes())))
    day.unlink()
    out, err = io.StringIO(), io.StringIO()
    request = AuditRequest(action="show", targets=(written.refs["kept"],))
    status = run_audit(settings, request, now=at(4, 12), out=out, err=err)
    assert status == 1  # the story is told, but not whole
    assert f"gateway: cannot read {damaged}: " in err.getvalue()
    assert "Traceback" not in err.getvalue()
    shown = listed(out.getvalue())
    assert "gateway.worker-2.log-20170904.gz smtp.message.received" in shown
    assert "gateway.log receipt.looked_up" in shown  # the files after it are read
    # verify cannot vouch for a chain it cannot read: one line, no traceback.
    out, err = io.StringIO(), io.StringIO()
    status = run_audit(settings, AuditRequest(action="verify"), now=at(4, 12), out=out, err=err)
    assert status == 2
    assert err.getvalue().startswith("gateway: cannot read the log: ")
    assert "Traceback" not in err.getvalue()
