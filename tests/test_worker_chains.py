"""The audit log of a supervisor's workers: one chain per process, all verified together.

Each worker writes a file of its own beside the configured log (`gateway.worker-N.log`),
with its own chain; on standard output the workers' chains interleave line by line. Verify
walks each chain on its own, so either way every chain is checked link by link.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import threading
from pathlib import Path
from typing import TextIO

from gateway.audit.chain import ChainedLog, worker_log
from gateway.audit.verify import Problem, log_files
from tests.test_chain import check, event, first_problem, lines_of, rewrite, write, write_log


def test_each_worker_writes_a_file_of_its_own_beside_the_log() -> None:
    assert worker_log("/var/log/gw/gateway.log", 2) == "/var/log/gw/gateway.worker-2.log"
    assert worker_log("audit", 1) == "audit.worker-1"
    assert worker_log("-", 1) == "-"  # standard output is shared, line by line


def interleaved(tmp_path: Path, *, count: int = 6) -> Path:
    """Two workers' chains on one standard output, their lines alternating, saved."""
    streams = [io.StringIO(), io.StringIO()]
    for number, stream in enumerate(streams):
        write(ChainedLog.to_stream(stream), count, start=100 * number)
    pairs = zip(*(s.getvalue().splitlines() for s in streams), strict=True)
    saved = tmp_path / "saved.log"
    saved.write_text("".join(f"{line}\n" for line in itertools.chain(*pairs)), encoding="utf-8")
    return saved


def test_chains_interleaved_line_by_line_each_verify(tmp_path: Path) -> None:
    result = check(interleaved(tmp_path))
    assert result.is_intact, result.findings
    assert [(s.first_seq, s.last_seq, s.records) for s in result.chains] == [(1, 6, 6), (1, 6, 6)]


def test_an_edited_line_among_interleaved_chains_is_named(tmp_path: Path) -> None:
    saved = interleaved(tmp_path)
    lines = lines_of(saved)
    lines[4] = lines[4].replace(b"REF000002", b"REF000009")  # the first chain's third line
    rewrite(saved, lines)
    assert first_problem(check(saved)) == (Problem.ALTERED, f"{saved}:5")


def test_a_line_deleted_from_one_of_interleaved_chains_is_missing(tmp_path: Path) -> None:
    saved = interleaved(tmp_path)
    lines = lines_of(saved)
    del lines[7]  # the second chain's fourth line
    rewrite(saved, lines)
    result = check(saved)
    assert [f.problem for f in result.findings] == [Problem.MISSING]
    assert "seq 4" in result.findings[0].detail


def test_the_configured_log_brings_its_workers_logs_and_their_rotations(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    write_log(log, 2)
    first, second = (Path(worker_log(str(log), n)) for n in (1, 2))
    worker = ChainedLog.to_file(first, check_every_s=0)
    write(worker, 3)
    first.rename(tmp_path / "gateway.worker-1.log.1")  # logrotate's create
    assert worker.reopen()
    write(worker, 2, start=3)  # the new file goes on from the old one's last line
    worker.close()
    write_log(second, 4)
    (tmp_path / "unrelated.log").write_text(event(1) + "\n", encoding="utf-8")

    files = log_files(log)
    assert {f.name for f in files} == {
        "gateway.log",
        "gateway.worker-1.log.1",
        "gateway.worker-1.log",
        "gateway.worker-2.log",
    }
    assert files.index(tmp_path / "gateway.worker-1.log.1") < files.index(first)
    result = check(*files)
    assert result.is_intact, result.findings
    assert sorted((s.first_seq, s.last_seq) for s in result.chains) == [(1, 2), (1, 4), (1, 5)]


def test_long_lines_of_processes_sharing_a_pipe_stay_whole_under_the_lock(tmp_path: Path) -> None:
    # Lines far longer than the pipe holds are written in pieces as the reader drains it;
    # without the shared lock another writer's pieces land in between. Threads stand in for
    # the processes: the lock is taken on an open file of each writer's own, as a process's.
    read_end, write_end = os.pipe()
    lock = tmp_path / "stdout.lock"
    saved = tmp_path / "saved.log"
    count, size = 20, 300_000

    def drain() -> None:
        with os.fdopen(read_end, "rb") as pipe, saved.open("wb") as out:
            shutil.copyfileobj(pipe, out)

    def writer(number: int, stream: TextIO) -> None:
        chain = ChainedLog.to_stream(stream, shared_with=lock)
        for n in range(count):
            chain.msg(json.dumps({"event": "x", "n": n, "pad": str(number) * size}))
        chain.close()

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_end, "w", encoding="ascii") as first:
        second = os.fdopen(os.dup(write_end), "w", encoding="ascii")
        with second:
            writers = [
                threading.Thread(target=writer, args=(n, s)) for n, s in ((1, first), (2, second))
            ]
            for thread in writers:
                thread.start()
            for thread in writers:
                thread.join(timeout=60)
    reader.join(timeout=60)
    result = check(saved)
    assert result.is_intact, result.findings[:3]
    assert [s.records for s in result.chains] == [count, count]
