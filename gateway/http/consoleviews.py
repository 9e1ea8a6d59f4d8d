"""The console's views: each reads the store as `gateway audit` does and renders one page.

Attempts (a keyset page, older or newer), one attempt's story (audit show's own text,
ops/auditevidence.py) with the notices as sent, the daily summary with its chart
(audit/report.py's geometry), the senders and the queue. The lists come also as CSV and
JSON lines from ops/audittables.py's writers, for the same rows as the page. Each view is
one `console.viewed` audit event. Every read goes through an AuditReader (interface.py), so
the pages answer from the SQLite file or, on a shared store, for every node; a store that
cannot be read is a 503 page.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any, TypeVar

import jinja2
import structlog
from aiohttp import web

from gateway.audit.report import chart, per_day
from gateway.audit.story import when
from gateway.clock import Clock
from gateway.config import GatewaySettings
from gateway.errors import StoreError
from gateway.http.consoleauth import USER
from gateway.http.consolelinks import audit_request, filter_query, href, parse_key, render_key
from gateway.mail.noticetext import readable_notice
from gateway.mail.redaction import Redactor
from gateway.ops.auditevidence import show_attempt
from gateway.ops.auditrequest import AuditRequest, UsageError, Zones, attempt_filters
from gateway.ops.audittables import write_attempts, write_senders, write_summary
from gateway.store.backend import StoreLocation, open_audit_reader
from gateway.store.interface import AuditReader
from gateway.store.outbox import PENDING_STATES
from gateway.store.records import AttemptRecord, redacted
from gateway.store.summaries import sender_activity, summarize
from gateway.vocabulary import JobState, format_notice_status

__all__ = ["Views"]

log = structlog.get_logger()
_T = TypeVar("_T")
# The summary and senders count every matching attempt in memory, as `gateway audit` does;
# without a date range they cover this many days back, not the whole store.
_DEFAULT_DAYS = 30
_MEDIA = {"csv": "text/csv", "json": "application/x-ndjson"}
# The attempts page's keys: older than `before`, or the page above `after` (store/browse.py).
_KEYS = ("before", "after")


@dataclass(frozen=True, slots=True)
class _Asked:
    view: str
    format: str  # html, csv or json


class Views:
    """The routes, and what they read: the settings, the store, the clock, the templates."""

    def __init__(self, settings: GatewaySettings, clock: Clock, pages: jinja2.Environment):
        self.settings = settings
        self.clock = clock
        self.pages = pages
        self.redactor = Redactor.from_settings(settings.audit)
        self.location = StoreLocation.from_settings(settings)
        css = resources.files("gateway.http").joinpath("pages", "console.css")
        self.css = css.read_text(encoding="utf-8")

    def route(self, app: web.Application) -> None:
        app.router.add_get("/", self.home)
        app.router.add_get("/console.css", self.stylesheet)
        app.router.add_get("/attempts/{reference}", self.attempt)
        for name, view in (
            ("attempts", self.attempts),
            ("summary", self.summary),
            ("senders", self.senders),
            ("queue", self.queue),
        ):
            app.router.add_get(f"/{name}", view)
            app.router.add_get(f"/{name}.{{format:csv|json}}", view)

    async def _read(self, read: Callable[[AuditReader], _T]) -> _T:
        """`read` on a reader of its own, in a thread.

        Raises:
            web.HTTPServiceUnavailable: the store cannot be read (the shared store is down).
        """

        def run() -> _T:
            reader = open_audit_reader(self.location)
            try:
                return read(reader)
            finally:
                reader.close()

        try:
            return await asyncio.to_thread(run)
        except StoreError as exc:
            raise web.HTTPServiceUnavailable(text=f"The store cannot be read: {exc}\n") from exc

    def _viewed(self, request: web.Request, asked: _Asked, reference: str | None = None) -> None:
        log.info(
            "console.viewed",
            user=request[USER],
            view=asked.view,
            format=asked.format,
            reference=reference,
            query=dict(request.query),
            client=request.remote,
        )

    def _page(self, template: str, **context: Any) -> web.Response:
        body = self.pages.get_template(template).render(**context)
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    def _problem(self, request: web.Request, status: int, text: str) -> web.Response:
        response = self._page(
            "console-problem.html.j2",
            title="Not found" if status == 404 else "Cannot show this",
            problem=text,
            nav=request.path,
        )
        response.set_status(status)
        return response

    async def home(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("/attempts")

    async def stylesheet(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.css, content_type="text/css", charset="utf-8")

    # -- attempts ------------------------------------------------------------------------------

    async def attempts(self, request: web.Request) -> web.Response:
        asked = _Asked("attempts", request.match_info.get("format", "html"))
        query = dict(request.query)
        try:
            audit = audit_request(query, action="list")
            zones = Zones.build(self.settings, audit)
            filters = attempt_filters(audit, zones)
            before, after = (parse_key(query[k]) if query.get(k) else None for k in _KEYS)
            if before is not None and after is not None:
                raise ValueError("a page is asked for by one key: before or after, not both")
        except (UsageError, ValueError) as exc:
            return self._problem(request, 400, str(exc))
        size = self.settings.console.page_size
        page = await self._read(
            lambda r: r.browse_attempts(filters, before=before, after=after, size=size)
        )
        rows = [redacted(a, self.redactor) for a in page.attempts]
        self._viewed(request, asked)
        if asked.format != "html":
            return self._export(lambda out: write_attempts(rows, asked.format, zones, out), asked)
        kept = filter_query(query)
        here = {**kept, **{k: query[k] for k in _KEYS if query.get(k)}}
        return self._page(
            "console-attempts.html.j2",
            nav="/attempts",
            title="Attempts",
            query=kept,
            offices=[o.name for o in self.settings.offices],
            rows=[
                (a, when(a.at, zones.of(a.office)), format_notice_status(a.notice)) for a in rows
            ],
            zone=zones.label,
            has_nodes=any(a.node is not None for a in rows),  # a shared store names them
            older=href("/attempts", {**kept, "before": render_key(page.next_key)})
            if page.next_key
            else None,
            newer=href("/attempts", {**kept, "after": render_key(page.newer_key)})
            if page.newer_key
            else None,
            newest=href("/attempts", kept) if before or after else None,
            is_newer_partial=page.is_partial and after is not None,
            is_partial=page.is_partial,
            csv=href("/attempts.csv", here),
            json=href("/attempts.json", here),
        )

    def _export(self, write: Callable[[io.StringIO], None], asked: _Asked) -> web.Response:
        out = io.StringIO()
        write(out)
        disposition = f'attachment; filename="{asked.view}.{asked.format}"'
        return web.Response(
            text=out.getvalue(),
            content_type=_MEDIA[asked.format],
            charset="utf-8",
            headers={"Content-Disposition": disposition},
        )

    async def attempt(self, request: web.Request) -> web.Response:
        reference = request.match_info["reference"].strip().upper()
        audit = AuditRequest(action="show", targets=(reference,), tz=request.query.get("tz", "UTC"))
        try:
            zones = Zones.build(self.settings, audit)
        except UsageError as exc:
            return self._problem(request, 400, str(exc))

        def read(reader: AuditReader) -> tuple[int, str, str, list[tuple[Any, str]]]:
            out, err = io.StringIO(), io.StringIO()
            status = show_attempt(self.settings, audit, reader, zones, self.redactor, out, err)
            kept = reader.read_sent(reference)
            # The notice quotes the filing's subject: decoded, then redacted as the story is.
            notices = [
                (n, readable_notice(reader.sent_data(reference, n.job_id) or b"", self.redactor))
                for n in kept
            ]
            return status, out.getvalue(), err.getvalue(), notices

        status, story, said, notices = await self._read(read)
        self._viewed(request, _Asked("attempt", "html"), reference)
        if status != 0 and not story:
            return self._problem(request, 404, f"No attempt {reference} in the store.")
        return self._page(
            "console-attempt.html.j2",
            nav="/attempts",
            title=f"Attempt {reference}",
            reference=reference,
            story=story,
            notices=notices,
            # What audit show said on the side: a log file it could not read, say.
            warnings=said.splitlines(),
        )

    # -- summary, senders ----------------------------------------------------------------------

    def _ranged(self, query: dict[str, str], action: str) -> tuple[AuditRequest, dict[str, str]]:
        kept = filter_query(query)
        if not kept.get("since") and not kept.get("until"):
            since = (self.clock() - timedelta(days=_DEFAULT_DAYS)).date().isoformat()
            kept["since"] = since
        return audit_request(kept, action=action), kept

    async def _counted(
        self, request: web.Request, asked: _Asked, count: Callable[[list[AttemptRecord], Zones], _T]
    ) -> tuple[_T, Zones, dict[str, str]] | web.Response:
        """`count` over the attempts a summary-like view's filters select (the last
        _DEFAULT_DAYS days when no range is given), in the reader's thread: a month of
        attempts is too much work for the event loop that also answers /metrics."""
        audit, kept = self._ranged(dict(request.query), asked.view)
        try:
            zones = Zones.build(self.settings, audit)
            filters = attempt_filters(audit, zones)
        except UsageError as exc:
            return self._problem(request, 400, str(exc))
        rows = await self._read(lambda r: count(r.find_attempts(filters), zones))
        self._viewed(request, asked)
        return rows, zones, kept

    async def summary(self, request: web.Request) -> web.Response:
        asked = _Asked("summary", request.match_info.get("format", "html"))
        counted = await self._counted(
            request, asked, lambda found, zones: summarize(found, zone_of=zones.of)
        )
        if isinstance(counted, web.Response):
            return counted
        rows, _, kept = counted
        if asked.format != "html":
            return self._export(lambda out: write_summary(rows, asked.format, out), asked)
        return self._page(
            "console-summary.html.j2",
            nav="/summary",
            title="Daily summary",
            query=kept,
            offices=[o.name for o in self.settings.offices],
            rows=rows,
            chart=chart(per_day(rows)),
            csv=href("/summary.csv", kept),
            json=href("/summary.json", kept),
        )

    async def senders(self, request: web.Request) -> web.Response:
        asked = _Asked("senders", request.match_info.get("format", "html"))
        counted = await self._counted(request, asked, lambda found, _: sender_activity(found))
        if isinstance(counted, web.Response):
            return counted
        rows, zones, kept = counted
        if asked.format != "html":
            return self._export(lambda out: write_senders(rows, asked.format, zones, out), asked)
        return self._page(
            "console-senders.html.j2",
            nav="/senders",
            title="Senders",
            query=kept,
            offices=[o.name for o in self.settings.offices],
            rows=[(a, when(a.first, zones.bounds), when(a.last, zones.bounds)) for a in rows],
            csv=href("/senders.csv", kept),
            json=href("/senders.json", kept),
        )

    # -- queue ---------------------------------------------------------------------------------

    async def queue(self, request: web.Request) -> web.Response:
        asked = _Asked("queue", request.match_info.get("format", "html"))
        state = request.query.get("state", "").strip()
        known = {str(s) for s in JobState}
        if state and state not in known and state != "all":
            return self._problem(
                request, 400, f"unknown state {state!r} (one of {', '.join(sorted(known))}, all)"
            )
        states: tuple[str, ...] = (
            () if state == "all" else (state,) if state else tuple(PENDING_STATES)
        )
        jobs = await self._read(lambda r: r.list_jobs(states))
        self._viewed(request, asked)
        if asked.format != "html":
            items = [_job_item(job) for job in jobs]
            return self._export(lambda out: _write_jobs(items, asked.format, out), asked)
        kept = {"state": state} if state else {}
        return self._page(
            "console-queue.html.j2",
            nav="/queue",
            title="Queue",
            state=state,
            states=sorted(known),
            jobs=jobs,
            csv=href("/queue.csv", kept),
            json=href("/queue.json", kept),
        )


def _job_item(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": str(job.state),
        "kind": str(job.kind),
        "reference": job.reference,
        "office": job.office,
        "recipients": list(job.recipients),
        "created_at": job.created_at.isoformat(),
        "next_attempt_at": job.next_attempt_at.isoformat(),
        "attempts": job.attempts,
        "last_reply": job.last_reply,
    }


def _write_jobs(items: list[dict[str, Any]], output: str, out: io.StringIO) -> None:
    import csv
    import json

    if output == "json":
        out.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        return
    columns = [
        "id",
        "state",
        "kind",
        "reference",
        "office",
        "recipients",
        "created_at",
        "next_attempt_at",
        "attempts",
        "last_reply",
    ]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerow({**item, "recipients": "; ".join(item["recipients"])})
