"""The one SMTP client every server in bench/compare.py is driven by.

Plain asyncio streams and lock-step commands (no PIPELINING, which aiosmtpd does not offer),
so that the client costs little and the same for each server: a transaction is MAIL, RCPT,
then either RSET (refused at RCPT) or DATA and the message. A load is bounded in count (the
transactions asked for) and in time (`deadline`, after which the sessions stop and the load
counts as failed). A reply the load did not expect (a 4xx, a 421 and a closed connection)
is counted, and the session carries on over a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["Load", "Outcome", "idle_connections", "message", "run_load"]

CLIENT_NAME = "bench-client.example"
_BODY_LINE = b"Please file the attached motion in the matter named above, thank you.\r\n"


def message(size: int) -> tuple[bytes, bytes]:
    """A message of about `size` bytes, split where its unique Message-ID number goes."""
    head = (
        b"From: attorney@lawfirm.example\r\nTo: occ-chicago-filings@occ-chicago.example\r\n"
        b"Subject: Motion to continue\r\nMessage-ID: <"
    )
    tail = b"@bench.example>\r\n\r\n"
    lines = max(1, (size - len(head) - len(tail)) // len(_BODY_LINE))
    return head, tail + _BODY_LINE * lines


@dataclass(frozen=True, slots=True)
class Load:
    """What to send: `transactions` over `sessions` concurrent sessions."""

    port: int
    recipient: str
    transactions: int
    sessions: int
    is_reused: bool  # one connection per session, or one per transaction
    size: int | None  # None: the recipient is refused at RCPT and no DATA is sent
    deadline: float  # seconds
    sender: str = "attorney@lawfirm.example"
    senders: int = 1  # distinct sender addresses, taken in turn


@dataclass(frozen=True, slots=True)
class Outcome:
    completed: int
    unexpected: int
    seconds: float
    first_unexpected: str
    latencies: tuple[float, ...] = ()  # each completed transaction's, in seconds

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


class _Unexpected(Exception):
    pass


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> tuple[int, bytes]:
        """One whole reply (RFC 5321 §4.2.1: continued lines have a hyphen after the code)."""
        while True:
            line = await self.reader.readline()
            if len(line) < 4:
                raise _Unexpected(f"connection closed ({line!r})")
            if line[3:4] != b"-":
                return int(line[:3]), line

    async def command(self, data: bytes, *expected: int) -> None:
        self.writer.write(data)
        code, line = await self.reply()
        if code not in expected:
            raise _Unexpected(line.decode(errors="replace").strip())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def _open(port: int) -> _Session:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    session = _Session(reader, writer)
    code, line = await session.reply()
    if code != 220:
        raise _Unexpected(line.decode(errors="replace").strip())
    await session.command(b"EHLO " + CLIENT_NAME.encode() + b"\r\n", 250)
    return session


class _Driver:
    def __init__(self, load: Load) -> None:
        self.load = load
        self.next = 0
        self.completed = 0
        self.unexpected = 0
        self.first_unexpected = ""
        self.latencies: list[float] = []
        self.head, self.tail = message(load.size or 0)

    def take(self) -> int | None:
        if self.next >= self.load.transactions:
            return None
        self.next += 1
        return self.next

    async def transaction(self, session: _Session, n: int) -> None:
        load = self.load
        local, _, domain = load.sender.partition("@")
        sender = f"{local}{n % load.senders}@{domain}" if load.senders > 1 else load.sender
        await session.command(f"MAIL FROM:<{sender}>\r\n".encode(), 250)
        if load.size is None:
            await session.command(f"RCPT TO:<{load.recipient}>\r\n".encode(), 550)
            await session.command(b"RSET\r\n", 250)
            return
        await session.command(f"RCPT TO:<{load.recipient}>\r\n".encode(), 250)
        await session.command(b"DATA\r\n", 354)
        data = b"".join((self.head, str(n).encode(), b".", str(time.time_ns()).encode(), self.tail))
        # Accepted (Postfix, bare) or refused after DATA (the gateway): both end it.
        await session.command(data + b".\r\n", 250, 550)

    async def session(self) -> None:
        session: _Session | None = None
        while (n := self.take()) is not None:
            try:
                if session is None:
                    session = await _open(self.load.port)
                began = time.perf_counter()
                await self.transaction(session, n)
                self.latencies.append(time.perf_counter() - began)
                self.completed += 1
                if not self.load.is_reused:
                    await session.command(b"QUIT\r\n", 221)
                    await session.close()
                    session = None
            except (_Unexpected, OSError) as exc:
                self.unexpected += 1
                self.first_unexpected = self.first_unexpected or str(exc)
                if session is not None:
                    await session.close()
                    session = None
        if session is not None:
            with contextlib.suppress(_Unexpected, OSError):
                await session.command(b"QUIT\r\n", 221)
            await session.close()


async def run_load(load: Load) -> Outcome:
    """Send the load; the outcome counts what completed and what did not.

    Raises:
        TimeoutError: the load ran past its deadline.
    """
    driver = _Driver(load)
    started = time.perf_counter()
    async with asyncio.timeout(load.deadline):
        await asyncio.gather(*(driver.session() for _ in range(load.sessions)))
    seconds = time.perf_counter() - started
    return Outcome(
        driver.completed,
        driver.unexpected,
        seconds,
        driver.first_unexpected,
        tuple(driver.latencies),
    )


@contextlib.asynccontextmanager
async def idle_connections(port: int, count: int, *, deadline: float) -> AsyncIterator[int]:
    """Hold `count` connections open after EHLO; yields how many opened. Opened 50 at a time
    (a listen backlog is finite), all within `deadline` seconds."""
    sessions: list[_Session] = []
    gate = asyncio.Semaphore(50)

    async def one() -> None:
        async with gate:
            with contextlib.suppress(_Unexpected, OSError):
                sessions.append(await _open(port))

    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(one() for _ in range(count)))
        yield len(sessions)
    finally:
        for session in sessions:
            session.writer.close()
        await asyncio.sleep(0)
