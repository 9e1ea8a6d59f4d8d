"""A worker's part under a supervisor: who it is, how it says it serves, how it sees the
supervisor go.

`gateway serve --worker-index I ...` (supervisor.py starts it) runs app.serve with a
WorkerRole. This module holds what only such a worker does beside serving: tell the supervisor
once it serves, and stop if the supervisor dies without passing a signal on. It never serves,
binds or logs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ListenAddress

__all__ = ["WORKER_ENDPOINT", "WorkerRole", "stdout_lock", "watch_parent"]

# Where a worker answers its supervisor's /readyz: loopback, any free port.
WORKER_ENDPOINT = ListenAddress("127.0.0.1", 0)
# How often a worker looks whether its supervisor is still there.
PARENT_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process serves as worker `index` (1 to `count`) under a supervisor."""

    index: int
    count: int
    listen_fds: tuple[int, ...]  # the listening sockets the supervisor bound
    ready_fd: int  # written once serving: this worker's /readyz port, then closed
    run_dir: Path  # the supervisor's directory for this run (metrics files, the stdout lock)

    @property
    def stdout_lock(self) -> Path:
        """The lock file every process of the run takes to write a line to standard output."""
        return stdout_lock(self.run_dir)

    @property
    def slot(self) -> str:
        """The worker's name in leases and logs; the same in each of its lives."""
        return f"worker-{self.index}"

    def tell_ready(self, port: int) -> None:
        """Tell the supervisor this worker serves, and the port of its /readyz (0: none).

        One short line on a pipe of its own, then closed: the supervisor waits for it (or for
        the pipe to close unwritten, when the worker ended before serving).
        """
        try:
            os.write(self.ready_fd, f"{port}\n".encode())
        finally:
            os.close(self.ready_fd)


def stdout_lock(run_dir: Path) -> Path:
    """The lock file of a run's shared standard output (ChainedLog.to_stream)."""
    return run_dir / "stdout.lock"


async def watch_parent(stop: Callable[[str], None], *, every_s: float = PARENT_CHECK_S) -> None:
    """Call `stop("supervisor-gone")` once the supervisor is gone (killed without passing a
    signal on): a worker left alone would serve on, unsupervised. Runs until then."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - no event says a parent died; polling does
        await asyncio.sleep(every_s)
    stop("supervisor-gone")
