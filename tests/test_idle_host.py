"""What an idle host runs: `gateway serve` with two workers and no notice to compose.

Every process of the host costs its own interpreter's memory (some 70 MiB RSS each), so an
idle host runs the supervisor and its workers and nothing else: a worker's composer
processes (and multiprocessing's resource tracker that comes with them) start at its first
notice.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.test_serve_process import AFTER_CUTOFF, serving
from tests.test_workers import started_pid, workers_config


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # ended meanwhile
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


async def test_an_idle_host_runs_the_supervisor_and_its_workers_and_nothing_else(
    tmp_path: Path,
) -> None:
    async with serving(workers_config(tmp_path), as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        workers = sorted(started_pid(gateway, index) for index in (1, 2))
        under_supervisor = sorted(children_of(gateway.process.pid))
        under_workers = [children_of(pid) for pid in workers]
        assert await gateway.stop() == 0
    assert under_supervisor == workers
    assert under_workers == [[], []]
