"""The store's schema: its tables, its version and the migration of an older file.

Opening a store runs `migrate()` before the writer takes any work. A file at an older version
is brought up to this one step by step, in one transaction, and then says so in
meta.schema_version; a file at a newer version is refused, untouched, rather than half
understood: a newer gateway may keep states and tables this code would misread (a held job
sent anyway, say). Every step is idempotent (IF NOT EXISTS, a column added only when it is
missing), because stores made before a version was bumped may already have some of it.
"""

from __future__ import annotations

import sqlite3

from gateway.errors import StoreError

__all__ = [
    "SCHEMA_VERSION",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "SchemaVersionError",
    "migrate",
    "require_current",
    "schema_version",
]

# 1: the first release. 2: sent_notices and messages.refused_for. 3: the job state `held` and
# the operator_actions journal (`gateway queue hold|release|flush|retry|delete`); a version-2
# gateway would send a held job and never log an operator's action. 4: audit_chains.node, the
# host whose log holds the chain (NULL for chains anchored before), for stores shared by nodes.
SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    reference     TEXT PRIMARY KEY,
    received_at   TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    peer_ip       TEXT NOT NULL,
    peer_port     INTEGER,
    helo          TEXT,
    tls           TEXT,
    mail_from     TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    message_id    TEXT,
    subject       TEXT,
    date_header   TEXT,
    from_header   TEXT,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    attachments   TEXT NOT NULL,
    a_numbers     TEXT NOT NULL,
    mime_truncated INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    reply         TEXT NOT NULL,
    notice        TEXT NOT NULL,
    duplicate_of  TEXT,
    auth          TEXT,
    sender_authenticated INTEGER NOT NULL DEFAULT 0,
    refused_for   TEXT
);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (mail_from);
CREATE TABLE IF NOT EXISTS message_recipients (
    reference   TEXT NOT NULL REFERENCES messages (reference),
    recipient   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    office      TEXT,
    phase       TEXT,
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    decided_at  TEXT NOT NULL,
    local_time  TEXT,
    PRIMARY KEY (reference, recipient)
);
CREATE TABLE IF NOT EXISTS notice_counts (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    hour        TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (scope, key, hour)
);
CREATE TABLE IF NOT EXISTS notice_dedup (
    key         TEXT PRIMARY KEY,
    reference   TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_messages (
    reference   TEXT PRIMARY KEY REFERENCES messages (reference),
    raw         BLOB NOT NULL,
    keep_until  TEXT
);
CREATE TABLE IF NOT EXISTS refusals (
    reference   TEXT PRIMARY KEY,
    at          TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    peer_ip     TEXT NOT NULL,
    helo        TEXT,
    mail_from   TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    office      TEXT,
    phase       TEXT,
    reason      TEXT NOT NULL,
    reply       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals (at);
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY,
    reference       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    office          TEXT,
    mail_from       TEXT NOT NULL,
    recipients      TEXT NOT NULL,
    destination     TEXT,
    route           TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued',
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     TEXT,
    last_reply      TEXT,
    updated_at      TEXT NOT NULL,
    about_job       INTEGER REFERENCES jobs (id)
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_attempt_at);
-- Retention looks up a message's jobs, and raw messages by their end of retention.
CREATE INDEX IF NOT EXISTS jobs_reference ON jobs (reference);
CREATE INDEX IF NOT EXISTS raw_keep_until ON raw_messages (keep_until);
CREATE TABLE IF NOT EXISTS attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    host        TEXT NOT NULL,
    code        INTEGER NOT NULL,
    reply       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
-- `gateway audit` finds attempts by Message-ID and refusals by sender.
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS refusals_sender ON refusals (mail_from);
-- The audit log's hash chains (chain.py): each chain's first line, and its head over time.
CREATE TABLE IF NOT EXISTS audit_chains (
    chain       TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    log         TEXT NOT NULL,
    first_hash  TEXT NOT NULL,
    node        TEXT
);
-- No foreign key: a chain resumed from a file whose anchor is elsewhere still checkpoints.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
"""

# Version 2 added the notices as sent (sentmail.py) and why a message was refused.
_TO_2 = """
-- Each notice, advisory and bounce as sent, after DKIM signing: what the sender was told
-- (sentmail.py). No foreign key: it has its own retention ([storage]
-- notice_retention_days) and may outlive its job's record.
CREATE TABLE IF NOT EXISTS sent_notices (
    reference   TEXT NOT NULL,
    job_id      INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    message_id  TEXT,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sent_at     TEXT NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (reference, job_id)
);
CREATE INDEX IF NOT EXISTS sent_notices_sent_at ON sent_notices (sent_at);
"""
# Version 3 journals operators' queue actions; the serving gateway logs each one once. The
# partial index keeps the worker's look for unlogged actions (queueactions.py) to
# one index probe however long the journal grows.
_TO_3 = """
CREATE TABLE IF NOT EXISTS operator_actions (
    id           INTEGER PRIMARY KEY,
    action       TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    operator     TEXT NOT NULL,
    job_ids      TEXT NOT NULL,
    filter       TEXT NOT NULL,
    logged_at    TEXT
);
CREATE INDEX IF NOT EXISTS operator_actions_unlogged ON operator_actions (id)
    WHERE logged_at IS NULL;
"""

# The step to each version from the one before, and the columns it adds to existing tables.
_STEPS: dict[int, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    2: (_TO_2, (("messages", "refused_for", "TEXT"),)),
    3: (_TO_3, ()),
    4: ("", (("audit_chains", "node", "TEXT"),)),
}


class SchemaVersionError(StoreError):
    """The store's schema is not at this code's version."""


class SchemaTooNewError(SchemaVersionError):
    """The store was written by a newer gateway than this one."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"its schema is version {found}, newer than this gateway's version"
            f" {SCHEMA_VERSION}: a newer eservice-gateway has used it. Run that version (or"
            " a later one), or restore a copy of the store made by this version; it is"
            " left untouched"
        )
        self.found = found


class SchemaTooOldError(SchemaVersionError):
    """The store has not yet been migrated to this code's version."""

    def __init__(self, found: int | None) -> None:
        super().__init__(
            f"its schema is version {found or 0}, older than this gateway's version"
            f" {SCHEMA_VERSION}: stop the older gateway and start this version's"
            " `gateway serve`, which migrates the store, then try again"
        )
        self.found = found


def require_current(conn: sqlite3.Connection) -> None:
    """Check, for a tool that changes the store beside the gateway (`gateway queue hold`),
    that the file is at this code's version: a change the serving gateway would misread,
    or one the file has no table for, is refused.

    Raises:
        SchemaTooNewError: a newer gateway has used the store.
        SchemaTooOldError: no gateway of this version has opened it yet.
    """
    found = schema_version(conn)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaTooNewError(found)
    if found is None or found < SCHEMA_VERSION:
        raise SchemaTooOldError(found)


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The version the store file says it is at; None for a new, empty file."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        return None if "messages" not in tables else 1
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return 1 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the store to SCHEMA_VERSION, in one transaction (none when it is already there).

    Raises:
        SchemaTooNewError: the file is at a newer version; nothing was changed.
    """
    found = schema_version(conn)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaTooNewError(found)
    if found == SCHEMA_VERSION:
        return
    start = 1 if found is None else found
    # The tables every version has (each with all its columns, for a new file); an older
    # file may lack an index added since, which this adds.
    script = [_SCHEMA]
    for version in range(start + 1, SCHEMA_VERSION + 1):
        ddl, columns = _STEPS[version]
        script.append(ddl)
        script.extend(_added_columns(conn, columns))
    script.append(
        f"INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');"
    )
    # executescript commits whatever is open first; BEGIN ... COMMIT makes the steps one, so
    # a crash mid-way leaves the file at its old version, to be migrated again next time.
    try:
        conn.executescript("BEGIN IMMEDIATE;\n" + "\n".join(script) + "\nCOMMIT;")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _added_columns(
    conn: sqlite3.Connection, columns: tuple[tuple[str, str, str], ...]
) -> list[str]:
    statements = []
    for table, column, kind in columns:
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if present and column not in present:  # a table the script creates has them all
            statements.append(f"ALTER TABLE {table} ADD COLUMN {column} {kind};")
    return statements
