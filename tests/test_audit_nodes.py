"""`gateway audit show|notice|verify` and the console on both backends, and schema 4's node
of each chain.

On the shared store an operator on one node asks about an attempt another node took, or
verifies this node's log while the store also anchors the other nodes' chains: the answers
name those nodes. Each test takes the contract's `backend` (sqlite, postgres); a store at
schema version 3 is built from that version's DDL and migrated as `gateway serve` does.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.audit.anchoring import anchored
from gateway.audit.chain import ChainedLog
from gateway.config import ConsoleSettings, GatewaySettings
from gateway.http.console import start_console
from gateway.http.health import Endpoint
from gateway.ops.auditcmd import AuditRequest, run_audit
from gateway.ops.auditverify import unchecked_chains
from gateway.ops.migrate import run_migrate
from gateway.store.anchors import Anchor, Checkpoint
from gateway.store.backend import StoreLocation, head_store, open_audit_reader
from gateway.store.postgres import schema as pg_schema
from gateway.store.schema import SCHEMA_VERSION
from tests.conftest import FakeClock, make_settings
from tests.postgres import postgres
from tests.test_console import PASSWORD, Console, add_user, page_at
from tests.test_sentmail import Answer
from tests.test_store_contract import (
    BOUND_S,
    SENDER,
    Backend,
    backend,
    deliver_kept_notice,
    filing,
    refusal,
)

__all__ = ["backend", "postgres"]

NOTICE = b"Message-ID: <n1@gateway.example>\r\nSubject: Not filed\r\n\r\nUse the portal.\r\n"
AT = datetime(2017, 9, 13, 15, 0, tzinfo=UTC)


def settings_of(backend: Backend, tmp_path: Path, node: str, **audit: Any) -> GatewaySettings:
    """A node's settings on the backend's store; its audit log in tmp_path."""
    storage: dict[str, Any] = {} if backend.dsn is None else {"url": backend.dsn}
    return make_settings(tmp_path, storage=storage, server={"node": node}, audit=audit)


def location(backend: Backend, node: str) -> StoreLocation:
    return StoreLocation(backend.path or Path("unused"), node, backend.dsn)


def ask(settings: GatewaySettings, **request: Any) -> Answer:
    out, err, data = io.StringIO(), io.StringIO(), io.BytesIO()
    status = run_audit(settings, AuditRequest(**request), now=AT, out=out, err=err, out_bytes=data)
    return Answer(status, out.getvalue(), err.getvalue(), data.getvalue())


async def a_notice_sent_by(backend: Backend, node: str) -> tuple[str, int]:
    """A filing that `node` took, its notice delivered and kept as sent; its reference and
    the notice's job."""
    store = await backend.open_store(node)
    return await deliver_kept_notice(store, backend.outbox(store, f"{node}:1:1"), NOTICE)


# -- show and notice ---------------------------------------------------------------------------


async def test_show_on_one_node_tells_the_story_of_an_attempt_the_other_took(
    backend: Backend, tmp_path: Path
) -> None:
    reference, job = await a_notice_sent_by(backend, "mx2")
    settings = settings_of(backend, tmp_path, "mx1")
    shown = await asyncio.to_thread(ask, settings, action="show", targets=(reference.lower(),))
    assert shown.status == 0, shown.err
    assert shown.out.startswith(f"attempt {reference}: message received to the end of DATA")
    assert f"  job {job}  notice to <{SENDER}>: delivered after 1 attempt\n" in shown.out
    delivered = "delivered by mx2" if backend.dsn is not None else "delivered"
    assert f"{delivered}  mx.lawfirm.example  250  2.0.0 ok" in shown.out
    assert "message-id  <n1@gateway.example>" in shown.out
    # The shared store names the node that took it; one host's SQLite file has no others.
    if backend.dsn is not None:
        assert "  node            mx2\n" in shown.out
        assert "received by node mx2: the lines of its arrival are in its log" in shown.out
    else:
        assert "  node " not in shown.out


async def test_a_refusal_and_a_missing_reference_are_told_apart(
    backend: Backend, tmp_path: Path
) -> None:
    store = await backend.open_store("mx2")
    refused = refusal()
    async with asyncio.timeout(BOUND_S):
        await store.record_refusal(refused)
    settings = settings_of(backend, tmp_path, "mx1")
    shown = await asyncio.to_thread(ask, settings, action="show", targets=(refused.reference,))
    missing = await asyncio.to_thread(
        ask, settings, action="show", targets=("20170913-NOSUCHREFERENC",)
    )
    assert shown.status == 0, shown.err
    assert f"attempt {refused.reference}: refused at RCPT" in shown.out
    assert missing.status == 1
    assert "no attempt 20170913-NOSUCHREFERENC in the store" in missing.err


async def test_notice_writes_another_nodes_kept_notice_byte_for_byte(
    backend: Backend, tmp_path: Path
) -> None:
    reference, _ = await a_notice_sent_by(backend, "mx2")
    settings = settings_of(backend, tmp_path, "mx1")
    kept = await asyncio.to_thread(ask, settings, action="notice", targets=(reference,))
    wrong_job = await asyncio.to_thread(
        ask, settings, action="notice", targets=(reference,), job=99
    )
    assert kept.status == 0, kept.err
    assert kept.data == NOTICE
    assert wrong_job.status == 1
    assert f"no notice of job 99 is kept for {reference}" in wrong_job.err


async def test_notice_of_an_attempt_whose_notice_is_not_sent_says_so(
    backend: Backend, tmp_path: Path
) -> None:
    store = await backend.open_store("mx2")
    record, check = filing()
    async with asyncio.timeout(BOUND_S):
        await store.record_message(record, check)
    answer = await asyncio.to_thread(
        ask, settings_of(backend, tmp_path, "mx1"), action="notice", targets=(record.reference,)
    )
    assert answer.status == 1
    assert f"no notice has been sent for {record.reference}" in answer.err
    assert answer.data == b""


# -- verify ------------------------------------------------------------------------------------


def anchored_log(path: Path, where: StoreLocation, count: int) -> str:
    """A chained log of `count` lines, anchored and checkpointed in the store; its chain."""
    chain = ChainedLog.to_file(path, check_every_s=0)
    try:
        with anchored(chain, where, every_s=3600):
            for n in range(count):
                chain.msg(json.dumps({"event": "smtp.reply.sent", "n": n}))
            name = chain.head.chain
    finally:
        chain.close()
    return name


async def test_verify_checks_this_nodes_log_and_names_the_other_nodes_chains(
    backend: Backend, tmp_path: Path
) -> None:
    await backend.open_store()  # the schema
    mine, theirs = tmp_path / "mx1.log", tmp_path / "mx2.log"
    own = await asyncio.to_thread(anchored_log, mine, location(backend, "mx1"), 5)
    other = await asyncio.to_thread(anchored_log, theirs, location(backend, "mx2"), 3)
    settings = settings_of(backend, tmp_path, "mx1", log=str(mine))

    verified = await asyncio.to_thread(ask, settings, action="verify")
    assert verified.status == 0, verified.out + verified.err
    lines = verified.out.splitlines()
    assert f"  chain {own}: seq 1-5 (5 records); its first record matches its anchor" in (lines[1])
    assert lines[2] == (
        "anchored in the store by other nodes, not checked here (each log is on its host):"
    )
    assert lines[3].startswith(f"  node mx2: chain {other}, started ")
    assert lines[3].endswith(f", log {theirs}")
    assert lines[-1] == "OK: 5 records, chain intact"

    # This node's chain broken: the exit status says so, and the others are still listed.
    cut = mine.read_bytes().splitlines(keepends=True)
    mine.write_bytes(b"".join(cut[:-1]))
    broken = await asyncio.to_thread(ask, settings, action="verify")
    assert broken.status == 1
    assert f"  node mx2: chain {other}" in broken.out
    assert "FAILED: " in broken.out
    assert "truncated" in broken.out


@pytest.mark.parametrize(
    ("anchors", "is_shared", "listed"),
    [
        ({"a": "mx1", "b": "mx2", "c": "mx3"}, True, ["b", "c"]),
        ({"a": "mx1", "b": None}, True, ["b"]),  # anchored before schema 4: maybe anyone's
        ({"a": "mx1", "b": None}, False, []),  # one host's own file: its own
        ({"a": "mx2", "b": "mx2"}, False, ["b"]),  # "a" was in the files checked
    ],
    ids=["others", "null-shared", "null-sqlite", "checked-is-not-listed"],
)
def test_the_chains_left_unchecked_are_other_nodes_not_in_the_files(
    anchors: dict[str, str | None], *, is_shared: bool, listed: list[str]
) -> None:
    found = {
        chain: Anchor(chain, AT, f"/var/log/{chain}.log", "f" * 64, node)
        for chain, node in anchors.items()
    }
    unchecked = unchecked_chains(found, checked={"a"}, node="mx1", is_shared=is_shared)
    assert [a.chain for a in unchecked] == listed


# -- schema 4: the node of each chain, migrated from version 3 ---------------------------------

_V3_ANCHOR = ("chain-v3", "/var/log/eservice-gateway/gateway.log", "e" * 64)


def _sqlite_at_version_3(path: Path) -> None:
    # The schema as version 3 left it: audit_chains without `node`, and a chain anchored then.
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("ALTER TABLE audit_chains DROP COLUMN node")
        conn.execute(
            "INSERT INTO audit_chains (chain, started_at, log, first_hash) VALUES (?, ?, ?, ?)",
            (_V3_ANCHOR[0], AT.isoformat(), *_V3_ANCHOR[1:]),
        )
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")


def _postgres_at_version_3(dsn: str) -> None:
    # A store made by a version-3 gateway: the first version's DDL (pg_schema._TABLES) as is.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(pg_schema._TABLES)
        conn.execute(pg_schema._GATE)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '3')")
        conn.execute(
            "INSERT INTO audit_chains (chain, started_at, log, first_hash) VALUES (%s, %s, %s, %s)",
            (_V3_ANCHOR[0], AT, *_V3_ANCHOR[1:]),
        )


def migrate(settings: GatewaySettings) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert run_migrate(settings, out=out, err=err) == 0, err.getvalue()
    return out.getvalue()


def anchors_in(where: StoreLocation) -> dict[str, Anchor]:
    reader = open_audit_reader(where)
    try:
        return reader.load_anchors()
    finally:
        reader.close()


async def test_a_version_3_store_is_migrated_and_its_old_chains_have_no_node(
    backend: Backend, tmp_path: Path
) -> None:
    if backend.dsn is None:
        await backend.open_store()
        await backend.close()
        await asyncio.to_thread(_sqlite_at_version_3, backend.path or Path())
    else:
        await asyncio.to_thread(_postgres_at_version_3, backend.dsn)
    where = location(backend, "mx1")
    settings = settings_of(backend, tmp_path, "mx1")
    migrated = await asyncio.to_thread(migrate, settings)
    again = await asyncio.to_thread(migrate, settings)
    heads = head_store(where)
    try:
        new = Anchor("chain-v4", AT, "/var/log/eservice-gateway/gateway.log", "f" * 64, "mx1")
        await asyncio.to_thread(heads.save_head, new, Checkpoint("chain-v4", 1, "f" * 64, AT))
    finally:
        heads.close()
    saved = await asyncio.to_thread(anchors_in, where)
    # `gateway migrate`'s words, as an operator reads them before and after.
    assert migrated.endswith(": migrated from schema version 3 to 4\n")
    assert again.endswith(": already at schema version 4; nothing to do\n")
    assert SCHEMA_VERSION == 4
    assert {chain: a.node for chain, a in saved.items()} == {"chain-v3": None, "chain-v4": "mx1"}
    assert saved["chain-v3"].first_hash == "e" * 64

    # verify on mx1, its log holding neither: the old chain is listed only on a shared store,
    # where it may be any node's; in one host's SQLite file it is that host's own.
    log = tmp_path / "mx1.log"
    mine = await asyncio.to_thread(anchored_log, log, where, 2)
    answer = await asyncio.to_thread(
        ask, settings_of(backend, tmp_path, "mx1", log=str(log)), action="verify"
    )
    assert answer.status == 0, answer.out
    assert mine in answer.out
    unnamed = (
        "  node not recorded (before schema 4): chain chain-v3, started 2017-09-13T15:00:00+00:00"
    )
    assert (unnamed in answer.out) is (backend.dsn is not None)


# -- the operator console on either store ------------------------------------------------------


async def console_on(
    settings: GatewaySettings, tmp_path: Path, *, page_size: int = 50
) -> tuple[Endpoint, Console]:
    users = tmp_path / "console-users"
    if not users.exists():
        await asyncio.to_thread(add_user, users, "records", PASSWORD)
    console = ConsoleSettings(listen="127.0.0.1:0", users_file=users)  # type: ignore[arg-type]
    # Below the setting's floor: pages of one row, to walk the keyset.
    console = console.model_copy(update={"page_size": page_size})
    endpoint = await start_console(settings.model_copy(update={"console": console}), FakeClock(AT))
    assert endpoint is not None
    return endpoint, Console(endpoint)


async def test_the_console_pages_every_nodes_attempts_and_tells_their_stories(
    backend: Backend, tmp_path: Path
) -> None:
    told, _ = await a_notice_sent_by(backend, "mx2")
    mx1 = await backend.open_store("mx1")
    refused, pending = refusal(), filing()
    async with asyncio.timeout(BOUND_S):
        await mx1.record_refusal(refused)
        await mx1.record_message(*pending)
    settings = settings_of(backend, tmp_path, "mx1")
    endpoint, console = await console_on(settings, tmp_path, page_size=1)
    try:
        seen: list[str] = []
        nodes: dict[str, str | None] = {}  # from each page's JSON lines
        path: str | None = "/attempts"
        for _ in range(10):  # three attempts, a page each, then no link to older ones
            if path is None:
                break
            page = await console.get(path)
            assert page.status == 200, page.text
            seen += [line.split('"')[0] for line in page.text.split('href="/attempts/')[1:]]
            rows = (await console.get(path.replace("/attempts", "/attempts.json", 1))).text
            nodes |= {json.loads(r)["reference"]: json.loads(r)["node"] for r in rows.splitlines()}
            older = page.text.split('" rel="next"')[0].rsplit('href="', 1)[-1]
            path = older.replace("&amp;", "&") if 'rel="next"' in page.text else None
        first = await console.get("/attempts")
        story = await console.get(f"/attempts/{told}")
        queue = await console.get("/queue")
        every_job = await console.get("/queue.csv?state=all")
        summary = await console.get("/summary?since=2000-01-01")
    finally:
        await endpoint.runner.cleanup()
    references = {told, refused.reference, pending[0].reference}
    # Each once, newest first; the three share their arrival time, so the reference decides,
    # byte for byte on both backends (the keyset's tie-break).
    assert seen == sorted(references, reverse=True)
    assert story.status == 200
    assert f"attempt {told}: message received to the end of DATA" in story.text
    assert "Notices as sent" in story.text
    assert pending[0].reference in queue.text  # its notice still queued
    assert told not in queue.text  # delivered
    assert told in every_job.text
    assert summary.status == 200
    if backend.dsn is not None:
        assert nodes == {told: "mx2", refused.reference: "mx1", pending[0].reference: "mx1"}
        assert '<th scope="col">Node</th>' in first.text
        assert "node            mx2" in story.text
    else:
        assert set(nodes.values()) == {None}
        assert '<th scope="col">Node</th>' not in first.text


async def test_the_console_answers_503_when_the_shared_store_is_down(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a loopback port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = make_settings(tmp_path, storage={"url": f"postgresql://gw@127.0.0.1:{port}/gateway"})
    endpoint, console = await console_on(settings, tmp_path)
    try:
        page = await console.get("/attempts")
    finally:
        await endpoint.runner.cleanup()
    assert page.status == 503
    assert f"The store cannot be read: postgresql 127.0.0.1:{port}/gateway:" in page.text


# -- the console's Older and Newer links on either store ---------------------------------------


async def attempts_of_two_nodes(
    backend: Backend, start: datetime, count: int
) -> list[tuple[str, str]]:
    """`count` attempts, mx1's and mx2's in turn, a refusal at RCPT every third and the rest
    filings refused after DATA, two by two at the same time (so the reference breaks the
    ties); their references and decisions, newest first as the console lists them."""
    stores = {node: await backend.open_store(node) for node in ("mx1", "mx2")}
    made: list[tuple[datetime, str, str]] = []
    async with asyncio.timeout(BOUND_S):
        for n in range(count):
            store, at = stores["mx1" if n % 2 else "mx2"], start + timedelta(minutes=n // 2)
            if n % 3 == 0:
                await store.record_refusal(refused := refusal(at))
                made.append((at, refused.reference, "refused"))
            else:
                record, check = filing(at=at)
                await store.record_message(record, check)
                made.append((at, record.reference, "rejected"))
    return [(reference, decision) for _, reference, decision in sorted(made, reverse=True)]


@pytest.mark.parametrize("query", ["", "?decision=rejected"])
async def test_the_newer_links_walk_back_up_the_pages_older_links_walked_down(
    backend: Backend, tmp_path: Path, query: str
) -> None:
    made = await attempts_of_two_nodes(backend, AT, 9)
    expected = [r for r, decision in made if not query or decision == "rejected"]
    assert len(expected) == (6 if query else 9)
    endpoint, console = await console_on(
        settings_of(backend, tmp_path, "mx1"), tmp_path, page_size=2
    )
    try:
        down: list[list[str]] = []
        newer: str | None = None
        path: str | None = f"/attempts{query}"
        while path is not None and len(down) < 10:
            rows, newer, path = await page_at(console, path)
            assert (newer is None) == (not down)  # only the first page has nothing newer
            down.append(rows)
        up: list[list[str]] = []
        path = newer  # the last page's
        while path is not None and len(up) < 10:
            assert ("decision=rejected" in path) == bool(query)
            rows, path, _ = await page_at(console, path)
            up.append(rows)
    finally:
        await endpoint.runner.cleanup()
    assert [ref for rows in down for ref in rows] == expected
    assert len(down) == (len(expected) + 1) // 2
    assert up == down[-2::-1]  # back to the newest page, the same rows on each page


async def test_a_newer_link_keeps_its_rows_while_other_nodes_record_newer_attempts(
    backend: Backend, tmp_path: Path
) -> None:
    made = [r for r, _ in await attempts_of_two_nodes(backend, AT, 5)]
    endpoint, console = await console_on(
        settings_of(backend, tmp_path, "mx1"), tmp_path, page_size=2
    )
    try:
        _, _, older = await page_at(console, "/attempts")
        assert older is not None
        _, back, _ = await page_at(console, older)
        assert back is not None
        arrived = [r for r, _ in await attempts_of_two_nodes(backend, AT + timedelta(hours=1), 3)]
        again, above, _ = await page_at(console, back)
        assert above is not None
        ahead, top, _ = await page_at(console, above)
        assert top is not None
        last, beyond, _ = await page_at(console, top)
        newest, none, _ = await page_at(console, "/attempts")
    finally:
        await endpoint.runner.cleanup()
    # The page that was first keeps its rows, and now has the new attempts above it.
    assert again == made[:2]
    assert ahead == arrived[1:]
    assert last == arrived[:1]
    assert beyond is None  # nothing newer: the newest attempt is on it
    assert newest == arrived[:2]
    assert none is None
