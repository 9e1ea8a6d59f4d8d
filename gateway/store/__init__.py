"""The state store: the only package that knows the schema (records, outbox, retention)."""
