"""The audit report: one self-contained HTML page of the daily figures, with a chart.

The page carries its own styles and an inline SVG chart of attempts per day: no scripts, no
fonts, no images, nothing fetched, so it opens the same offline, attached to an e-mail or
printed for a file. The figures are those of `gateway audit summary`. This module only turns
summaries into HTML (jinja2, autoescaped); it reads no store and writes no file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources

import jinja2

from gateway.store.summaries import DaySummary

__all__ = ["Chart", "Report", "chart", "per_day", "render_report"]

_TEMPLATE = "report.html.j2"
# Drawing area of the chart, in SVG user units (the SVG scales to the page width).
_WIDTH, _HEIGHT = 960, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 16, 48
_MAX_BAR = 48.0


@dataclass(frozen=True, slots=True)
class Bar:
    day: date
    x: float
    width: float
    refused_y: float  # top of the refused part
    refused_h: float
    other_y: float  # top of the rest, stacked above
    other_h: float
    refused: int
    other: int


@dataclass(frozen=True, slots=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True, slots=True)
class Label:
    text: str
    x: float


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    bottom_y: float  # the x axis
    right_x: float
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    labels: tuple[Label, ...]


def chart(per_day: Mapping[date, tuple[int, int]]) -> Chart:
    """Stacked bars of refused and other attempts per day, every day from first to last."""
    days = _every_day(per_day)
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_h
    highest = max((sum(per_day.get(d, (0, 0))) for d in days), default=0)
    step = _tick_step(highest)
    top_value = max(step, math.ceil(highest / step) * step)
    slot = plot_w / max(1, len(days))
    width = min(_MAX_BAR, max(1.0, slot * 0.7))  # a few days must not look like a wall
    bars = []
    for i, day in enumerate(days):
        refused, other = per_day.get(day, (0, 0))
        refused_h = plot_h * refused / top_value
        other_h = plot_h * other / top_value
        bars.append(
            Bar(
                day=day,
                x=round(_LEFT + (i + 0.5) * slot - width / 2, 2),
                width=round(width, 2),
                refused_y=round(base - refused_h, 2),
                refused_h=round(refused_h, 2),
                other_y=round(base - refused_h - other_h, 2),
                other_h=round(other_h, 2),
                refused=refused,
                other=other,
            )
        )
    ticks = tuple(
        Tick(v, round(base - plot_h * v / top_value, 2)) for v in range(0, top_value + 1, step)
    )
    every = max(1, math.ceil(len(days) / 12))  # at most a dozen dates under the axis
    labels = tuple(
        Label(f"{day:%b %d}", round(_LEFT + (i + 0.5) * slot, 2))
        for i, day in enumerate(days)
        if i % every == 0
    )
    return Chart(_WIDTH, _HEIGHT, _LEFT, _TOP, base, _WIDTH - _RIGHT, tuple(bars), ticks, labels)


def per_day(summaries: Sequence[DaySummary]) -> dict[date, tuple[int, int]]:
    """(refused, other) attempts per day over every office: what the chart draws."""
    days: dict[date, tuple[int, int]] = {}
    for row in summaries:
        refused, other = days.get(row.day, (0, 0))
        days[row.day] = (refused + row.refused, other + row.attempts - row.refused)
    return days


def _every_day(per_day: Mapping[date, object]) -> list[date]:
    if not per_day:
        return []
    first, last = min(per_day), max(per_day)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _tick_step(highest: int) -> int:
    """A round step (1, 2 or 5 times a power of ten): four to eight gridlines to `highest`."""
    if highest <= 5:
        return 1
    raw = highest / 5
    magnitude: int = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


@dataclass(frozen=True, slots=True)
class Totals:
    attempts: int
    received: int
    refused: int
    noticed: int
    suppressed: int
    delivered: int
    deferred: int
    failed: int


@dataclass(frozen=True, slots=True)
class Report:
    """What the page shows besides the daily rows."""

    title: str
    period: str  # e.g. "2017-09-12 to 2017-09-30 (America/Chicago)"
    generated_at: datetime
    version: str
    offices: Mapping[str, str]  # office name -> display name
    redaction: str  # what was redacted, in words, or ""


def render_report(report: Report, summaries: Sequence[DaySummary]) -> str:
    """The HTML page: headline figures, the chart, the daily table and refusals by reason."""
    reasons: dict[tuple[str, str], int] = {}
    for row in summaries:
        for reason, count in row.refused_by_reason:
            reasons[(row.office, reason)] = reasons.get((row.office, reason), 0) + count
    environment = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    template = environment.from_string(
        resources.files("gateway").joinpath(_TEMPLATE).read_text(encoding="utf-8")
    )
    return template.render(
        report=report,
        rows=summaries,
        totals=_totals(summaries),
        chart=chart(per_day(summaries)),
        reasons=sorted(reasons.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])),
    )


def _totals(rows: Sequence[DaySummary]) -> Totals:
    return Totals(
        attempts=sum(r.attempts for r in rows),
        received=sum(r.received for r in rows),
        refused=sum(r.refused for r in rows),
        noticed=sum(r.noticed for r in rows),
        suppressed=sum(r.suppressed for r in rows),
        delivered=sum(r.delivered for r in rows),
        deferred=sum(r.deferred for r in rows),
        failed=sum(r.failed for r in rows),
    )
