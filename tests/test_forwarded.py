"""http/forwarded.py: whose address the receipt page counts, behind a trusted proxy or not."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from gateway.http.forwarded import client_address

PROXIES = [ip_network("10.0.0.0/24"), ip_network("fd00::/64")]


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # Not a proxy of ours: its header is anybody's writing, ignored.
        ("198.51.100.9", ["203.0.113.5"], "198.51.100.9"),
        # Our proxy, no header: the proxy is all we know.
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["203.0.113.5"], "203.0.113.5"),
        # A client's own forged entries sit left of the one our proxy appended.
        ("10.0.0.2", ["1.2.3.4, 203.0.113.5"], "203.0.113.5"),
        # Two of our proxies in a row, and the header split over two lines.
        ("10.0.0.2", ["203.0.113.5", "10.0.0.7"], "203.0.113.5"),
        ("10.0.0.2", ["203.0.113.5, 10.0.0.7"], "203.0.113.5"),
        # Nothing but our proxies: the leftmost is the best we know.
        ("10.0.0.2", ["10.0.0.8, 10.0.0.7"], "10.0.0.8"),
        # A hop that is not an address stops the walk at the last one that was.
        ("10.0.0.2", ["203.0.113.5, unknown, 10.0.0.7"], "10.0.0.7"),
        ("10.0.0.2", ["garbage"], "10.0.0.2"),
        # IPv6, bracketed, and IPv4 seen through an IPv6 socket.
        ("fd00::1", ["[2001:db8::5]"], "2001:db8::5"),
        ("::ffff:10.0.0.2", ["203.0.113.5"], "203.0.113.5"),
        ("unknown", ["203.0.113.5"], "unknown"),
    ],
)
def test_the_client_is_the_first_address_right_to_left_past_our_proxies(
    peer: str, headers: list[str], client: str
) -> None:
    assert client_address(peer, headers, PROXIES) == client


def test_without_proxies_configured_the_header_is_never_read() -> None:
    assert client_address("10.0.0.2", ["203.0.113.5"], []) == "10.0.0.2"
