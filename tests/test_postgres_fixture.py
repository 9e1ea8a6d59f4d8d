"""The tests' PostgreSQL (tests/postgres.py): a real server, reached as the gateway will reach
it, through psycopg 3 over TCP with a password; it survives restarts and crashes with its
committed rows, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import psycopg
import pytest

from tests.postgres import DATABASE, SUPERUSER, PostgresServer, postgres, postgres_for_tests

__all__ = ["postgres"]  # the fixture, imported so that pytest finds it here

# Starting a cluster takes seconds on a busy machine; no query here takes more than this.
BOUND_S = 30.0


async def connect(dsn: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    async with asyncio.timeout(BOUND_S):
        return await psycopg.AsyncConnection.connect(dsn)


async def fetch_all(dsn: str, query: str) -> list[tuple[object, ...]]:
    async with asyncio.timeout(BOUND_S), await connect(dsn) as conn:
        cursor = await conn.execute(query)
        return await cursor.fetchall()


async def execute(dsn: str, statement: str) -> None:
    async with asyncio.timeout(BOUND_S), await connect(dsn) as conn:
        await conn.execute(statement)


async def test_the_server_makes_commits_durable_and_listens_only_on_loopback(
    postgres: PostgresServer,
) -> None:
    rows = await fetch_all(
        postgres.dsn,
        "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
        " current_setting('listen_addresses'), inet_server_addr()::text",
    )
    assert rows == [("on", "on", "127.0.0.1", "127.0.0.1/32")]


async def test_a_committed_transaction_is_seen_and_a_rolled_back_one_is_not(
    postgres: PostgresServer,
) -> None:
    async with asyncio.timeout(BOUND_S), await connect(postgres.dsn) as conn:
        await conn.execute("CREATE TABLE filings (reference text PRIMARY KEY, n integer)")
        await conn.commit()
        async with conn.transaction():
            await conn.execute("INSERT INTO filings VALUES ('kept', 1), ('kept too', 2)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            await insert_gone_then_a_duplicate(conn)
    # Another connection sees what was committed, and nothing of the failed transaction.
    rows = await fetch_all(postgres.dsn, "SELECT reference FROM filings ORDER BY n")
    assert rows == [("kept",), ("kept too",)]


async def insert_gone_then_a_duplicate(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
    async with conn.transaction():
        await conn.execute("INSERT INTO filings VALUES ('gone', 3)")
        await conn.execute("INSERT INTO filings VALUES ('kept', 4)")


async def test_a_restart_drops_clients_and_keeps_the_committed_rows(
    postgres: PostgresServer,
) -> None:
    async with asyncio.timeout(BOUND_S), await connect(postgres.dsn) as conn:
        await conn.execute("CREATE TABLE before_restart AS SELECT 42 AS answer")
        await conn.commit()
        await asyncio.to_thread(postgres.restart)
        # The server closed this session: the client learns it at its next statement.
        with pytest.raises(psycopg.OperationalError):
            await conn.execute("SELECT 1")
    assert await fetch_all(postgres.dsn, "SELECT answer FROM before_restart") == [(42,)]


async def test_a_crash_loses_no_committed_row_and_the_server_comes_back(
    postgres: PostgresServer,
) -> None:
    async with asyncio.timeout(BOUND_S), await connect(postgres.dsn) as conn:
        await conn.execute("CREATE TABLE before_crash (n integer)")
        await conn.execute("INSERT INTO before_crash SELECT generate_series(1, 1000)")
        await conn.commit()
    # `immediate` is a crash: no checkpoint, so the rows come back only from the fsynced WAL.
    await asyncio.to_thread(postgres.stop, "immediate")
    with pytest.raises(psycopg.OperationalError):
        await fetch_all(postgres.dsn, "SELECT 1")
    await asyncio.to_thread(postgres.start)
    assert await fetch_all(postgres.dsn, "SELECT count(*) FROM before_crash") == [(1000,)]


async def test_a_wrong_password_is_refused(postgres: PostgresServer) -> None:
    wrong = postgres.dsn.replace(postgres.password, "not-" + postgres.password)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await fetch_all(wrong, "SELECT 1")


async def test_a_service_file_and_a_passfile_are_read_as_libpq_reads_them(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What an operator's pg_service.conf and .pgpass say, with no password in the DSN: the
    # driver must find the database in the one and the password in the other, as psql does.
    service = tmp_path / "pg_service.conf"
    service.write_text(
        f"[gateway]\nhost=127.0.0.1\nport={postgres.port}\ndbname={DATABASE}\nuser={SUPERUSER}\n"
    )
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:{DATABASE}:{SUPERUSER}:{postgres.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    rows = await fetch_all("postgresql:///?service=gateway", "SELECT current_database()")
    assert rows == [(DATABASE,)]


async def test_a_created_database_is_empty_and_separate(postgres: PostgresServer) -> None:
    dsn = await asyncio.to_thread(postgres.create_database, "fresh")
    await execute(dsn, "CREATE TABLE only_here AS SELECT 1 AS n")
    tables = "SELECT table_name FROM information_schema.tables WHERE table_name = 'only_here'"
    assert await fetch_all(dsn, tables) == [("only_here",)]
    assert await fetch_all(postgres.dsn, tables) == []


class Failure(Exception):
    """What a test raises while its server runs."""


def fail_while_running(seen: list[tuple[Path, int]]) -> None:
    with postgres_for_tests() as server:
        seen.append((server.root, server.port))
        assert _accepts(server.port)
        raise Failure


def test_the_server_is_stopped_and_its_directory_removed_even_after_a_failure() -> None:
    seen: list[tuple[Path, int]] = []
    with pytest.raises(Failure):
        fail_while_running(seen)
    [(root, port)] = seen
    assert not root.exists()
    assert not _accepts(port)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
