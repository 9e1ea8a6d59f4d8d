"""The HTML report: chart geometry as plain values, the page from a real store, in Chromium."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.audit.report import Report, chart, render_report
from gateway.config import GatewaySettings
from gateway.ops.auditcmd import AuditRequest, run_audit
from gateway.store.summaries import DaySummary
from tests.chromium import needs_chromium, run_chromium
from tests.conftest import GatewayFactory
from tests.filings import fill_store

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NOW = datetime(2017, 10, 1, 12, 0, tzinfo=UTC)


def day(n: int) -> date:
    return date(2017, 9, n)


# -- the chart: pure ------------------------------------------------------------------------------


def test_the_chart_has_a_bar_for_every_day_from_first_to_last_empty_days_included() -> None:
    drawn = chart({day(12): (3, 1), day(15): (0, 2)})
    assert [b.day for b in drawn.bars] == [day(12), day(13), day(14), day(15)]
    assert [(b.refused, b.other) for b in drawn.bars] == [(3, 1), (0, 0), (0, 0), (0, 2)]
    empty = drawn.bars[1]
    assert empty.refused_h == empty.other_h == 0


def test_bar_heights_are_proportional_and_stacked_on_the_axis() -> None:
    drawn = chart({day(12): (4, 4), day(13): (2, 0)})
    tall, short = drawn.bars
    assert tall.refused_h == pytest.approx(2 * short.refused_h)
    assert tall.refused_y + tall.refused_h == pytest.approx(drawn.bottom_y)
    assert tall.other_y + tall.other_h == pytest.approx(tall.refused_y)
    top_tick = drawn.ticks[-1]
    assert top_tick.value >= 8
    assert all(bar.other_y >= top_tick.y for bar in drawn.bars)


@pytest.mark.parametrize(
    ("highest", "step"), [(0, 1), (3, 1), (7, 2), (12, 5), (48, 10), (230, 50), (9000, 2000)]
)
def test_gridlines_fall_on_round_numbers(highest: int, step: int) -> None:
    drawn = chart({day(12): (highest, 0)})
    values = [t.value for t in drawn.ticks]
    assert values[1] - values[0] == step
    assert values[-1] >= highest
    assert 2 <= len(values) <= 9


def test_a_long_period_labels_at_most_a_dozen_days() -> None:
    drawn = chart({date(2017, 1, 1): (1, 0), date(2017, 12, 31): (1, 0)})
    assert len(drawn.bars) == 365
    assert len(drawn.labels) <= 13


# -- the page -------------------------------------------------------------------------------------


def summary(n: int, **counts: int) -> DaySummary:
    values = {
        "attempts": 5,
        "received": 4,
        "refused": 3,
        "noticed": 2,
        "suppressed": 1,
        "delivered": 1,
        "deferred": 1,
        "failed": 0,
    }
    values.update(counts)
    return DaySummary(
        day=day(n), office="ice-occ-chicago", refused_by_reason=(("retired", 3),), **values
    )


def report(**changes: str) -> Report:
    offices = {"ice-occ-chicago": changes.pop("display", "ICE OCC Chicago")}
    return Report(
        title="Attempts to file by e-mail at retired addresses",
        period="2017-09-12 to 2017-09-30",
        generated_at=NOW,
        version="test",
        offices=offices,
        redaction="",
    )


def test_the_page_is_self_contained_and_escapes_what_it_quotes() -> None:
    page = render_report(report(display='<script>alert("x")</script> & Co'), [summary(13)])
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert "&amp; Co" in page
    # Nothing to fetch: no external styles, scripts, images, fonts or links.
    assert not re.search(r"""(src|href)\s*=|<link|@import|url\(""", page)
    assert "<svg" in page


def test_the_page_says_so_when_nothing_happened() -> None:
    page = render_report(report(), [])
    assert page.count("No attempts in this period.") == 2
    assert "Nothing was refused in this period." in page


# -- from a store filled over SMTP, rendered by a real browser ------------------------------------


async def write_report(start_gateway: GatewayFactory, path: Path) -> str:
    filed = await fill_store(start_gateway)
    return await asyncio.to_thread(report_text, filed.gateway.settings, path)


def report_text(settings: GatewaySettings, path: Path) -> str:
    """`gateway audit report --tz office --out PATH`, and the page it wrote."""
    out, err = io.StringIO(), io.StringIO()
    request = AuditRequest(action="report", out_file=path, tz="office")
    status = run_audit(settings, request, now=NOW, out=out, err=err)
    assert status == 0, err.getvalue()
    assert out.getvalue() == f"wrote {path}: 7 attempts over 2 days\n"
    return path.read_text(encoding="utf-8")


async def test_the_report_of_a_real_store_has_the_summarys_figures(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    page = await write_report(start_gateway, tmp_path / "report.html")
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    # Sep 13 (Chicago) for the Chicago office: 4 attempts, 4 refused, 2 noticed, 1 delivered.
    row = cells[cells.index("2017-09-13") : cells.index("2017-09-13") + 10]
    assert row[1] == "(postmaster)"
    chicago = cells.index("ICE Office of the Chief Counsel, Chicago")
    assert cells[chicago + 1 : chicago + 9] == ["4", "4", "4", "2", "2", "1", "1", "0"]
    assert "address retired; refused at RCPT" in page
    assert "A-numbers are redacted in the audit log" in page
    assert "A123456789" not in page


@needs_chromium
async def test_chromium_renders_the_report_with_its_chart(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    await write_report(start_gateway, page)
    png = tmp_path / "report.png"
    shot = await asyncio.to_thread(
        run_chromium,
        page,
        tmp_path / "profile-shot",
        f"--screenshot={png}",
        "--window-size=1200,1400",
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    data = await asyncio.to_thread(png.read_bytes)
    assert data.startswith(PNG_SIGNATURE)
    assert int.from_bytes(data[16:20], "big") == 1200  # IHDR width
    assert len(data) > 30_000  # a rendered page, not a blank one
    dump = await asyncio.to_thread(run_chromium, page, tmp_path / "profile-dom", "--dump-dom")
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")[-2000:]
    dom = dump.stdout.decode("utf-8")
    assert "Attempts per day" in dom
    assert len(re.findall(r"<rect ", dom)) == 3  # Sep 13: refused and other; Sep 14: refused
