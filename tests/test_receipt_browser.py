"""The receipt page in a real browser engine: Debian's headless Chromium loads it from the
page's own listener after real SMTP attempts, at a phone's width and a desktop's."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.chromium import require_chromium, run_chromium
from tests.conftest import RETIRED, GatewayFactory
from tests.filings import fill_store
from tests.test_receipt_page import ReceiptsFactory, serve_receipts

__all__ = ["serve_receipts"]  # the fixture, used here by name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Focusable(HTMLParser):
    """The elements a keyboard reaches with Tab, in document order, and any tabindex."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.tabindexes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "tabindex" in values:
            self.tabindexes.append(str(values["tabindex"]))
        if tag == "a" and values.get("href"):
            self.order.append(str(values["href"]))
        elif tag in ("button", "input", "select", "textarea"):
            self.order.append(tag)


@pytest.mark.parametrize(("lang", "width"), [("en", 375), ("en", 1280), ("es", 375)])
async def test_chromium_shows_the_receipt_readable_on_a_phone_and_a_desktop(
    start_gateway: GatewayFactory,
    serve_receipts: ReceiptsFactory,
    tmp_path: Path,
    lang: str,
    width: int,
) -> None:
    require_chromium()
    async with asyncio.timeout(60):
        filed = await fill_store(start_gateway)
    receipts = await serve_receipts(filed.gateway)
    ref = filed.refs["motion"]
    url = f"http://127.0.0.1:{receipts.endpoint.port}/ref/{ref}?lang={lang}"
    png = tmp_path / f"receipt-{lang}-{width}.png"
    # Chromium runs in a thread: the page is served by this event loop meanwhile.
    shot = await asyncio.to_thread(
        run_chromium,
        url,
        tmp_path / "profile-shot",
        f"--screenshot={png}",
        f"--window-size={width},1500",
        "--hide-scrollbars",
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert int.from_bytes(data[16:20], "big") == width  # IHDR width: nothing wider was forced
    assert len(data) > 20_000  # a rendered page, not a blank one

    dump = await asyncio.to_thread(run_chromium, url, tmp_path / "profile-dom", "--dump-dom")
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")[-2000:]
    dom = dump.stdout.decode("utf-8")
    statement = {"en": "NOT filed or served", "es": "NO presentado ni notificado"}[lang]
    assert f'<html lang="{lang}">' in dom
    assert statement in dom
    assert RETIRED in dom
    assert ref in dom
    assert "Motion to continue" not in dom
    assert "A123456789" not in dom

    focusable = _Focusable()
    focusable.feed(dom)
    other = {"en": "es", "es": "en"}[lang]
    # Tab order is document order (no tabindex anywhere): the language switch first, then the
    # portal and registration links of the steps, then the JSON.
    assert focusable.tabindexes == []
    assert focusable.order == [
        f"/ref/{ref}?lang={other}",
        "https://eservice.ice.gov/",
        "https://eserviceregistration.ice.gov/",
        f"/ref/{ref}.json?lang={lang}",
    ]


async def test_chromium_shows_the_not_found_page_in_both_languages(
    start_gateway: GatewayFactory, serve_receipts: ReceiptsFactory, tmp_path: Path
) -> None:
    require_chromium()
    gateway = await start_gateway()
    receipts = await serve_receipts(gateway)
    url = f"http://127.0.0.1:{receipts.endpoint.port}/ref/20170913-0000000000000"
    dump = await asyncio.to_thread(run_chromium, url, tmp_path / "profile", "--dump-dom")
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")[-2000:]
    dom = dump.stdout.decode("utf-8")
    assert "No receipt for this reference" in dom
    assert "No hay constancia para esta referencia" in dom
