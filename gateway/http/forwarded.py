"""Who asked: the client's address behind a trusted reverse proxy (X-Forwarded-For). Pure.

The receipt page is meant to sit behind the agency's TLS proxy, and its rate limit is per
client: counted by the proxy's own address, every attorney would share one bucket. Only a
proxy in `[lookup] proxy_from` is believed; anyone else could write the header themselves.
Each proxy appends the address it received the request from, so the header is read from the
right: past our own proxies, the first address is the client's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = ["client_address"]

Networks = Sequence[IPv4Network | IPv6Network]


def client_address(peer: str, forwarded_for: Sequence[str], proxies: Networks) -> str:
    """The client's address: `peer` itself unless it is a trusted proxy; then the rightmost
    X-Forwarded-For address (of every such header, in order) that is not one of them.

    An entry that is not an address ends the walk at the last one that is: what comes to its
    left was written by someone we cannot vouch for.
    """
    if not proxies or not _is_proxy(peer, proxies):  # none set (the default): no parsing
        return peer
    client = peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = str(address)
        if not _within(address, proxies):
            break
    return client


def _is_proxy(peer: str, proxies: Networks) -> bool:
    address = _address(peer)
    return address is not None and _within(address, proxies)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:192.0.2.1) counts as that IPv4.
    mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    return mapped or address


def _within(address: IPv4Address | IPv6Address, networks: Networks) -> bool:
    return any(address.version == n.version and address in n for n in networks)
