"""The store's schema: its tables, its version and the migration of an older file.

Opening a store runs `migrate()` in the writer's first transaction: every CREATE is IF NOT
EXISTS and columns added since version 1 are added by ALTER TABLE, so an older file gains what
it lacks; a file newer than this code is refused rather than half understood.
"""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA_VERSION", "migrate"]

# 2: sent_notices and messages.refused_for. Opening an older store adds what it lacks (CREATE
# ... IF NOT EXISTS, ALTER TABLE for columns) and records the new version, so an older gateway,
# which would neither fill nor purge them, refuses it.
SCHEMA_VERSION = 2
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
    first_hash  TEXT NOT NULL
);
-- No foreign key: a chain resumed from a file whose anchor is elsewhere still checkpoints.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
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

# Crockford's base32: no I, L, O, U, so a reference read over the phone is unambiguous.


_ADDED_COLUMNS = (("messages", "refused_for", "TEXT"),)


def migrate(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is not None and int(row[0]) > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"store schema {row[0]} is newer than this gateway ({SCHEMA_VERSION})"
        )
    for table, column, kind in _ADDED_COLUMNS:
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    # The script and columns above have brought an older store up to date: say so.
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
