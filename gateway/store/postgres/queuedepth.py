"""The shared queue's depth on PostgreSQL: store/queuedepth.py's read, per node.

One statement per read, grouped by the node that queued each job and its state, so that a
scrape costs one round trip whatever the queue's size. Every node reads the same shared
queue, so every node reports the same figures. Nothing here writes.
"""

from __future__ import annotations

from gateway.store.postgres.reading import Connected
from gateway.store.queuedepth import DEPTH_STATES, QueueDepth, queue_depth

__all__ = ["PgQueueDepth"]

_DEPTH = (
    "SELECT node, state, count(*) AS jobs, min(created_at) AS oldest FROM jobs"
    " WHERE state = ANY (%s) GROUP BY node, state"
)


class PgQueueDepth(Connected):
    """interface.QueueGauges on PostgreSQL, on one connection of its own."""

    def read_depth(self) -> QueueDepth:
        """The shared queue's depth now, per node.

        Raises:
            StoreError: the server cannot be reached or read (no password in the text).
        """
        states = [str(s) for s in DEPTH_STATES]
        rows = self._run(lambda conn: conn.execute(_DEPTH, (states,)).fetchall())
        return queue_depth((r["node"], r["state"], r["jobs"], r["oldest"]) for r in rows)
