"""Listening sockets bound ahead of the event loop, to be shared by several processes.

With `[server] workers` above 1 the supervisor binds `[server] listen` once, here, and hands
the sockets to its children, which accept on them (smtp/server.py `start_server(sockets=)`).
One accept queue per address, held by the supervisor: a child that dies leaves the queued
connections to the others, where SO_REUSEPORT would give each child a queue of its own that
dies with it. This module binds and adopts sockets; it serves nothing.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

from gateway.config import ListenAddress

__all__ = ["BACKLOG", "adopt_listeners", "bind_listeners"]

# asyncio's own default for create_server, so one process or several queue alike.
BACKLOG = 100


def bind_listeners(addresses: Sequence[ListenAddress]) -> list[socket.socket]:
    """Bind and listen on every address, as `loop.create_server` would (each address its
    host resolves to, SO_REUSEADDR, IPv6 sockets IPv6 only); returns the sockets, inheritable.

    Raises:
        OSError: an address cannot be bound or resolved; the message names the setting and
            the address. Sockets already bound are closed first.
    """
    bound: list[socket.socket] = []
    try:
        for address in addresses:
            bound.extend(_bind(address))
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


def adopt_listeners(fds: Sequence[int]) -> list[socket.socket]:
    """The listening sockets a supervisor passed down, by file descriptor.

    Raises:
        OSError: a descriptor is not an open listening socket.
    """
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0:
            raise OSError(f"file descriptor {sock.fileno()} is not a listening socket")
        sock.set_inheritable(False)  # the composer processes must not hold the listener
    return sockets


def _bind(address: ListenAddress) -> list[socket.socket]:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise OSError(exc.errno, f"server.listen {address}: {why}") from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        why = exc.strerror or str(exc)
        raise OSError(exc.errno, f"server.listen {address}: {why}") from exc
    return sockets
