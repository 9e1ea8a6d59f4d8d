"""The audit log's hash chain: real log files written by the real writer, then edited.

Each test writes lines through `ChainedLog` (the structlog logger the gateway uses) to a file
in tmp_path, tampers with the file the way someone covering their tracks would (an edited
line, a deleted one, two swapped, a cut-off tail, a forged beginning) and checks that verify
names the first bad line. Anchors and checkpoints go through a real state store.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from gateway.audit.anchoring import anchored
from gateway.audit.chain import (
    GENESIS,
    AuditLogBusy,
    ChainedLog,
    line_hash,
    link,
    load_anchors,
    load_checkpoints,
)
from gateway.audit.verify import Problem, Verification, log_files, order_files, read_lines, verify
from gateway.store.backend import StoreLocation
from gateway.store.db import connect


def event(n: int) -> str:
    """A rendered event as structlog's JSON renderer would hand it to the logger."""
    return json.dumps({"reference": f"20170913-REF{n:06d}", "event": "smtp.reply.sent", "n": n})


def write(chain: ChainedLog, count: int, *, start: int = 0) -> None:
    for n in range(start, start + count):
        chain.msg(event(n))


def write_log(path: Path, count: int) -> None:
    chain = ChainedLog.to_file(path, check_every_s=0)
    try:
        write(chain, count)
    finally:
        chain.close()


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def check(*paths: Path, database: Path | None = None) -> Verification:
    anchors = checkpoints = None
    if database is not None:
        with contextlib.closing(connect(database, readonly=True)) as conn:
            anchors, checkpoints = load_anchors(conn), load_checkpoints(conn)
    ordered = order_files(paths)
    return verify(
        (line for path in ordered for line in read_lines(path)),
        anchors=anchors,
        checkpoints=checkpoints,
    )


def first_problem(result: Verification) -> tuple[Problem, str]:
    assert not result.is_intact, "verify found nothing"
    first = result.findings[0]
    return first.problem, first.where


# -- linking: pure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rendered", "expected"),
    [
        ('{"event": "x"}', '{"event": "x", "chain": "c", "seq": 3, "prev": "p"}'),
        ("{}", '{"chain": "c", "seq": 3, "prev": "p"}'),
        ('{"event": "x"}\n', '{"event": "x", "chain": "c", "seq": 3, "prev": "p"}'),
    ],
)
def test_link_appends_chain_seq_and_prev_to_the_rendered_object(
    rendered: str, expected: str
) -> None:
    assert link(rendered, chain="c", seq=3, prev="p") == expected
    assert json.loads(expected)["seq"] == 3


def test_each_line_names_the_hash_of_the_exact_bytes_before_it(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 3)
    first, second, third = (json.loads(line) for line in lines_of(log))
    raw = lines_of(log)
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert second["prev"] == line_hash(raw[0])
    assert third["prev"] == line_hash(raw[1])
    assert first["chain"] == second["chain"] == third["chain"]
    assert third["event"] == "smtp.reply.sent"  # the event's own keys are untouched


# -- the untouched log passes -------------------------------------------------------------------


def test_an_untouched_log_verifies(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 20)
    result = check(log)
    assert result.is_intact, result.findings
    assert result.records == 20
    (span,) = result.chains
    assert (span.first_seq, span.last_seq) == (1, 20)


def test_lines_written_from_many_threads_still_form_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    chain = ChainedLog.to_file(log, check_every_s=0)
    threads = [
        threading.Thread(target=write, args=(chain, 200), kwargs={"start": 1000 * t})
        for t in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    chain.close()
    result = check(log)
    assert result.is_intact, result.findings[:3]
    assert result.records == 1600


def test_a_copy_saved_with_windows_line_ends_still_verifies(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 5)
    copy = tmp_path / "saved.log"
    copy.write_bytes(log.read_bytes().replace(b"\n", b"\r\n"))
    assert check(copy).is_intact


# -- tampering is caught, at the first bad line --------------------------------------------------


def test_an_edited_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 10)
    lines = lines_of(log)
    lines[4] = lines[4].replace(b"REF000004", b"REF999999")
    rewrite(log, lines)
    problem, where = first_problem(check(log))
    assert (problem, where) == (Problem.ALTERED, f"{log}:5")


def test_a_deleted_line_is_reported_missing(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 10)
    lines = lines_of(log)
    del lines[4]
    rewrite(log, lines)
    result = check(log)
    assert first_problem(result) == (Problem.MISSING, f"{log}:5")
    assert "seq 5 " in result.findings[0].detail
    assert len(result.findings) == 1


def test_a_deleted_stretch_is_one_finding_and_a_moved_block_is_not_missing(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 100)
    lines = lines_of(log)
    rewrite(log, lines[:10] + lines[60:])
    result = check(log)
    assert [(f.problem, f.where, f.detail) for f in result.findings] == [
        (Problem.MISSING, f"{log}:11", "records seq 11-60 are not in the log")
    ]
    rewrite(log, lines[:10] + lines[30:] + lines[10:30])  # seq 11-30 moved to the end
    result = check(log)
    assert [(f.problem, f.where) for f in result.findings] == [(Problem.REORDERED, f"{log}:11")]
    assert "records seq 11-30 come later" in result.findings[0].detail


def test_swapped_lines_are_reported_reordered_not_missing(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 10)
    lines = lines_of(log)
    lines[4], lines[5] = lines[5], lines[4]
    rewrite(log, lines)
    result = check(log)
    assert first_problem(result) == (Problem.REORDERED, f"{log}:5")
    assert {f.problem for f in result.findings} == {Problem.REORDERED}


def test_a_line_moved_far_is_one_reordering(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 30)
    lines = lines_of(log)
    lines.append(lines.pop(2))  # the third record now comes last
    rewrite(log, lines)
    result = check(log)
    assert first_problem(result) == (Problem.REORDERED, f"{log}:3")
    assert len(result.findings) == 1
    assert "seq 3 " in result.findings[0].detail


def test_a_duplicated_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 10)
    lines = lines_of(log)
    lines.insert(6, lines[5])
    rewrite(log, lines)
    result = check(log)
    assert first_problem(result) == (Problem.DUPLICATED, f"{log}:7")
    assert f"first at {log}:6" in result.findings[0].detail


def test_a_line_without_the_chain_inserted_is_named(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 10)
    lines = lines_of(log)
    lines.insert(3, b'{"event": "smtp.reply.sent", "reference": "20170913-FORGED0000"}')
    rewrite(log, lines)
    assert first_problem(check(log)) == (Problem.INSERTED, f"{log}:4")


def test_a_file_cut_inside_its_last_line_is_reported_cut_short(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 10)
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])
    result = check(log)
    assert first_problem(result) == (Problem.DAMAGED, f"{log}:10")
    assert "cut short" in result.findings[0].detail


def test_a_rewritten_tail_passes_the_file_alone_but_not_the_stores_checkpoint(
    tmp_path: Path,
) -> None:
    # Someone who edits a line and recomputes every link after it leaves a consistent file;
    # only what the store recorded of the chain's head can show it.
    log, database = tmp_path / "gateway.log", tmp_path / "state" / "gateway.sqlite3"
    chain = ChainedLog.to_file(log, check_every_s=0)
    with anchored(chain, StoreLocation(database, node="n1"), every_s=3600):
        write(chain, 10)
    chain.close()
    lines = lines_of(log)
    lines[6] = lines[6].replace(b"REF000006", b"REF999999")
    prev = line_hash(lines[6])
    for i in range(7, len(lines)):
        record = json.loads(lines[i])
        record["prev"] = prev
        lines[i] = json.dumps(record).encode()
        prev = line_hash(lines[i])
    rewrite(log, lines)
    assert check(log).is_intact  # the chain alone cannot tell
    problem, where = first_problem(check(log, database=database))
    assert (problem, where) == (Problem.ALTERED, f"{log}:10")


# -- the ends of a chain, against the store --------------------------------------------------------


def test_a_cut_off_tail_is_caught_against_the_stop_checkpoint(tmp_path: Path) -> None:
    log, database = tmp_path / "gateway.log", tmp_path / "state" / "gateway.sqlite3"
    chain = ChainedLog.to_file(log, check_every_s=0)
    with anchored(chain, StoreLocation(database, node="n1"), every_s=3600):
        write(chain, 10)
    chain.close()
    assert check(log, database=database).is_intact
    rewrite(log, lines_of(log)[:7])
    assert check(log).is_intact  # without the store, a shorter log looks complete
    result = check(log, database=database)
    assert first_problem(result) == (Problem.TRUNCATED, f"{log}:7")
    assert "ends at seq 7" in result.findings[0].detail
    assert "seq 10" in result.findings[0].detail


def test_the_store_records_the_head_while_the_gateway_runs(tmp_path: Path) -> None:
    log, database = tmp_path / "gateway.log", tmp_path / "state" / "gateway.sqlite3"
    chain = ChainedLog.to_file(log, check_every_s=0)
    with anchored(chain, StoreLocation(database, node="n1"), every_s=0.01):
        write(chain, 5)
        with contextlib.closing(connect(database, readonly=True)) as conn:
            deadline = 200
            while deadline and not any(
                p.seq == 5 for p in load_checkpoints(conn).get(chain.head.chain, [])
            ):
                threading.Event().wait(0.01)
                deadline -= 1
        assert deadline, "no checkpoint of the running chain's head"
    chain.close()


def test_a_forged_beginning_is_not_anchored(tmp_path: Path) -> None:
    log, database = tmp_path / "gateway.log", tmp_path / "state" / "gateway.sqlite3"
    chain = ChainedLog.to_file(log, check_every_s=0)
    with anchored(chain, StoreLocation(database, node="n1"), every_s=3600):
        write(chain, 3)
    chain.close()
    forged = tmp_path / "forged.log"
    write_log(forged, 3)  # a chain of its own, never anchored
    problem, where = first_problem(check(forged, database=database))
    assert (problem, where) == (Problem.UNANCHORED, f"{forged}:1")
    lines = lines_of(log)
    lines[0] = lines[0].replace(b'"event"', b'"note": "x", "event"')
    rewrite(log, lines)
    result = check(log, database=database)
    assert first_problem(result) == (Problem.ALTERED, f"{log}:1")


def test_standard_output_starts_a_chain_per_start_and_the_saved_stream_verifies(
    tmp_path: Path,
) -> None:
    # Docker: each container start writes a new chain to stdout; `docker logs` saves them all.
    database = tmp_path / "state" / "gateway.sqlite3"
    stream = io.StringIO()
    for start in range(2):
        chain = ChainedLog.to_stream(stream)
        with anchored(chain, StoreLocation(database, node="n1"), every_s=3600):
            write(chain, 4, start=10 * start)
    saved = tmp_path / "saved.log"
    saved.write_text(stream.getvalue(), encoding="utf-8")
    result = check(saved, database=database)
    assert result.is_intact, result.findings
    assert [(s.first_seq, s.last_seq, s.anchored) for s in result.chains] == [
        (1, 4, True),
        (1, 4, True),
    ]


# -- restarts and rotation -----------------------------------------------------------------------


def test_a_restart_continues_the_chain_of_the_files_last_line(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 3)
    again = ChainedLog.to_file(log, check_every_s=0)
    assert not again.is_new
    write(again, 2, start=3)
    again.close()
    result = check(log)
    assert result.is_intact
    assert [(s.first_seq, s.last_seq) for s in result.chains] == [(1, 5)]


def test_a_second_writer_of_the_same_file_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    first = ChainedLog.to_file(log)
    try:
        with pytest.raises(AuditLogBusy, match="another process"):
            ChainedLog.to_file(log)
    finally:
        first.close()


def test_a_restart_after_a_cut_line_starts_a_new_chain_and_the_cut_line_is_reported(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 3)
    with log.open("ab") as file:
        file.write(b'{"event": "smtp.reply.sent", "refer')  # the process died mid-write
    again = ChainedLog.to_file(log, check_every_s=0)
    assert again.is_new
    write(again, 2)
    again.close()
    result = check(log)
    assert [(f.problem, f.where) for f in result.findings] == [(Problem.DAMAGED, f"{log}:4")]
    assert [(s.first_seq, s.last_seq) for s in result.chains] == [(1, 3), (1, 2)]


def test_lines_from_before_the_chain_are_counted_not_failed(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    log.write_text('{"event": "gateway.started"}\n{"event": "gateway.listening"}\n')
    write_log(log, 3)
    result = check(log)
    assert result.is_intact
    assert result.unchained == 2


def test_rotation_by_rename_continues_the_chain_in_the_new_file(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    chain = ChainedLog.to_file(log, check_every_s=0)
    write(chain, 3)
    os.rename(log, tmp_path / "gateway.log.1")  # logrotate's `create`
    write(chain, 4, start=3)
    os.rename(log, tmp_path / "gateway.log.2")
    write(chain, 2, start=7)
    chain.close()
    first, second, current = (
        tmp_path / n for n in ("gateway.log.1", "gateway.log.2", "gateway.log")
    )
    assert [len(lines_of(p)) for p in (first, second, current)] == [3, 4, 2]
    assert json.loads(lines_of(second)[0])["prev"] == line_hash(lines_of(first)[-1])
    # A shell glob gives gateway.log first; the files are put back in the order written.
    assert order_files([current, first, second]) == [first, second, current]
    assert log_files(log) == [first, second, current]
    result = check(current, first, second)
    assert result.is_intact
    assert result.records == 9


def test_a_rotated_file_verifies_alone_and_compressed(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    chain = ChainedLog.to_file(log, check_every_s=0)
    write(chain, 3)
    os.rename(log, tmp_path / "gateway.log.1")
    write(chain, 3, start=3)
    chain.close()
    with (
        (tmp_path / "gateway.log.1").open("rb") as plain,
        gzip.open(tmp_path / "gateway.log.1.gz", "wb") as packed,
    ):
        shutil.copyfileobj(plain, packed)
    (tmp_path / "gateway.log.1").unlink()
    alone = check(log)
    assert alone.is_intact
    assert [(s.first_seq, s.last_seq) for s in alone.chains] == [(4, 6)]
    assert check(tmp_path / "gateway.log.1.gz", log).records == 6
    assert check(tmp_path / "gateway.log.1.gz", log).is_intact


def test_copytruncate_loses_lines_and_verify_says_which(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    chain = ChainedLog.to_file(log, check_every_s=0)
    write(chain, 3)
    shutil.copy(log, tmp_path / "gateway.log.1")  # logrotate copytruncate: copy...
    write(chain, 2, start=3)  # ...lines written meanwhile...
    os.truncate(log, 0)  # ...then truncate: those two lines are gone
    write(chain, 2, start=5)
    chain.close()
    result = check(tmp_path / "gateway.log.1", log)
    assert first_problem(result) == (Problem.MISSING, f"{log}:1")
    assert "seq 4-5 " in result.findings[0].detail
