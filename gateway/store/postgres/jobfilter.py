"""The operator's job filter on the shared store: queueactions.JobFilter in PostgreSQL's SQL.

One reading of "which jobs" for both that ask it: `gateway queue` (operator.py, listing and
changing) and the console's queue page (reading.py's AuditReader.list_jobs), as the SQLite
file answers both with queueactions.queued_jobs. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from gateway.store.postgres.rows import queued_from_row
from gateway.store.queueactions import JobFilter, QueuedJob

__all__ = ["job_where", "queued_jobs"]


def queued_jobs(conn: psycopg.Connection[dict[str, Any]], which: JobFilter) -> list[QueuedJob]:
    """The jobs `which` names, of every node, oldest first, with their leases."""
    where, params = job_where(which, which.states)
    rows = conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", params).fetchall()
    return [queued_from_row(row) for row in rows]


def job_where(which: JobFilter, states: Sequence[str]) -> tuple[str, list[object]]:
    """The condition on jobs that `which` makes, in `states` (which.states, or narrower)."""
    clauses, params = ["true"], list[object]()
    for column, values in (("id", which.ids), ("state", states), ("kind", which.kinds)):
        if values:
            clauses.append(f"{column} = ANY (%s)")
            params.append(list(values))
    if which.since is not None:
        clauses.append("created_at >= %s")
        params.append(which.since)
    if which.recipient is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM jsonb_array_elements_text(recipients) AS r (address)"
            " WHERE lower(r.address) = %s)"
        )
        params.append(which.recipient.lower())
    return " AND ".join(clauses), params
