"""SIGTERM on a real `gateway serve`: idle sessions get 421 at once, transactions in flight
finish within drain_timeout, and no session starts a new one; timed as `docker stop` would."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    SENDER,
    STOP_TIMEOUT,
    serving,
    write_config,
)

DRAIN_S = 6.0
LINE_TIMEOUT = 10.0


class Client:
    """A plain SMTP client on a socket, to stop at any point of a transaction."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        assert (await client.reply()).startswith("220 ")
        assert (await client.command("EHLO client.lawfirm.example")).startswith("250 ")
        return client

    async def reply(self) -> str:
        """The last line of the next reply ("" when the server closed the connection)."""
        async with asyncio.timeout(LINE_TIMEOUT):
            while True:
                line = (await self.reader.readline()).decode()
                if not line or line[3:4] != "-":
                    return line.rstrip("\r\n")

    async def command(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def begin(self) -> None:
        assert (await self.command(f"MAIL FROM:<{SENDER}>")).startswith("250 ")
        assert (await self.command(f"RCPT TO:<{RETIRED}>")).startswith("250 ")

    def close(self) -> None:
        self.writer.close()


HEAD = f"From: {SENDER}\r\nTo: {RETIRED}\r\nSubject: Motion\r\n\r\n"


async def test_sigterm_closes_idle_sessions_at_once_and_lets_transactions_finish(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, drain_timeout=DRAIN_S)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        idle = await Client.connect(served.port)
        between = await Client.connect(served.port)  # one transaction done, none begun
        await between.begin()
        assert (await between.command("DATA")).startswith("354 ")
        assert (await between.command(HEAD + "Body.\r\n.")).startswith("550 5.1.6 ")
        in_transaction = await Client.connect(served.port)
        await in_transaction.begin()
        in_data = await Client.connect(served.port)
        await in_data.begin()
        assert (await in_data.command("DATA")).startswith("354 ")
        in_data.writer.write(HEAD.encode())

        signalled = time.monotonic()
        served.gateway.process.send_signal(signal.SIGTERM)
        idle_reply = await idle.reply()
        idle_after = time.monotonic() - signalled
        between_reply = await between.reply()
        between_after = time.monotonic() - signalled

        await asyncio.sleep(1.0)  # well inside the drain: both transactions are still served
        in_data.writer.write(b"Respondent A123456789.\r\n.\r\n")
        data_reply = await in_data.reply()
        assert (await in_transaction.command("DATA")).startswith("354 ")
        transaction_reply = await in_transaction.command(HEAD + "Body.\r\n.")
        # Answered, so no new transaction: a MAIL now gets 421.
        next_mail = await in_transaction.command(f"MAIL FROM:<{SENDER}>")
        quit_reply = await in_data.command("QUIT")

        async with asyncio.timeout(STOP_TIMEOUT):
            status = await served.gateway.finish()
        stopped_after = time.monotonic() - signalled
        for client in (idle, between, in_transaction, in_data):
            client.close()

    assert idle_reply.startswith("421 4.3.2 ")
    assert between_reply.startswith("421 4.3.2 ")
    assert between_after < 1.5
    assert idle_after < 1.5
    assert data_reply.startswith("550 5.1.6 ")
    assert transaction_reply.startswith("550 5.1.6 ")
    assert next_mail.startswith("421 4.3.2 ")
    assert quit_reply.startswith("221 ")
    assert status == 0, served.gateway.stderr
    (stopped,) = served.gateway.named("gateway.stopped")
    assert stopped["sessions_cut"] == 0
    assert stopped_after < DRAIN_S  # it ended when the last transaction did


async def test_sigterm_with_only_idle_sessions_exits_within_two_seconds(tmp_path: Path) -> None:
    config = write_config(tmp_path, drain_timeout=30)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        clients = [await Client.connect(served.port) for _ in range(3)]
        signalled = time.monotonic()
        served.gateway.process.send_signal(signal.SIGTERM)
        replies = [await c.reply() for c in clients]
        async with asyncio.timeout(STOP_TIMEOUT):
            status = await served.gateway.finish()
        elapsed = time.monotonic() - signalled
        for client in clients:
            client.close()
    assert all(r.startswith("421 4.3.2 ") for r in replies)
    assert status == 0
    assert elapsed < 2.0


async def test_a_transaction_past_drain_timeout_is_cut_with_421(tmp_path: Path) -> None:
    config = write_config(tmp_path, drain_timeout=2)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        stalled = await Client.connect(served.port)
        await stalled.begin()
        signalled = time.monotonic()
        served.gateway.process.send_signal(signal.SIGTERM)
        cut = await stalled.reply()
        cut_after = time.monotonic() - signalled
        async with asyncio.timeout(STOP_TIMEOUT):
            status = await served.gateway.finish()
        stalled.close()
    assert cut.startswith("421 4.3.2 ")
    assert cut_after > 1.5  # not before drain_timeout (2 s) ran out
    assert cut_after < 4.0  # nor long after it
    assert status == 0
    (stopped,) = served.gateway.named("gateway.stopped")
    assert stopped["sessions_cut"] == 1
