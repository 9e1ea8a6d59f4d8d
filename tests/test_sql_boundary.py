"""The schema is the store's: no SQL statement outside gateway/store/ (issue 10).

Every other package, and the tests, ask the store package's functions, so that a second
backend is a new module in gateway/store/ and nothing else changes. The scan reads each
module's string constants (f-strings' literal parts included) for the shape of a statement;
the store's own schema tests may still speak SQL.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "gateway" / "store"
# These test the schema itself (migration, purge by table, the kept bytes), so they may. The
# PostgreSQL fixture's test speaks SQL to the tests' server, about no table of the gateway's;
# the PostgreSQL store's own test reads back the rows it wrote (its node, its leases), and so
# do the two-node end-to-end tests (which node wrote, leased and sent what) and the interface
# tests (the checkpoint rows); the store-choice tests set a newer schema version to refuse, and
# the operator store's tests do too, and hold a job row as a node's claim half way holds it;
# the audit-nodes tests build a store as schema version 3 left it.
SCHEMA_TESTS = frozenset(
    {
        "test_store.py",
        "test_retention.py",
        "test_sentmail.py",
        "test_postgres_fixture.py",
        "test_postgres_store.py",
        "test_store_choice.py",
        "test_store_interface.py",
        "test_two_nodes.py",
        "test_audit_nodes.py",
        "test_operator_store.py",
    }
)

# The shapes of statements, in the upper case our SQL is written in; prose rarely has them.
_STATEMENT = re.compile(
    r"\bSELECT\b[\s\S]+?\bFROM\b"
    r"|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b"
    r"|\b(?:ALTER|DROP)\s+TABLE\b"
    r"|\bPRAGMA\s+\w+"
    r"|\bBEGIN(?:\s+(?:IMMEDIATE|EXCLUSIVE|DEFERRED|TRANSACTION))?\s*$"
    r"|^\s*(?:COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b"
)


def sql_in(source: str) -> list[int]:
    """The lines of `source` where a string constant holds a SQL statement."""
    found = {
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _STATEMENT.search(node.value)
    }
    return sorted(found)


def _outside_store() -> list[Path]:
    modules = [p for p in (ROOT / "gateway").rglob("*.py") if STORE not in p.parents]
    tests = [
        p
        for p in (ROOT / "tests").rglob("*.py")
        if p.name not in SCHEMA_TESTS and p != Path(__file__).resolve()
    ]
    return sorted(modules + tests)


@pytest.mark.parametrize("path", _outside_store(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sql_outside_the_store_package(path: Path) -> None:
    lines = sql_in(path.read_text(encoding="utf-8"))
    assert lines == [], f"SQL in {path.relative_to(ROOT)} at lines {lines}: ask gateway/store/"


@pytest.mark.parametrize(
    "source",
    [
        'conn.execute("SELECT * FROM jobs WHERE id = ?", (1,))',
        'q = """\nSELECT m.reference,\n       m.size\nFROM messages m\n"""',
        'conn.execute(f"DELETE FROM {table} WHERE reference = ?")',
        'conn.execute("INSERT OR IGNORE INTO audit_chains VALUES (?)")',
        "conn.execute(\"UPDATE jobs SET state = 'queued'\")",
        'conn.execute("PRAGMA integrity_check")',
        'conn.execute("BEGIN IMMEDIATE")',
        'conn.execute("COMMIT")',
        'SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT)"',
    ],
)
def test_the_scan_finds_each_kind_of_statement(source: str) -> None:
    assert sql_in(source) != []


@pytest.mark.parametrize(
    "source",
    [
        '"""Select the jobs that are due, then update their state."""',
        'log.info("store.records_purged", messages=2)',
        'reply = "550 5.1.6 NOT FILED: select the portal from the menu"',
        'help = "delete a job from the queue (it stays as evidence)"',
    ],
)
def test_the_scan_passes_prose(source: str) -> None:
    assert sql_in(source) == []


def test_the_scan_sees_the_store_s_own_sql() -> None:
    # Were the scan blind, every test above the store would pass for nothing.
    assert sql_in((STORE / "db.py").read_text(encoding="utf-8")) != []
    assert sql_in((STORE / "queries.py").read_text(encoding="utf-8")) != []
