"""The audit log's anchors in the state store: each chain's first line and its heads.

`audit_chains` holds a chain's id, the hash of its first line and the node whose log it is,
`audit_checkpoints` its head over time (audit/chain.py says why). This module only saves and
loads those rows; it neither links nor verifies lines.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.store.db import connect, iso

__all__ = [
    "Anchor",
    "Checkpoint",
    "load_anchors",
    "load_checkpoints",
    "save_head",
    "save_head_now",
]


@dataclass(frozen=True, slots=True)
class Anchor:
    chain: str
    started_at: datetime
    log: str  # the file, or "-" for standard output
    first_hash: str
    node: str | None = None  # the host that writes it; None: anchored before schema 4


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain: str
    seq: int
    hash: str
    at: datetime


def save_head(
    conn: sqlite3.Connection, anchor: Anchor | None, checkpoint: Checkpoint | None
) -> None:
    """Save a chain's anchor and a checkpoint, either optional; one already saved is kept."""
    if anchor is not None:
        conn.execute(
            "INSERT OR IGNORE INTO audit_chains (chain, started_at, log, first_hash, node)"
            " VALUES (?,?,?,?,?)",
            (anchor.chain, iso(anchor.started_at), anchor.log, anchor.first_hash, anchor.node),
        )
    if checkpoint is not None:
        conn.execute(
            "INSERT OR IGNORE INTO audit_checkpoints (chain, seq, hash, at) VALUES (?,?,?,?)",
            (checkpoint.chain, checkpoint.seq, checkpoint.hash, iso(checkpoint.at)),
        )


def save_head_now(database: Path, anchor: Anchor | None, checkpoint: Checkpoint | None) -> None:
    """`save_head` in a transaction of its own, on a connection of its own.

    For a thread beside the store's writer (the checkpoint timer), which must not wait on
    an event loop.

    Raises:
        sqlite3.Error: the store cannot be opened or written.
    """
    with contextlib.closing(connect(database)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        save_head(conn, anchor, checkpoint)
        conn.execute("COMMIT")


def load_anchors(conn: sqlite3.Connection) -> dict[str, Anchor]:
    """Every chain anchored in the store, by id."""
    # `*`: a file read-only beside an older gateway may be at version 3, without `node`.
    cursor = conn.execute("SELECT * FROM audit_chains")
    names = [d[0] for d in cursor.description]
    found = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values, strict=True))
        started_at = datetime.fromisoformat(row["started_at"])
        found[row["chain"]] = Anchor(
            row["chain"], started_at, row["log"], row["first_hash"], row.get("node")
        )
    return found


def load_checkpoints(conn: sqlite3.Connection) -> dict[str, list[Checkpoint]]:
    """Every chain's checkpoints, by id, in seq order."""
    found: dict[str, list[Checkpoint]] = {}
    rows = conn.execute("SELECT chain, seq, hash, at FROM audit_checkpoints ORDER BY chain, seq")
    for chain, seq, digest, at in rows.fetchall():
        found.setdefault(chain, []).append(
            Checkpoint(chain, seq, digest, datetime.fromisoformat(at))
        )
    return found
