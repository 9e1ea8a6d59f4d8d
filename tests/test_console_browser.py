"""The console in a real browser engine: Debian's headless Chromium loads each main page from
the console's own listener after real SMTP attempts, with basic auth, at 375 px and 1280 px.

CONSOLE_SCREENSHOTS=docs copies the screenshots to docs/console-<page>.png (the README's).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.chromium import require_chromium, run_chromium
from tests.filings import Filed
from tests.test_console import PASSWORD, ConsoleFactory, filed, serve_console

__all__ = ["filed", "serve_console"]  # the fixtures, used here by name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Focusable(HTMLParser):
    """What a keyboard reaches with Tab, in document order, and any tabindex."""

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
        elif tag in ("button", "select", "textarea"):
            self.order.append(tag)
        elif tag == "input":
            self.order.append(f"input:{values.get('name')}")


async def _load(url: str, tmp_path: Path, name: str, width: int) -> tuple[bytes, str]:
    png = tmp_path / f"console-{name}-{width}.png"
    shot = await asyncio.to_thread(
        run_chromium,
        url,
        tmp_path / f"profile-{name}-{width}",
        f"--screenshot={png}",
        f"--window-size={width},1100",
        "--hide-scrollbars",
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    dump = await asyncio.to_thread(run_chromium, url, tmp_path / f"dom-{name}", "--dump-dom")
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")[-2000:]
    return png.read_bytes(), dump.stdout.decode("utf-8")


@pytest.mark.parametrize("width", [375, 1280])
async def test_chromium_shows_each_console_page_with_its_key_text(
    filed: Filed, serve_console: ConsoleFactory, tmp_path: Path, width: int
) -> None:
    require_chromium()
    console = await serve_console(filed)
    base = f"http://records:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{console.endpoint.port}"
    ref = filed.refs["motion"]
    pages = {
        "attempts": ("/attempts", ["Attempts", ref, "paralegal@lawfirm.example", "Export"]),
        "attempt": (f"/attempts/{ref}", [f"Attempt {ref}", "deliveries", "Notices as sent"]),
        "summary": ("/summary?since=2017-09-12&until=2017-09-15", ["Daily summary", "<svg"]),
        "senders": ("/senders?since=2017-09-01", ["Senders", "other-firm.example"]),
        "queue": ("/queue?state=all", ["Queue", "deferred", "4.2.2 Mailbox full"]),
    }
    for name, (path, words) in pages.items():
        data, dom = await _load(base + path, tmp_path, name, width)
        assert data.startswith(PNG_SIGNATURE)
        assert int.from_bytes(data[16:20], "big") == width  # nothing wider was forced
        assert len(data) > 15_000, name  # a rendered page, not a blank one
        for word in words:
            assert word in dom, (name, word)
        assert '<html lang="en">' in dom
        assert "<script" not in dom
        assert "A123456789" not in dom  # redacted as `gateway audit` redacts it
        saved = os.environ.get("CONSOLE_SCREENSHOTS")
        if saved and width == 1280:
            shutil.copy(
                tmp_path / f"console-{name}-{width}.png", Path(saved) / f"console-{name}.png"
            )


async def test_the_keyboard_reaches_the_navigation_then_the_filters_then_the_rows(
    filed: Filed, serve_console: ConsoleFactory, tmp_path: Path
) -> None:
    require_chromium()
    console = await serve_console(filed, page_size=3)
    url = (
        f"http://records:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{console.endpoint.port}/attempts"
    )
    _, dom = await _load(url, tmp_path, "keyboard", 375)
    focusable = _Focusable()
    focusable.feed(dom)
    assert focusable.tabindexes == []  # document order is the tab order
    order = focusable.order
    assert order[:4] == ["/attempts", "/summary", "/senders", "/queue"]
    fields = ["since", "until", "sender", "sender_domain", "address"]
    assert order[4:9] == [f"input:{name}" for name in fields]
    assert order[9:14] == ["select", "input:decision", "input:notice", "input:tz", "button"]
    assert order[14:16] == ["/attempts.csv", "/attempts.json"]
    newest = [filed.refs[n] for n in ("second", "untrusted", "refusal")]
    assert order[16:19] == [f"/attempts/{ref}" for ref in newest]
    assert order[19].startswith("/attempts?before=")  # then the older page
    assert len(order) == 20


async def test_an_older_page_links_newer_back_to_the_page_it_came_from(
    filed: Filed, serve_console: ConsoleFactory, tmp_path: Path
) -> None:
    require_chromium()
    console = await serve_console(filed, page_size=3)
    base = f"http://records:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{console.endpoint.port}"
    first = _Focusable()
    first.feed((await _load(base + "/attempts", tmp_path, "first", 1280))[1])
    older = first.order[-1]
    assert older.startswith("/attempts?before=")
    second = _Focusable()
    second.feed((await _load(base + older, tmp_path, "second", 1280))[1])
    rows = [filed.refs[n] for n in ("postmaster", "null", "clerk")]
    assert second.order[16:19] == [f"/attempts/{ref}" for ref in rows]
    newest, newer, further = second.order[19:]  # the pages' links, in this order
    assert newest == "/attempts"
    assert newer.startswith("/attempts?after=")
    assert further.startswith("/attempts?before=")
    back = _Focusable()
    back.feed((await _load(base + newer, tmp_path, "back", 1280))[1])
    assert back.order[16:19] == first.order[16:19]  # the very rows of the first page
    assert not [href for href in back.order if href.startswith("/attempts?after=")]  # the newest
    newest_again, on = back.order[19:]  # reached by a key: Newest, then Older
    assert newest_again == "/attempts"
    assert on.startswith("/attempts?before=")
