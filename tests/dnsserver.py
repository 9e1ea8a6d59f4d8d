"""A small DNS server for tests: answers from a zone given as a Python mapping, on loopback.

It stands in for the resolver a test points dnspython at: names in the zone are answered
authoritatively, any other name is NXDOMAIN, and a name that exists without records of the
asked type is NOERROR with an empty answer (NODATA). UDP and TCP share one OS-assigned port,
so answers too long for UDP are truncated and fetched again over TCP, as RFC 7766 requires.

It must not recurse, listen anywhere but loopback, or outlive `stop()` / its `async with`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, cast

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord

__all__ = ["Behaviour", "DnsServer", "Query", "RecordData", "Zone"]

# What a zone entry can hold instead of records: never answer, answer SERVFAIL, or REFUSED.
Behaviour = Literal["timeout", "servfail", "refused"]
# One record's data: an address or a name (A, AAAA, CNAME), (preference, exchange) for MX, or
# for TXT one string (split into 255-byte strings, RFC 1035 §3.3.14) or a tuple of strings.
RecordData = str | tuple[int, str] | tuple[str, ...]
Zone = Mapping[tuple[str, str], Sequence[RecordData] | Behaviour]

_BEHAVIOURS: dict[str, Behaviour] = {
    "timeout": "timeout",
    "servfail": "servfail",
    "refused": "refused",
}
_TTL = 60
# RFC 1035 §4.2.1: 512 bytes over UDP unless the query's EDNS OPT record offers more.
_UDP_LIMIT = 512
_EDNS_LIMIT = 4096
_TCP_LIMIT = 65535
_MAX_CNAME_CHAIN = 8
_MAX_TCP_CONNECTIONS = 16
_TCP_IDLE_SECONDS = 5.0
_BIND_ATTEMPTS = 5
_QUERY_LOG_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Query:
    """One question the server received, for tests that check how a client asked."""

    name: str
    rtype: str
    transport: Literal["udp", "tcp"]


class DnsServer:
    """Serves `zone` on 127.0.0.1 (UDP and TCP, one port) from `start()` until `stop()`."""

    def __init__(self, zone: Zone, *, host: str = "127.0.0.1") -> None:
        self._host = host
        self._records: dict[tuple[str, str], list[Any]] = {}
        self._behaviours: dict[tuple[str, str], Behaviour] = {}
        for (name, rtype), entry in zone.items():
            key = (_key(name), rtype.upper())
            if isinstance(entry, str):
                self._behaviours[key] = _behaviour(entry)
            else:
                self._records[key] = [_record(key[0], key[1], data) for data in entry]
        self._names = frozenset(
            _with_ancestors(name for name, _ in (*self._records, *self._behaviours))
        )
        self.queries: deque[Query] = deque(maxlen=_QUERY_LOG_SIZE)
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_closed: asyncio.Future[None] | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (UDP and TCP); only valid between start() and stop()."""
        if not self._port:
            raise RuntimeError("the DNS server is not running")
        return self._port

    async def start(self) -> int:
        """Bind UDP on an OS-assigned port, then TCP on the same port; return the port.

        Raises:
            OSError: no port was free for both transports after a few attempts.
        """
        for attempt in range(_BIND_ATTEMPTS):
            port = await self._bind_udp()
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self._host, port)
            except OSError:
                # Another process holds the TCP side of the port UDP got; pick another.
                await self._close_udp()
                if attempt == _BIND_ATTEMPTS - 1:
                    raise
                continue
            self._port = port
            break
        return self._port

    async def stop(self) -> None:
        """Stop listening, end open TCP connections and wait until every socket is closed."""
        if self._tcp is not None:
            self._tcp.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
            self._tcp = None
        await self._close_udp()
        self._port = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def answer(self, wire: bytes, *, transport: Literal["udp", "tcp"]) -> bytes | None:
        """The response to one query message, or None to stay silent (malformed, "timeout")."""
        try:
            query = DNSRecord.parse(wire)
        except DNSError:
            return None
        if query.header.qr or len(query.questions) != 1:
            return None
        reply = self._reply(query, transport)
        if reply is None:
            return None
        packed: bytes = reply.pack()
        if len(packed) > _size_limit(query, transport):
            packed = _truncated(query).pack()
        return packed

    def _reply(self, query: Any, transport: Literal["udp", "tcp"]) -> Any | None:
        name = _key(str(query.q.qname))
        rtype = str(QTYPE.get(query.q.qtype, query.q.qtype))
        self.queries.append(Query(name, rtype, transport))
        reply = query.reply(ra=1, aa=1)
        for _ in range(_MAX_CNAME_CHAIN):
            behaviour = self._behaviours.get((name, rtype))
            if behaviour == "timeout":
                return None
            if behaviour is not None:
                return _failure(query, RCODE.SERVFAIL if behaviour == "servfail" else RCODE.REFUSED)
            alias = self._records.get((name, "CNAME"))
            if alias and rtype != "CNAME":
                # RFC 1034 §4.3.2: give the alias and go on with its target.
                reply.add_answer(*alias)
                name = _key(str(alias[0].rdata.label))
                continue
            reply.add_answer(*self._records.get((name, rtype), []))
            if name not in self._names:
                # RFC 6604 §2: after a CNAME chain the rcode is about the last name.
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        return _failure(query, RCODE.SERVFAIL)  # an alias loop

    async def _bind_udp(self) -> int:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self, closed), local_addr=(self._host, 0)
        )
        self._udp, self._udp_closed = transport, closed
        return int(transport.get_extra_info("sockname")[1])

    async def _close_udp(self) -> None:
        if self._udp is None or self._udp_closed is None:
            return
        self._udp.close()
        # close() releases the socket on a later loop turn; wait for it so no ResourceWarning.
        await self._udp_closed
        self._udp = self._udp_closed = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        is_admitted = task is not None and len(self._connections) < _MAX_TCP_CONNECTIONS
        if task is not None and is_admitted:
            self._connections.add(task)
        try:
            if is_admitted:
                await self._answer_stream(reader, writer)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client went away or idled out; either ends the connection
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # RFC 1035 §4.2.2: each message is preceded by its two-byte length; a client may send
        # several on one connection (RFC 7766 §6.2.1).
        while True:
            async with asyncio.timeout(_TCP_IDLE_SECONDS):
                size = int.from_bytes(await reader.readexactly(2), "big")
                wire = await reader.readexactly(size)
            response = self.answer(wire, transport="tcp")
            if response is not None:
                writer.write(len(response).to_bytes(2, "big") + response)
                await writer.drain()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, closed: asyncio.Future[None]) -> None:
        self._server = server
        self._closed = closed
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport, so no isinstance.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        response = self._server.answer(data, transport="udp")
        if response is not None and self._transport is not None:
            self._transport.sendto(response, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _with_ancestors(names: Iterable[str]) -> set[str]:
    # A name with records below it exists even with none of its own (an empty non-terminal,
    # RFC 8020): it is NODATA, not NXDOMAIN.
    found: set[str] = set()
    for name in names:
        labels = name.split(".")
        found.update(".".join(labels[i:]) for i in range(len(labels)))
    return found


def _behaviour(text: str) -> Behaviour:
    if text not in _BEHAVIOURS:
        raise ValueError(f"unknown behaviour {text!r}; use one of {sorted(_BEHAVIOURS)}")
    return _BEHAVIOURS[text]


def _record(name: str, rtype: str, data: RecordData) -> Any:
    rdata = _rdata(rtype, data)
    return RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=_TTL)


def _rdata(rtype: str, data: RecordData) -> Any:
    if rtype == "MX" and isinstance(data, tuple) and isinstance(data[0], int):
        preference, exchange = data
        return MX(str(exchange), preference)
    if rtype == "TXT":
        return TXT(list(data) if isinstance(data, tuple) else _chunks(data))
    if isinstance(data, str) and rtype in ("A", "AAAA", "CNAME"):
        return {"A": A, "AAAA": AAAA, "CNAME": CNAME}[rtype](data)
    raise ValueError(f"cannot serve {data!r} as a {rtype} record")


def _chunks(text: RecordData) -> list[bytes]:
    if not isinstance(text, str):
        raise ValueError(f"a TXT record is a string or a tuple of strings, not {text!r}")
    # RFC 1035 §3.3.14: a TXT record is character-strings of at most 255 bytes each;
    # long SPF and DKIM records are split and readers join them (RFC 7208 §3.3).
    raw = text.encode("utf-8")
    return [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]


def _size_limit(query: Any, transport: Literal["udp", "tcp"]) -> int:
    if transport == "tcp":
        return _TCP_LIMIT
    offered = [int(rr.rclass) for rr in query.ar if rr.rtype == QTYPE.OPT]
    return min(max([_UDP_LIMIT, *offered]), _EDNS_LIMIT)


def _truncated(query: Any) -> Any:
    # Keep the question so the client matches the reply to its query; TC asks for TCP.
    reply = query.reply(ra=1, aa=1)
    reply.header.tc = 1
    return reply


def _failure(query: Any, rcode: int) -> Any:
    reply = query.reply(ra=1, aa=1)
    reply.header.rcode = rcode
    return reply
