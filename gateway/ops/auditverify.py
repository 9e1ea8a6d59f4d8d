"""`gateway audit verify [FILES]`: checks the audit log's hash chain, and says what it found.

The checking is audit/verify.py's; the chains' anchors and checkpoints come from the store
when there is one (read-only). Only the finding's text is made here.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from gateway.audit.chain import Anchor, Checkpoint, load_anchors, load_checkpoints
from gateway.audit.verify import ChainSpan, Verification, log_files, order_files, verify
from gateway.config import GatewaySettings
from gateway.ops.auditrequest import (
    EXIT_FOUND_PROBLEMS,
    EXIT_OK,
    AuditRequest,
    UsageError,
    log_lines,
)
from gateway.store.db import connect

__all__ = ["verify_logs"]


def verify_logs(settings: GatewaySettings, request: AuditRequest, out: TextIO) -> int:
    files = _files_to_verify(settings, request)
    anchors, checkpoints = _chain_records(settings) if request.use_store else (None, None)
    try:
        result = verify(log_lines(files), anchors=anchors, checkpoints=checkpoints)
    except (OSError, EOFError) as exc:
        raise UsageError(f"cannot read the log: {exc}") from exc
    _write_verification(result, files, has_store=anchors is not None, out=out)
    return EXIT_OK if result.is_intact else EXIT_FOUND_PROBLEMS


def _files_to_verify(settings: GatewaySettings, request: AuditRequest) -> list[Path]:
    if request.targets:
        paths = [Path(t) for t in request.targets]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UsageError(f"no such file: {', '.join(missing)}")
        return order_files(paths)
    if settings.audit.log == "-":
        raise UsageError(
            "the log goes to standard output: save it (docker logs gateway > saved.log)"
            " and give the file: gateway audit verify saved.log"
        )
    files = log_files(Path(settings.audit.log))
    if not files:
        raise UsageError(f"no audit log at {settings.audit.log}")
    return files


def _chain_records(
    settings: GatewaySettings,
) -> tuple[dict[str, Anchor] | None, dict[str, list[Checkpoint]] | None]:
    path = settings.storage.database
    if not path.is_file():
        return None, None
    with contextlib.closing(connect(path, readonly=True)) as conn:
        try:
            return load_anchors(conn), load_checkpoints(conn)
        except sqlite3.OperationalError:
            return {}, {}  # a store from before the chain: nothing is anchored in it


def _write_verification(
    result: Verification, files: Sequence[Path], *, has_store: bool, out: TextIO
) -> None:
    out.write(f"checked, oldest first: {', '.join(str(f) for f in files)}\n")
    for span in result.chains:
        out.write(f"  {_span_text(span)}\n")
    if result.unchained:
        lines = "1 line carries" if result.unchained == 1 else f"{result.unchained} lines carry"
        out.write(
            f"  note: {lines} no chain, before the first one (written before the gateway"
            " chained its log)\n"
        )
    if not has_store:
        out.write("  note: no state store; the chains' beginnings and ends were not checked\n")
    if result.is_intact:
        out.write(f"OK: {result.records} records, chain intact\n")
        return
    first, *rest = result.findings
    out.write(f"FAILED: {first}\n")
    for finding in rest[:_MAX_FINDINGS]:
        out.write(f"  and {finding}\n")
    if len(rest) > _MAX_FINDINGS:
        out.write(f"  and {len(rest) - _MAX_FINDINGS} more problems\n")


_MAX_FINDINGS = 50


def _span_text(span: ChainSpan) -> str:
    text = f"chain {span.chain}: seq {span.first_seq}-{span.last_seq} ({span.records} records)"
    if span.first_seq > 1:
        text += f"; seq 1-{span.first_seq - 1} are in earlier files, not given"
    elif span.anchored:
        text += "; its first record matches its anchor in the store"
    if span.last_checkpoint is not None:
        after = span.last_seq - span.last_checkpoint
        text += f"; {span.checkpoints_matched} store checkpoints match, the last at seq"
        text += f" {span.last_checkpoint}"
        if after:
            text += f" ({after} later record{'s' if after != 1 else ''} not yet checkpointed)"
    return text
