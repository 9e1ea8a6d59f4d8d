"""The operator console against a real gateway: real SMTP attempts and deliveries (filings.py),
then real HTTP (and HTTPS) requests to the console's own listener (`[console] listen`)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from structlog.testing import capture_logs

from gateway.config import ConsoleSettings
from gateway.http.console import start_console
from gateway.http.health import Endpoint
from gateway.ops.consoleusers import run_console_users
from gateway.store.db import connect
from gateway.store.records import Filters, find_attempts
from tests.conftest import RETIRED, GatewayFactory
from tests.filings import CLERK, SEP14, Filed, fill_store
from tests.smtpclient import message, transaction

PASSWORD = "correct horse battery staple"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass
class Console:
    endpoint: Endpoint
    scheme: str = "http"
    ssl_context: ssl.SSLContext | None = None

    async def get(
        self,
        path: str,
        *,
        user: tuple[str, str] | None = ("records", PASSWORD),
        source: str = "127.0.0.1",
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if user is not None:
            token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
            sent["Authorization"] = f"Basic {token}"
        connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=self.ssl_context or False)
        timeout = aiohttp.ClientTimeout(total=20)
        url = f"{self.scheme}://127.0.0.1:{self.endpoint.port}{path}"
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as client,
            client.request(method, url, headers=sent, allow_redirects=False) as got,
        ):
            return Answer(got.status, dict(got.headers), await got.read())


ConsoleFactory = Callable[..., Awaitable[Console]]


def add_user(users_file: Path, name: str, password: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = run_console_users(
        ConsoleSettings(users_file=users_file),
        action="adduser",
        name=name,
        password_stdin=True,
        stdin=io.StringIO(password + "\n"),
        out=out,
        err=err,
    )
    assert status == 0, err.getvalue()


@pytest.fixture
async def serve_console(tmp_path: Path) -> AsyncIterator[ConsoleFactory]:
    started: list[Endpoint] = []

    async def start(filed: Filed, *, tls: bool = False, **console: Any) -> Console:
        users = tmp_path / "console-users"
        if not users.exists():
            add_user(users, "records", PASSWORD)
        values: dict[str, Any] = {"listen": "127.0.0.1:0", "users_file": str(users), **console}
        client_context = None
        if tls:
            authority = trustme.CA()
            cert = authority.issue_cert("127.0.0.1")
            cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "console.pem"))
            values |= {
                "tls_cert": str(tmp_path / "console.pem"),
                "tls_key": str(tmp_path / "console.pem"),
            }
            client_context = ssl.create_default_context()
            authority.configure_trust(client_context)
        page_size = values.pop("page_size", None)
        settings = ConsoleSettings.model_validate(values)
        if page_size is not None:  # below the setting's floor: pages of a few rows to walk
            settings = settings.model_copy(update={"page_size": page_size})
        whole = filed.gateway.settings.model_copy(update={"console": settings})
        endpoint = await start_console(whole, filed.gateway.clock)
        assert endpoint is not None
        started.append(endpoint)
        return Console(endpoint, "https" if tls else "http", client_context)

    yield start
    for endpoint in started:
        await endpoint.close()


@pytest.fixture
async def filed(start_gateway: GatewayFactory) -> Filed:
    async with asyncio.timeout(60):
        return await fill_store(start_gateway)


def audit_list(filed: Filed, filters: Filters) -> list[str]:
    """What `gateway audit list` finds, newest first: the references the console must show."""
    conn = connect(filed.gateway.settings.storage.database, readonly=True)
    try:
        return [a.reference for a in reversed(find_attempts(conn, filters))]
    finally:
        conn.close()


# -- who may ask ------------------------------------------------------------------------------


async def test_without_credentials_or_with_wrong_ones_the_console_answers_401(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed)
    with capture_logs() as logs:
        missing = await console.get("/attempts", user=None)
        wrong = await console.get("/attempts", user=("records", "not the password"))
        unknown = await console.get("/attempts", user=("nobody", PASSWORD))
    for answer in (missing, wrong, unknown):
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith(
            'Basic realm="eservice-gateway console"'
        )
        assert filed.refs["motion"] not in answer.text
    assert [e["reason"] for e in logs if e["event"] == "console.denied"] == [
        "missing",
        "wrong",
        "wrong",
    ]
    right = await console.get("/attempts")
    assert right.status == 200
    assert right.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_every_method_but_get_and_head_is_405(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = await console.get("/attempts", method=method)
        assert answer.status == 405, method
        assert answer.headers["Allow"] == "GET, HEAD"
    assert (await console.get("/queue", method="HEAD")).status == 200


async def test_the_proxy_header_is_believed_only_from_a_trusted_proxy(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(
        filed, trusted_proxies=["127.0.0.1/32"], user_header="X-Remote-User"
    )
    header = {"X-Remote-User": "officer@agency.example"}
    with capture_logs() as logs:
        trusted = await console.get("/senders", user=None, headers=header)
        untrusted = await console.get("/senders", user=None, headers=header, source="127.0.0.2")
    assert trusted.status == 200
    assert untrusted.status == 401
    viewed = [e for e in logs if e["event"] == "console.viewed"]
    assert [(e["user"], e["view"]) for e in viewed] == [("officer@agency.example", "senders")]


async def test_basic_auth_over_the_consoles_own_tls(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed, tls=True)
    answer = await console.get("/attempts")
    assert answer.status == 200
    assert filed.refs["motion"] in answer.text
    assert (await console.get("/attempts", user=None)).status == 401


# -- what it shows ----------------------------------------------------------------------------


async def test_the_attempts_page_lists_what_audit_lists_and_exports_the_same_rows(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed)
    with capture_logs() as logs:
        page = await console.get("/attempts?sender_domain=other-firm.example")
        as_csv = await console.get("/attempts.csv?sender_domain=other-firm.example")
        as_json = await console.get("/attempts.json?sender_domain=other-firm.example")
    expected = audit_list(filed, Filters(sender_domain="other-firm.example"))
    assert expected == [filed.refs["clerk"]]
    assert page.status == 200
    assert f'href="/attempts/{filed.refs["clerk"]}"' in page.text
    assert filed.refs["motion"] not in page.text
    assert [r["reference"] for r in csv.DictReader(io.StringIO(as_csv.text))] == expected
    assert as_csv.headers["Content-Type"] == "text/csv; charset=utf-8"
    lines = [json.loads(line) for line in as_json.text.splitlines()]
    assert [item["reference"] for item in lines] == expected
    assert lines[0]["sender"] == CLERK.lower()  # normalised once, at the inbound boundary
    viewed = [e for e in logs if e["event"] == "console.viewed"]
    assert [(e["user"], e["format"]) for e in viewed] == [
        ("records", "html"),
        ("records", "csv"),
        ("records", "json"),
    ]
    assert viewed[0]["query"] == {"sender_domain": "other-firm.example"}


async def test_the_subject_and_a_numbers_are_redacted_as_audit_redacts_them(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed)
    answer = await console.get("/attempts.json")
    motion = next(
        json.loads(line)
        for line in answer.text.splitlines()
        if json.loads(line)["reference"] == filed.refs["motion"]
    )
    assert "A123456789" not in json.dumps(motion)


async def test_the_notice_as_sent_is_shown_decoded_and_redacted(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed)
    page = (await console.get(f"/attempts/{filed.refs['motion']}")).text
    notice = page.split("Notices as sent", 1)[1]
    # The notice quotes the filing's subject, now the reader's words, with its A-number hidden.
    assert "--- text/plain ---" in notice
    assert "--- text/html ---" in notice
    assert "Motion to continue [A-number]" in notice
    assert "A123456789" not in page
    assert "=3D" not in notice  # the HTML's attributes as written, not quoted-printable
    assert f"gateway audit notice {filed.refs['motion']} --job" in notice


async def test_pagination_walks_every_attempt_exactly_once_newest_first(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed, page_size=2)
    seen: list[str] = []
    path: str | None = "/attempts.json"
    pages = 0
    while path is not None and pages < 20:
        rows = [
            json.loads(line)["reference"] for line in (await console.get(path)).text.splitlines()
        ]
        seen += rows
        html = (await console.get(path.replace("/attempts.json", "/attempts"))).text
        pages += 1
        older = (
            html.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
            if 'rel="next"' in html
            else None
        )
        path = (
            None
            if older is None
            else older.replace("&amp;", "&").replace("/attempts?", "/attempts.json?")
        )
    expected = audit_list(filed, Filters())
    assert len(expected) == 7
    assert seen == expected
    assert pages == 4


async def test_a_bad_date_or_page_key_is_a_400_page_not_a_traceback(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed)
    bad_date = await console.get("/attempts?since=13/09/2017")
    assert bad_date.status == 400
    assert "is not a date" in bad_date.text
    bad_key = await console.get("/attempts?before=nonsense")
    assert bad_key.status == 400


async def test_the_story_the_summary_the_senders_and_the_queue(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed)
    ref = filed.refs["motion"]
    story = await console.get(f"/attempts/{ref}")
    assert story.status == 200
    assert f"attempt {ref}: message received to the end of DATA" in story.text
    assert "deliveries" in story.text
    assert "Notices as sent" in story.text
    assert "Message-ID" in story.text or "Message-Id" in story.text
    missing = await console.get("/attempts/20170913-0000000000000")
    assert missing.status == 404
    summary = await console.get("/summary?since=2017-09-13&until=2017-09-14")
    assert summary.status == 200
    assert "<svg" in summary.text
    assert "2017-09-13" in summary.text
    senders = await console.get("/senders?since=2017-09-01")
    assert "other-firm.example" in senders.text
    assert 'href="/attempts?sender_domain=lawfirm.example"' in senders.text
    queue = await console.get("/queue?state=all")
    assert queue.status == 200
    assert f'href="/attempts/{ref}"' in queue.text
    queue_csv = await console.get("/queue.csv?state=all")
    assert ref in queue_csv.text


def page_link(html: str, rel: str) -> str | None:
    """The path of the page's link with `rel`: "next" is Older, "prev" is Newer."""
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return None if found is None else found[1].replace("&amp;", "&")


async def page_at(console: Console, path: str) -> tuple[list[str], str | None, str | None]:
    """The references a page lists (from its JSON twin), and its Newer and Older links."""
    html = (await console.get(path)).text
    lines = (await console.get(path.replace("/attempts", "/attempts.json", 1))).text
    rows = [json.loads(line)["reference"] for line in lines.splitlines()]
    return rows, page_link(html, "prev"), page_link(html, "next")


@pytest.mark.parametrize("query", ["", "?decision=rejected"])
async def test_newer_links_walk_back_up_over_the_very_pages_older_links_walked_down(
    filed: Filed, serve_console: ConsoleFactory, query: str
) -> None:
    console = await serve_console(filed, page_size=2)
    down: list[list[str]] = []
    newer: str | None = None
    path: str | None = f"/attempts{query}"
    while path is not None and len(down) < 10:
        rows, newer, path = await page_at(console, path)
        assert (newer is None) == (not down)  # only the first page has nothing newer
        down.append(rows)
    filters = Filters(decision="rejected") if query else Filters()
    assert [ref for rows in down for ref in rows] == audit_list(filed, filters)
    assert len(down) >= 3
    up: list[list[str]] = []
    path = newer  # the last page's
    while path is not None and len(up) < 10:
        assert "decision=rejected" in path if query else "decision" not in path
        rows, path, _ = await page_at(console, path)
        up.append(rows)
    assert up == down[-2::-1]  # back to the newest page, the same rows on each page


async def test_a_newer_link_keeps_its_page_while_new_attempts_arrive_above_it(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed, page_size=2)
    first, _, older = await page_at(console, "/attempts")
    assert older is not None
    _, back, _ = await page_at(console, older)
    assert back is not None
    gateway = filed.gateway
    arrived = []
    for n in range(3):
        gateway.clock.now = SEP14 + timedelta(hours=1, minutes=n)
        content = message(message_id=f"<late-{n}@lawfirm.example>")
        async with asyncio.timeout(20):
            _, final = await transaction(gateway.port, [RETIRED], content)
        assert final is not None
        arrived.append(final.text.rsplit("(ref ", 1)[1].rstrip(")").split(",")[0])
    # The page above the second is still the one that was first, now with newer above it.
    again, above, _ = await page_at(console, back)
    assert again == first
    assert above is not None
    rows, top, _ = await page_at(console, above)
    assert rows == [arrived[1], arrived[0]]
    assert top is not None
    rows, beyond, _ = await page_at(console, top)
    assert rows == [arrived[2]]
    assert beyond is None  # nothing newer: the newest attempt is on it
    newest, none, _ = await page_at(console, "/attempts")
    assert newest == [arrived[2], arrived[1]]
    assert none is None


async def test_a_page_asked_for_by_both_keys_or_a_bad_newer_key_is_a_400(
    filed: Filed, serve_console: ConsoleFactory
) -> None:
    console = await serve_console(filed, page_size=2)
    _, _, older = await page_at(console, "/attempts")
    assert older is not None
    key = older.split("before=", 1)[1]
    both = await console.get(f"/attempts?before={key}&after={key}")
    assert both.status == 400
    assert "one key" in both.text
    assert (await console.get("/attempts?after=nonsense")).status == 400
