"""`gateway audit verify [FILES]`: checks the audit log's hash chain, and says what it found.

The checking is audit/verify.py's; the chains' anchors and checkpoints come from the store
when there is one (read-only). A shared store also holds other nodes' chains, whose logs are
on their own hosts: they are listed, by node, as anchored there and not checked here. Only
the finding's text is made here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gateway.audit.chain import Anchor
from gateway.audit.verify import (
    UNREADABLE,
    ChainSpan,
    Verification,
    log_files,
    order_files,
    verify,
)
from gateway.config import GatewaySettings
from gateway.ops.auditrequest import (
    EXIT_FOUND_PROBLEMS,
    EXIT_OK,
    AuditRequest,
    UsageError,
    log_lines,
)
from gateway.store.interface import AuditReader

__all__ = ["unchecked_chains", "verify_logs"]


def verify_logs(
    settings: GatewaySettings, request: AuditRequest, store: AuditReader | None, out: TextIO
) -> int:
    """Check this node's log files against the chains' records in `store` (None: no store);
    the exit status says whether every chain given is intact (others' are not checked).

    Raises:
        UsageError: no log to check, or it cannot be read.
        StoreError: the store cannot be read.
    """
    files = _files_to_verify(settings, request)
    anchors = None if store is None else store.load_anchors()
    checkpoints = None if store is None else store.load_checkpoints()
    try:
        result = verify(log_lines(files), anchors=anchors, checkpoints=checkpoints)
    except UNREADABLE as exc:
        raise UsageError(f"cannot read the log: {exc}") from exc
    _write_verification(result, files, has_store=anchors is not None, out=out)
    if anchors:
        others = unchecked_chains(
            anchors,
            checked={span.chain for span in result.chains},
            node=settings.server.node,
            is_shared=settings.storage.is_shared,
        )
        _write_unchecked(others, out)
    _write_outcome(result, out)
    return EXIT_OK if result.is_intact else EXIT_FOUND_PROBLEMS


def unchecked_chains(
    anchors: Mapping[str, Anchor], *, checked: set[str], node: str, is_shared: bool
) -> list[Anchor]:
    """The chains anchored in the store by other nodes, that the files checked do not hold,
    by node and start. On a shared store, a chain anchored before nodes were recorded (node
    None) may be anyone's; in one host's SQLite file it is this host's own."""

    def is_others(anchor: Anchor) -> bool:
        return anchor.node != node if anchor.node is not None else is_shared

    others = [a for a in anchors.values() if a.chain not in checked and is_others(a)]
    return sorted(others, key=lambda a: (a.node or "", a.started_at, a.chain))


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


def _write_unchecked(others: Sequence[Anchor], out: TextIO) -> None:
    if not others:
        return
    out.write("anchored in the store by other nodes, not checked here (each log is on its host):\n")
    for anchor in others:
        whose = f"node {anchor.node}" if anchor.node else "node not recorded (before schema 4)"
        out.write(
            f"  {whose}: chain {anchor.chain}, started {_utc(anchor.started_at)},"
            f" log {anchor.log}\n"
        )


def _write_outcome(result: Verification, out: TextIO) -> None:
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


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


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
