"""The store in PostgreSQL, shared by several MX hosts (issue 12; docs/postgresql.md).

The same records and the same semantics as the SQLite store beside it (gateway/store/), in
PostgreSQL's types: schema.py migrates, store.py writes what a session decides (PgStore),
outbox.py claims and finishes jobs with `FOR UPDATE SKIP LOCKED` and leases, queries.py reads
records back. The frozen values are the SQLite modules' own. Nothing here is wired to the
gateway's callers yet; it needs the `postgres` extra (psycopg 3 and psycopg_pool).
"""
