"""`gateway migrate`: bring the store (SQLite file or PostgreSQL) to this code's schema.

What `serve` does at start anyway, as a step an operator can run and read before an upgrade:
it says from which version to which, or that there was nothing to do, and refuses, touching
nothing, a store that a newer gateway has used.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from gateway.config import GatewaySettings
from gateway.errors import StoreError
from gateway.store.backend import StoreLocation, migrate_store
from gateway.store.schema import SCHEMA_VERSION

__all__ = ["run_migrate"]


def run_migrate(settings: GatewaySettings, *, out: TextIO, err: TextIO) -> int:
    """Migrate the configured store; returns the exit status (1: it could not be)."""
    location = StoreLocation.from_settings(settings)
    try:
        before = asyncio.run(migrate_store(location))
    except StoreError as exc:
        err.write(f"gateway: cannot migrate: {exc}\n")
        return 1
    where = location.describe()
    if before == SCHEMA_VERSION:
        out.write(f"{where}: already at schema version {SCHEMA_VERSION}; nothing to do\n")
    elif before is None:
        out.write(f"{where}: new store created at schema version {SCHEMA_VERSION}\n")
    else:
        out.write(f"{where}: migrated from schema version {before} to {SCHEMA_VERSION}\n")
    return 0
