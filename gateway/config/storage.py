"""`[storage]`: where the record lives (the SQLite file, or one PostgreSQL several hosts
share) and how long each part of it is kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from gateway.config.values import _Model

__all__ = ["StorageSettings"]


class StorageSettings(_Model):
    state_dir: Path = Path("state")
    keep_raw: bool = False
    raw_retention_days: int = Field(default=90, ge=1)
    # Days the records (messages, refusals, jobs, attempts) are kept; 0 keeps them forever.
    # Forever by default: they are an agency's records, whose disposal follows its own records
    # schedule, which the gateway cannot know; deleting them early cannot be undone.
    retention_days: int = Field(default=0, ge=0)
    # Days each notice, advisory and bounce is kept as sent (its bytes, Message-ID, SHA-256),
    # counted from when it was sent; 0 keeps them forever. Its own period: what the sender
    # was told may have to be shown long after, or not at all after, the rest of the record.
    notice_retention_days: int = Field(default=0, ge=0)
    # Empty: the SQLite file in state_dir. `postgresql://...` or libpq's `key=value`: one
    # PostgreSQL that several MX hosts share (docs/postgresql.md).
    url: str = Field(default="", repr=False)
    # Only from GATEWAY_STORAGE__PASSWORD(_FILE), never the file; libpq's `password=`.
    password: str | None = Field(default=None, repr=False)

    @property
    def database(self) -> Path:
        return self.state_dir / "gateway.sqlite3"

    @property
    def is_shared(self) -> bool:
        """Whether the store is PostgreSQL (`url` set), not the SQLite file."""
        return bool(self.url)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        url = url.strip()
        is_uri = url.startswith(("postgresql://", "postgres://"))
        if url and not is_uri and ("://" in url or "=" not in url):
            raise ValueError("expected empty (the SQLite file), postgresql://... or key=value")
        return url

    @field_validator("retention_days")
    @classmethod
    def _records_outlive_raw(cls, days: int, info: ValidationInfo) -> int:
        raw_days = info.data.get("raw_retention_days")
        if raw_days is not None and 0 < days < raw_days:
            raise ValueError(
                f"{days} days is shorter than raw_retention_days ({raw_days}):"
                " a raw message goes with its record"
            )
        return days
