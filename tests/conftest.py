"""Shared test parts: settings built from plain values, a settable clock, a real server.

The server fixtures start the real inbound server on 127.0.0.1 port 0 with a real SQLite
store in tmp_path; tests talk to it over loopback sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.config import GatewaySettings
from gateway.notices.context import NoticeContext
from gateway.smtp.receiving import ReceiveSettings
from gateway.smtp.server import Sessions, start_server
from gateway.store.db import RefusalRecord, Store, connect
from gateway.store.outbox import Attempt, Job, find_jobs, job_attempts
from gateway.store.queries import (
    RawCopy,
    StoredDecision,
    StoredMessage,
    list_decisions,
    list_messages,
    list_raw_copies,
    list_refusals,
    read_message,
)

T = TypeVar("T")

# Chicago is UTC-5 in September (CDT): the founding cutoff is 2017-09-12T05:00:00Z.
CUTOFF_UTC = datetime(2017, 9, 12, 5, 0, tzinfo=UTC)
BEFORE_PORTAL = datetime(2017, 9, 1, 15, 0, tzinfo=UTC)
WARN_TIME = datetime(2017, 9, 11, 15, 0, tzinfo=UTC)
AFTER_CUTOFF = datetime(2017, 9, 13, 15, 0, tzinfo=UTC)

RETIRED = "occ-chicago-filings@occ-chicago.example"
OTHER_RETIRED = "eoir-filings@other.example"
SENDER = "paralegal@lawfirm.example"


def office(**overrides: Any) -> dict[str, Any]:
    """The founding office as plain config values."""
    values: dict[str, Any] = {
        "name": "ice-occ-chicago",
        "display_name": "ICE Office of the Chief Counsel, Chicago",
        "short_name": "ICE OCC Chicago",
        "timezone": "America/Chicago",
        "portal_opens": "2017-09-11",
        "retires": "2017-09-12",
        "portal_url": "https://eservice.ice.gov/",
        "registration_url": "https://eserviceregistration.ice.gov/",
        "paper_service": ["By mail to 525 W. Van Buren St., Suite 701, Chicago, IL 60607"],
        "addresses": [RETIRED, "occ-chicago-service@occ-chicago.example"],
        "legacy_host": "legacy.occ-chicago.example:25",
    }
    values.update(overrides)
    return values


def other_office(**overrides: Any) -> dict[str, Any]:
    """A second office with its own cutoff and reply, to mix in one transaction."""
    return office(
        name="other-office",
        short_name="Other Office",
        display_name="Other Office",
        timezone="America/New_York",
        portal_opens=None,
        retires="2016-01-01",
        portal_url="https://portal.other.example/",
        addresses=["@other.example"],
        legacy_host=None,
        **overrides,
    )


def make_settings(
    tmp_path: Path, *, offices: list[dict[str, Any]] | None = None, **sections: dict[str, Any]
) -> GatewaySettings:
    data: dict[str, Any] = {
        "server": {"listen": ["127.0.0.1:0"], "hostname": "mx.test.example"},
        "storage": {"state_dir": str(tmp_path / "state")},
        # Sender checks need DNS; tests that check senders run their own DNS server and
        # turn this on. Without it, only trusted clients (loopback) count as authenticated.
        "sender_auth": {"enabled": False},
        # Composer processes take a second to start; tests compose in a thread unless they
        # test the processes themselves.
        "delivery": {"composer_processes": 0},
        "offices": offices if offices is not None else [office()],
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return GatewaySettings.model_validate(data)


@dataclass
class FakeClock:
    """The gateway's clock, set by the test; `fail` makes it raise to stand in for our bug."""

    now: datetime
    fail: bool = False

    def __call__(self) -> datetime:
        if self.fail:
            raise RuntimeError("clock exploded (test)")
        return self.now


@dataclass
class Gateway:
    settings: GatewaySettings
    store: Store
    clock: FakeClock
    sessions: Sessions
    servers: list[asyncio.Server] = field(default_factory=list)

    @property
    def port(self) -> int:
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def notices(self) -> NoticeContext:
        """What its notices are made from (a renderer's and ensure_key()'s argument)."""
        return NoticeContext.from_settings(self.settings)

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Ask the store's interface, on a connection of its own as an operator's tool would."""
        with contextlib.closing(connect(self.settings.storage.database)) as conn:
            return query(conn)

    def messages(self) -> list[StoredMessage]:
        """Every message received to the end of DATA, in the order they were recorded."""
        return self.read(list_messages)

    def message(self, reference: str) -> StoredMessage | None:
        return self.read(lambda conn: read_message(conn, reference))

    def decisions(self, reference: str | None = None) -> list[StoredDecision]:
        """The recipients' decisions, of one message or of all."""
        return self.read(lambda conn: list_decisions(conn, reference))

    def refusals(self) -> list[RefusalRecord]:
        return self.read(list_refusals)

    def raw_copies(self) -> list[RawCopy]:
        return self.read(list_raw_copies)

    def jobs(
        self, *, reference: str | None = None, kind: str | None = None, state: str | None = None
    ) -> list[Job]:
        """Jobs of every state, oldest first; each argument given narrows them."""
        return self.read(lambda conn: find_jobs(conn, reference=reference, kind=kind, state=state))

    def attempts(self, job_id: int) -> list[Attempt]:
        """A job's delivery attempts, first first."""
        return self.read(lambda conn: job_attempts(conn, job_id))


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start a real gateway: `await start_gateway(clock_at=..., offices=[...], server={...})`."""
    started: list[Gateway] = []

    async def start(
        *, clock_at: datetime = AFTER_CUTOFF, tls_context: Any = None, **settings_args: Any
    ) -> Gateway:
        settings = make_settings(tmp_path, **settings_args)
        store = Store(settings.storage.database)
        await store.open()
        sessions = Sessions(limit=settings.server.max_connections)
        gateway = Gateway(settings, store, FakeClock(clock_at), sessions)
        started.append(gateway)
        gateway.servers = await start_server(
            ReceiveSettings.from_settings(settings),
            store,
            clock=gateway.clock,
            sessions=sessions,
            tls_context=tls_context,
        )
        return gateway

    yield start
    for gateway in started:
        for server in gateway.servers:
            server.close()
        await gateway.sessions.drain(1.0)
        await gateway.store.close()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    """The founding office, after the cutoff, answering reject-after-data."""
    gw: Gateway = await start_gateway()
    return gw
