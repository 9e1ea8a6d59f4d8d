"""A chain's anchors in the state store: its first line's hash once, its head over time.

chain.py says what the anchors catch (a forged beginning, a tail cut off). The anchor and a
first checkpoint are written when serving starts, then a thread records the head every
`checkpoint_interval` seconds and once more at stop; the rows are store/anchors.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import structlog

from gateway.audit.chain import ChainedLog, Head
from gateway.errors import StoreError
from gateway.store.anchors import Anchor, Checkpoint
from gateway.store.backend import StoreLocation, head_store, new_store
from gateway.store.interface import HeadStore

__all__ = ["anchored"]

log = structlog.get_logger()


def _head_rows(chain: ChainedLog, head: Head, node: str) -> tuple[Anchor | None, Checkpoint | None]:
    """The chain's anchor once its first line is written (saved again: ignored), and its head."""
    anchor = None
    if chain.is_new and chain.first_hash is not None:
        anchor = Anchor(head.chain, chain.started_at, chain.destination, chain.first_hash, node)
    point = Checkpoint(head.chain, head.seq, head.hash, datetime.now(UTC)) if head.seq else None
    return anchor, point


async def _open_once(store: StoreLocation) -> None:
    record = new_store(store)  # creates the file (or the schema) and tables on a first start
    await record.open()
    await record.close()


class _Checkpoints:
    """A thread that records the chain's head in the store every `every_s` seconds."""

    def __init__(self, chain: ChainedLog, heads: HeadStore, *, node: str, every_s: float) -> None:
        self._chain = chain
        self._heads = heads
        self._node = node
        self._every_s = every_s
        self._stop = threading.Event()
        self._saved = chain.head
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and record the head one last time."""
        self._stop.set()
        self._thread.join()
        self._save()
        self._heads.close()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._save()

    def _save(self) -> None:
        head = self._chain.head
        if head == self._saved or head.seq == 0:
            return
        try:
            self._heads.save_head(*_head_rows(self._chain, head, self._node))
        except StoreError as exc:
            log.error("store.checkpoint_failed", error=str(exc))
            return
        self._saved = head


@contextlib.contextmanager
def anchored(chain: ChainedLog | None, store: StoreLocation, *, every_s: float) -> Iterator[None]:
    """Anchor `chain` in the store, checkpoint its head while the body runs and once more
    when it ends. Does nothing for a log without a chain (the console format).

    Raises:
        StoreError: the store cannot be opened or written.
    """
    if chain is None:
        yield
        return
    asyncio.run(_open_once(store))
    heads = head_store(store)
    try:
        heads.save_head(*_head_rows(chain, chain.head, store.node))
    except StoreError:
        heads.close()
        raise
    checkpoints = _Checkpoints(chain, heads, node=store.node, every_s=every_s)
    checkpoints.start()
    try:
        yield
    finally:
        checkpoints.close()
