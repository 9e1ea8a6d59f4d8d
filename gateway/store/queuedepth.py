"""The queue's depth: how many jobs wait in each state, and since when, for /metrics.

One read per scrape, of every job not yet history (delivered and deleted jobs are not queue):
waiting (queued, in flight, deferred), held by an operator, or failed (dead letters an
operator may retry). On the shared PostgreSQL store the counts come per node, the node that
queued each job (postgres/queuedepth.py); the SQLite file of one host has no node. The value
and its one pure step are here, with the SQLite reader; nothing here writes or serves.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.errors import StoreError
from gateway.store.db import connect
from gateway.store.outbox import count_jobs
from gateway.vocabulary import JobState

__all__ = ["DEPTH_STATES", "WAITING_STATES", "QueueDepth", "SqliteQueueDepth", "queue_depth"]

# Jobs still to be delivered: the queue proper, whose oldest job is the age gauge.
WAITING_STATES = (JobState.QUEUED, JobState.IN_FLIGHT, JobState.DEFERRED)
# Held jobs are counted but not aged: an operator keeps them back on purpose.
DEPTH_STATES = (*WAITING_STATES, JobState.HELD, JobState.FAILED)

# (node, state, count, created_at of the oldest): one row of the read, node None in SQLite.
Row = tuple[str | None, str, int, datetime]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Jobs per node and state (node None: a store of one host), and the oldest waiting."""

    jobs: Mapping[tuple[str | None, JobState], int]
    oldest_waiting: datetime | None  # created_at of the oldest job still to be delivered

    def by_state(self) -> dict[JobState, int]:
        """The whole queue: every DEPTH_STATES state, 0 where no job is in it."""
        totals = dict.fromkeys(DEPTH_STATES, 0)
        for (_node, state), count in self.jobs.items():
            totals[state] += count
        return totals


def queue_depth(rows: Iterable[Row]) -> QueueDepth:
    """The depth from the rows of one read (states outside DEPTH_STATES left out)."""
    jobs: dict[tuple[str | None, JobState], int] = {}
    oldest: datetime | None = None
    for node, name, count, first in rows:
        state = JobState(name)
        if state not in DEPTH_STATES:
            continue
        jobs[node, state] = jobs.get((node, state), 0) + count
        if state in WAITING_STATES and (oldest is None or first < oldest):
            oldest = first
    return QueueDepth(jobs, oldest)


class SqliteQueueDepth:
    """interface.QueueGauges on the SQLite file: a read-only connection for each read."""

    def __init__(self, database: Path) -> None:
        self._database = database

    def read_depth(self) -> QueueDepth:
        """The queue's depth now, from one read transaction.

        Raises:
            StoreError: the file cannot be read.
        """
        try:
            with contextlib.closing(connect(self._database, readonly=True)) as conn:
                counts = count_jobs(conn, DEPTH_STATES)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self._database}: {exc}") from exc
        return queue_depth((None, s, c.count, c.oldest) for s, c in counts.items())

    def close(self) -> None:
        """Nothing to close: each read opens the file for itself."""
