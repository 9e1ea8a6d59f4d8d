"""A deliberately plain SMTP client over a loopback socket, for tests that need every byte.

aiosmtplib and smtplib are used where a normal client is wanted; this one lets a test
pipeline, send malformed commands and read every reply line exactly as the server wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType

__all__ = ["RawClient", "Reply", "message", "reference_of", "transaction"]


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def last(self) -> str:
        return f"{self.code} {self.lines[-1]}"


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", *, source: str | None = None
    ) -> RawClient:
        """Connect; `source` picks the client's own address (e.g. 127.0.0.2, not trusted)."""
        local = (source, 0) if source else None
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        return cls(reader, writer)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def reply(self, wait: float = 5.0) -> Reply:
        lines: list[str] = []
        async with asyncio.timeout(wait):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError(f"connection closed after {lines!r}")
                line = raw.decode("utf-8").rstrip("\r\n")
                lines.append(line[4:])
                if line[3:4] != "-":
                    return Reply(int(line[:3]), tuple(lines))

    async def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode("utf-8")
        self.writer.write(data + b"\r\n")
        await self.writer.drain()

    async def cmd(self, line: str | bytes) -> Reply:
        await self.send(line)
        return await self.reply()

    async def data(self, content: bytes) -> Reply:
        """DATA with dot-stuffing; returns the reply after the final dot."""
        start = await self.cmd("DATA")
        assert start.code == 354, start
        stuffed = b"\r\n".join(
            b"." + line if line.startswith(b".") else line
            for line in content.replace(b"\r\n", b"\n").split(b"\n")
        )
        self.writer.write(stuffed.rstrip(b"\r\n") + b"\r\n.\r\n")
        await self.writer.drain()
        return await self.reply()


def message(
    *,
    sender: str = "Pat Paralegal <paralegal@lawfirm.example>",
    to: str = "occ-chicago-filings@occ-chicago.example",
    subject: str = "Motion to continue",
    body: str = "Please find attached.",
    date: str = "Wed, 13 Sep 2017 10:00:00 -0500",
    attachment: tuple[str, bytes] | None = None,
    message_id: str = "<filing-1@lawfirm.example>",
    **headers: str,
) -> bytes:
    """A realistic filing e-mail as bytes."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    if attachment is not None:
        name, content = attachment
        msg.add_attachment(content, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()


SENDER = "paralegal@lawfirm.example"
REFERENCE = re.compile(r"\(ref (\d{8}-[0-9A-Z]{13})\)")


async def transaction(
    port: int,
    rcpts: list[str],
    content: bytes | None = None,
    sender: str = SENDER,
    *,
    source: str | None = None,
) -> tuple[list[Reply], Reply | None]:
    """One MAIL/RCPT.../DATA exchange; DATA only if a recipient was accepted."""
    async with await RawClient.connect(port, source=source) as client:
        await client.reply()
        await client.cmd("EHLO client.lawfirm.example")
        assert (await client.cmd(f"MAIL FROM:<{sender}>")).code == 250
        replies = [await client.cmd(f"RCPT TO:<{r}>") for r in rcpts]
        final = None
        if any(r.code == 250 for r in replies):
            final = await client.data(content or message())
        await client.cmd("QUIT")
    return replies, final


def reference_of(reply: Reply) -> str:
    """The gateway reference quoted in a reply."""
    match = REFERENCE.search(reply.text)
    assert match, reply
    return match.group(1)
