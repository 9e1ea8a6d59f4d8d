"""The PostgreSQL store's schema: its tables, the notice gate's function, its version.

The tables are the SQLite store's (gateway/store/schema.py), column for column, in
PostgreSQL's types, plus the `node` that wrote each message, refusal, job and attempt. Times
are `timestamptz`, not ISO TEXT as in SQLite: several nodes compare leases and due times, and
`timestamptz` compares instants whatever offset or precision a writer used, on the server's
clock (`now()`) where a lease is concerned; psycopg reads and writes aware datetimes exactly
(microseconds, as `iso()` keeps). JSON lists are `jsonb`, flags `boolean`, bytes `bytea`,
row ids identity columns.

The version is the SQLite store's SCHEMA_VERSION: one number for what a store holds, in
either backend. `migrate()` runs in one transaction (DDL is transactional here) under an
advisory lock, so that nodes starting together migrate once; a newer store is refused with
the SQLite store's words, untouched. This module must not write records.
"""

from __future__ import annotations

from typing import Any

import psycopg

from gateway.store.schema import SCHEMA_VERSION, SchemaTooNewError

__all__ = ["MIGRATION_LOCK", "SCHEMA_VERSION", "migrate", "schema_version"]

# pg_advisory_xact_lock's key for migrations: any constant no other lock of ours uses.
MIGRATION_LOCK = 0x6761_7465_7761_7901

# The first version a PostgreSQL store was made at: _TABLES is its DDL, and a new store is
# made at it and then taken through _STEPS like any other.
_FIRST_VERSION = 3

_TABLES = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE messages (
    reference     text PRIMARY KEY,
    received_at   timestamptz NOT NULL,
    session_id    text NOT NULL,
    peer_ip       text NOT NULL,
    peer_port     integer,
    helo          text,
    tls           text,
    mail_from     text NOT NULL,
    recipients    jsonb NOT NULL,
    message_id    text,
    subject       text,
    date_header   text,
    from_header   text,
    size          bigint NOT NULL,
    sha256        text NOT NULL,
    attachments   jsonb NOT NULL,
    a_numbers     jsonb NOT NULL,
    mime_truncated boolean NOT NULL,
    outcome       text NOT NULL,
    reply         text NOT NULL,
    notice        text NOT NULL,
    duplicate_of  text,
    auth          text,
    sender_authenticated boolean NOT NULL DEFAULT false,
    refused_for   text,
    node          text NOT NULL,
    -- Insertion order, which SQLite's rowid gives the reads that list records.
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX messages_received ON messages (received_at);
CREATE INDEX messages_sender ON messages (mail_from);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE TABLE message_recipients (
    reference   text NOT NULL REFERENCES messages (reference),
    recipient   text NOT NULL,
    kind        text NOT NULL,
    office      text,
    phase       text,
    action      text NOT NULL,
    reason      text NOT NULL,
    decided_at  timestamptz NOT NULL,
    local_time  text,
    PRIMARY KEY (reference, recipient)
);
-- The hour is the window's start (SQLite keeps it as TEXT "2017-09-13T15").
CREATE TABLE notice_counts (
    scope       text NOT NULL,
    key         text NOT NULL,
    hour        timestamptz NOT NULL,
    count       integer NOT NULL,
    PRIMARY KEY (scope, key, hour)
);
CREATE TABLE notice_dedup (
    key         text PRIMARY KEY,
    reference   text NOT NULL,
    at          timestamptz NOT NULL
);
CREATE TABLE raw_messages (
    reference   text PRIMARY KEY REFERENCES messages (reference),
    raw         bytea NOT NULL,
    keep_until  timestamptz
);
CREATE INDEX raw_keep_until ON raw_messages (keep_until);
CREATE TABLE refusals (
    reference   text PRIMARY KEY,
    at          timestamptz NOT NULL,
    session_id  text NOT NULL,
    peer_ip     text NOT NULL,
    helo        text,
    mail_from   text NOT NULL,
    recipient   text NOT NULL,
    office      text,
    phase       text,
    reason      text NOT NULL,
    reply       text NOT NULL,
    node        text NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX refusals_at ON refusals (at);
CREATE INDEX refusals_sender ON refusals (mail_from);
CREATE TABLE jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reference       text NOT NULL,
    kind            text NOT NULL,
    office          text,
    mail_from       text NOT NULL,
    recipients      jsonb NOT NULL,
    destination     text,
    route           text NOT NULL,
    state           text NOT NULL DEFAULT 'queued',
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    lease_owner     text,
    lease_until     timestamptz,
    last_reply      text,
    updated_at      timestamptz NOT NULL,
    about_job       bigint REFERENCES jobs (id),
    node            text NOT NULL
);
CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
CREATE INDEX jobs_reference ON jobs (reference);
CREATE TABLE attempts (
    job_id      bigint NOT NULL REFERENCES jobs (id),
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    host        text NOT NULL,
    code        integer NOT NULL,
    reply       text NOT NULL,
    outcome     text NOT NULL,
    node        text NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE audit_chains (
    chain       text PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    log         text NOT NULL,
    first_hash  text NOT NULL
);
CREATE TABLE audit_checkpoints (
    chain       text NOT NULL,
    seq         bigint NOT NULL,
    hash        text NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE TABLE sent_notices (
    reference   text NOT NULL,
    job_id      bigint NOT NULL,
    kind        text NOT NULL,
    message_id  text,
    sha256      text NOT NULL,
    size        bigint NOT NULL,
    sent_at     timestamptz NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (reference, job_id)
);
CREATE INDEX sent_notices_sent_at ON sent_notices (sent_at);
CREATE TABLE operator_actions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action       text NOT NULL,
    requested_at timestamptz NOT NULL,
    operator     text NOT NULL,
    job_ids      jsonb NOT NULL,
    filter       jsonb NOT NULL,
    logged_at    timestamptz
);
CREATE INDEX operator_actions_unlogged ON operator_actions (id) WHERE logged_at IS NULL;
"""

# The notice gate (store.py): the dedup entry, then the hourly counters, in one statement
# at the end of the message's transaction. `counts` are the notices before this one, in
# the order of `scopes` (the callers' fixed order, so that two sessions lock the same rows in
# the same order and cannot deadlock). Strict: a repeat or a limit reached raises GW001,
# which aborts the transaction, message and all. Not strict (the second, settling
# transaction): nothing is written unless the notice passes, and `counted` says whether it did.
_GATE = """
CREATE FUNCTION gateway_count_notice(
    p_key text, p_reference text, p_at timestamptz, p_since timestamptz, p_hour timestamptz,
    p_scopes text[], p_keys text[], OUT duplicate_of text, OUT counts integer[])
LANGUAGE plpgsql AS $$
DECLARE
    taken text;
BEGIN
    INSERT INTO notice_dedup AS d (key, reference, at) VALUES (p_key, p_reference, p_at)
        ON CONFLICT (key) DO UPDATE SET reference = excluded.reference, at = excluded.at
        WHERE d.at < p_since
        RETURNING d.reference INTO taken;
    IF taken IS NULL THEN
        SELECT d.reference INTO duplicate_of FROM notice_dedup AS d WHERE d.key = p_key;
        RETURN;
    END IF;
    WITH counted AS (
        INSERT INTO notice_counts AS c (scope, key, hour, count)
        SELECT t.s, t.k, p_hour, 1 FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS t (s, k, n)
        ORDER BY t.n
        ON CONFLICT (scope, key, hour) DO UPDATE SET count = c.count + 1
        RETURNING c.scope, c.count)
    SELECT array_agg(counted.count - 1 ORDER BY array_position(p_scopes, counted.scope))
        INTO counts FROM counted;
    -- The first notice of an hour tidies, as SQLite's store does; an hour's margin, so that
    -- a node whose clock runs behind still finds the windows it counts in.
    IF 'total' = ANY (p_scopes) AND counts[array_position(p_scopes, 'total')] = 0 THEN
        DELETE FROM notice_counts WHERE hour < p_hour - interval '1 hour';
        DELETE FROM notice_dedup WHERE at < p_since - interval '1 hour';
    END IF;
END $$;

CREATE FUNCTION gateway_notice_gate(
    p_key text, p_reference text, p_at timestamptz, p_since timestamptz, p_hour timestamptz,
    p_scopes text[], p_keys text[], p_limits integer[], p_strict boolean,
    OUT duplicate_of text, OUT counts integer[], OUT counted boolean)
LANGUAGE plpgsql AS $$
BEGIN
    counted := false;
    IF p_strict THEN
        SELECT g.duplicate_of, g.counts INTO duplicate_of, counts
            FROM gateway_count_notice(p_key, p_reference, p_at, p_since, p_hour, p_scopes,
                                      p_keys) AS g;
        IF duplicate_of IS NOT NULL OR gateway_limit_reached(counts, p_limits) THEN
            RAISE EXCEPTION 'the notice meets its gate' USING ERRCODE = 'GW001';
        END IF;
        counted := true;
        RETURN;
    END IF;
    -- A block with EXCEPTION is a subtransaction: its writes go if the notice does not pass.
    BEGIN
        SELECT g.duplicate_of, g.counts INTO duplicate_of, counts
            FROM gateway_count_notice(p_key, p_reference, p_at, p_since, p_hour, p_scopes,
                                      p_keys) AS g;
        IF duplicate_of IS NOT NULL OR gateway_limit_reached(counts, p_limits) THEN
            RAISE EXCEPTION 'the notice meets its gate' USING ERRCODE = 'GW002';
        END IF;
        counted := true;
    EXCEPTION WHEN SQLSTATE 'GW002' THEN
        counted := false;
    END;
END $$;

-- policy.decision.exceeded_scope: a scope whose notices before this one reach its limit.
CREATE FUNCTION gateway_limit_reached(p_counts integer[], p_limits integer[])
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(bool_or(t.n >= t.lim), false) FROM unnest(p_counts, p_limits) AS t (n, lim)
$$;
"""

# The step to each version after the first, as DDL. 4: the node whose log holds each chain
# (NULL for a chain anchored before), so that `gateway audit verify` can say whose it is;
# and the recipients' insertion order (SQLite's rowid), numbered in their physical order as
# the column is added, so that a table rewritten later (CLUSTER, pg_repack, VACUUM FULL)
# still lists an envelope's recipients in the order they were given.
_STEPS: dict[int, str] = {
    4: "ALTER TABLE audit_chains ADD COLUMN IF NOT EXISTS node text;"
    " ALTER TABLE message_recipients"
    " ADD COLUMN IF NOT EXISTS seq bigint GENERATED ALWAYS AS IDENTITY"
}


async def schema_version(conn: psycopg.AsyncConnection[Any]) -> int | None:
    """The version the database says its store is at; None when it has no store yet."""
    cursor = await conn.execute("SELECT to_regclass('meta') IS NOT NULL")
    row = await cursor.fetchone()
    if row is None or not row[0]:
        return None
    cursor = await conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    found = await cursor.fetchone()
    return None if found is None else int(found[0])


async def migrate(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Bring the store to SCHEMA_VERSION in one transaction; returns whether anything was
    done (False when another node, or an earlier start, already did it).

    Raises:
        SchemaTooNewError: the store is at a newer version; nothing was changed.
        psycopg.Error: the database refused a statement; nothing was changed.
    """
    async with conn.transaction():
        # Held to COMMIT: a second node waits here, then finds the version it needs.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        found = await schema_version(conn)
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaTooNewError(found)
        if found == SCHEMA_VERSION:
            return False
        for ddl in _script(found):
            await conn.execute(ddl)
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
    return True


def _script(found: int | None) -> list[str]:
    """The DDL from version `found` (None: an empty database) to SCHEMA_VERSION."""
    start = _FIRST_VERSION if found is None else found
    script = [_TABLES, _GATE] if found is None else []
    script += [_STEPS[v] for v in range(start + 1, SCHEMA_VERSION + 1)]
    return script
