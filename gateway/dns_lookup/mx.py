"""MX lookup: which servers to try for a domain, and in what order (RFC 5321 §5.1, RFC 7505).

`order_exchangers` is the pure ordering rule. `DnsMxResolver` asks DNS through the resolvers in
`[dns]` (dnspython) and turns the answers into `MailHost` values, or into `DeliveryFailed`
(permanent) or `DeliveryDeferred` (temporary). The delivery worker depends on the
`MxResolver` protocol, so its tests can use a hand-written fake.

This module must not connect to mail servers, log or keep module-level state: the delivery
worker decides how many hosts to try and logs each attempt. Answers are cached only by the
resolver `make_resolver` builds (for their TTL, `[dns] cache_size`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.ANY.MX
import dns.resolver

from gateway.config import DnsSettings, ListenAddress
from gateway.errors import ConfigError, DeliveryDeferred, DeliveryError, DeliveryFailed
from gateway.mail.addresses import normalize_domain

__all__ = ["DnsMxResolver", "MailHost", "MxResolver", "make_resolver", "order_exchangers"]

# RFC 5321 §5.1 lets a client limit how many exchangers it tries. Ten covers every real
# domain and keeps a hostile MX set from turning one delivery into hundreds of queries.
_MAX_EXCHANGERS = 10
# 0.0.0.0/8 is "this host on this network" (RFC 1122 §3.2.1.3), never a destination.
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True, slots=True)
class MailHost:
    """One server to try: the exchanger's name, one of its addresses, and its preference."""

    name: str
    address: str
    preference: int


class MxResolver(Protocol):
    async def mail_hosts(self, domain: str) -> list[MailHost]:
        """The servers to try for `domain`, in order; raises DeliveryFailed or DeliveryDeferred."""
        ...


def order_exchangers(records: Sequence[tuple[int, str]], rng: random.Random) -> list[str]:
    """PURE: MX (preference, exchange) records -> exchange names in the order to try.

    Ascending preference, random order among equal preferences (RFC 5321 §5.1), each name
    once (at its lowest preference). Names are compared and returned in lowercase without
    the final dot.
    """
    groups: dict[int, list[str]] = {}
    for name, preference in _lowest_preferences(records).items():
        groups.setdefault(preference, []).append(name)
    ordered: list[str] = []
    for preference in sorted(groups):
        # Sorted before shuffling so the order depends only on the record set and the rng,
        # not on the order a server happened to list the records in.
        group = sorted(groups[preference])
        rng.shuffle(group)
        ordered.extend(group)
    return ordered


class DnsMxResolver:
    """Looks up mail hosts in DNS through the configured (or the system's) resolvers.

    Each exchanger's A and AAAA records are asked for together, and all exchangers at
    once, so a lookup takes at most about twice `settings.timeout` (MX, then addresses).
    Within one exchanger IPv4 addresses come first unless `prefer_ipv6`: a gateway without
    IPv6 reverse DNS or routing delivers more reliably over IPv4, and the IPv6 addresses
    remain as fallbacks. Addresses already listed for a more preferred exchanger are not
    repeated.
    """

    def __init__(
        self, settings: DnsSettings, *, rng: random.Random | None = None, prefer_ipv6: bool = False
    ) -> None:
        """Build the dnspython resolver from `settings` (this reads /etc/resolv.conf if needed).

        Raises:
            ConfigError: a nameserver is not an IP address, or none is configured and the
                system has no usable resolver configuration.
        """
        self._resolver = make_resolver(settings)
        # Spreading load over equal-preference exchangers needs no cryptographic randomness.
        self._rng = rng if rng is not None else random.Random()
        self._prefer_ipv6 = prefer_ipv6

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        """The servers to try for `domain`, most preferred first.

        Raises:
            DeliveryFailed: invalid or nonexistent domain, null MX, or no usable address.
            DeliveryDeferred: a DNS timeout or server failure kept the answer from us.
        """
        name = _query_name(domain)
        try:
            answer = await self._resolver.resolve(_absolute(name), dns.rdatatype.MX, search=False)
        except dns.resolver.NoAnswer:
            # RFC 5321 §5.1: no MX records means an implicit MX of preference 0 at the domain.
            hosts = await self._resolve_exchangers([(0, name)])
            return _chosen(name, hosts, implicit=True)
        except dns.exception.DNSException as exc:
            raise _lookup_failure(name, exc) from exc
        records = [
            (rdata.preference, rdata.exchange)
            for rdata in answer
            if isinstance(rdata, dns.rdtypes.ANY.MX.MX)
        ]
        # RFC 7505 §3: a null MX ("." as exchange) says the domain takes no mail and must
        # stand alone. A set that mixes it with other records is broken; we take the stated
        # wish to receive no mail at its word rather than guess which record is the mistake.
        if any(exchange == dns.name.root for _, exchange in records):
            raise DeliveryFailed(f"{name}: domain accepts no mail (null MX, RFC 7505)")
        named = [(p, e.to_text(omit_final_dot=True)) for p, e in records]
        hosts = await self._resolve_exchangers(named)
        return _chosen(name, hosts, implicit=False)

    async def _resolve_exchangers(self, records: Sequence[tuple[int, str]]) -> list[_Exchanger]:
        preferences = _lowest_preferences(records)
        names = [n for n in order_exchangers(records, self._rng) if _is_usable_exchanger(n)]
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._exchanger(n, preferences[n]))
                for n in names[:_MAX_EXCHANGERS]
            ]
        return [task.result() for task in tasks]

    async def _exchanger(self, name: str, preference: int) -> _Exchanger:
        async with asyncio.TaskGroup() as group:
            ipv4 = group.create_task(self._addresses(name, dns.rdatatype.A))
            ipv6 = group.create_task(self._addresses(name, dns.rdatatype.AAAA))
        first, second = (ipv6, ipv4) if self._prefer_ipv6 else (ipv4, ipv6)
        return _Exchanger(name, preference, (first.result(), second.result()))

    async def _addresses(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Addresses:
        try:
            answer = await self._resolver.resolve(_absolute(name), rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return _Addresses()
        except dns.exception.DNSException:
            return _Addresses(is_temporary_failure=True)
        return _Addresses(found=tuple(rdata.to_text() for rdata in answer))


# ---------------------------------------------------------------------------------------------
# Pure parts of the lookup


@dataclass(frozen=True, slots=True)
class _Addresses:
    """What one A or AAAA query gave: addresses, or nothing and whether that may change."""

    found: tuple[str, ...] = ()
    is_temporary_failure: bool = False


@dataclass(frozen=True, slots=True)
class _Exchanger:
    name: str
    preference: int
    # The address families' answers in the order to try them.
    families: tuple[_Addresses, _Addresses]


def _chosen(domain: str, exchangers: Sequence[_Exchanger], *, implicit: bool) -> list[MailHost]:
    """The usable addresses of `exchangers` in order, without repeats.

    Raises:
        DeliveryDeferred: none is usable and some lookup failed temporarily.
        DeliveryFailed: none is usable and no lookup could have gone otherwise.
    """
    hosts: list[MailHost] = []
    seen: set[str] = set()
    for exchanger in exchangers:
        for text in chain.from_iterable(family.found for family in exchanger.families):
            address = _usable_address(text)
            if address is not None and address not in seen:
                seen.add(address)
                hosts.append(MailHost(exchanger.name, address, exchanger.preference))
    if hosts:
        return hosts
    if any(f.is_temporary_failure for e in exchangers for f in e.families):
        problem = (
            "no MX records, and the domain's address lookup failed temporarily"
            if implicit
            else "no mail exchanger's address could be looked up (temporary DNS failure)"
        )
        raise DeliveryDeferred(f"{domain}: {problem}")
    problem = (
        "no MX records and no usable address for the domain itself"
        if implicit
        else "no mail exchanger has a usable address"
    )
    raise DeliveryFailed(f"{domain}: {problem}")


def _lookup_failure(domain: str, exc: dns.exception.DNSException) -> DeliveryError:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return DeliveryFailed(f"{domain}: no such domain")
    if isinstance(exc, dns.resolver.YXDOMAIN):
        return DeliveryFailed(f"{domain}: name too long after DNAME substitution")
    if isinstance(exc, dns.exception.Timeout):
        return DeliveryDeferred(f"{domain}: DNS lookup timed out")
    if isinstance(exc, dns.resolver.NoNameservers):
        return DeliveryDeferred(f"{domain}: no DNS server answered (SERVFAIL, refused or down)")
    # Anything else (a malformed answer, say) may well be gone next time; a retry costs
    # little, while a wrong permanent failure loses the message.
    return DeliveryDeferred(f"{domain}: DNS lookup failed ({type(exc).__name__})")


def _query_name(domain: str) -> str:
    try:
        name = normalize_domain(domain)
        _absolute(name)  # checks what normalize_domain leaves to DNS: the total length
    except (ValueError, dns.exception.DNSException) as exc:
        raise DeliveryFailed(f"{domain!r} is not a valid domain name") from exc
    return name


def _absolute(name: str) -> dns.name.Name:
    # Absolute (rooted), so a resolv.conf search domain is never appended to a mail domain.
    return dns.name.from_text(name, origin=dns.name.root)


def _lowest_preferences(records: Sequence[tuple[int, str]]) -> dict[str, int]:
    best: dict[str, int] = {}
    for preference, exchange in records:
        name = _canonical(exchange)
        best[name] = min(preference, best.get(name, preference))
    return best


def _canonical(name: str) -> str:
    return name.rstrip(".").lower() or "."


def _is_usable_exchanger(name: str) -> bool:
    # RFC 6761 §6.3: "localhost" and names below it are this machine; mail there would loop.
    return name != "localhost" and not name.endswith(".localhost")


def _usable_address(text: str) -> str | None:
    """The address in canonical text form, or None when no mail server can be there."""
    address = ipaddress.ip_address(text)  # dnspython gives A and AAAA data in valid form
    ipv4 = address if isinstance(address, ipaddress.IPv4Address) else address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        return None
    if ipv4 is not None and (ipv4 in _THIS_NETWORK or ipv4 == _BROADCAST):
        return None
    return str(address)


# ---------------------------------------------------------------------------------------------
# Resolver configuration


def make_resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver:
    if settings.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [_nameserver(address) for address in settings.nameservers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()  # reads /etc/resolv.conf
        except dns.exception.DNSException as exc:
            raise ConfigError(
                "dns.nameservers", f"empty, and the system resolver cannot be used: {exc}"
            ) from exc
    # The lifetime bounds each query end to end, across retries and nameservers; it is the
    # timeout the style guide asks for, and its expiry is told apart from SERVFAIL.
    resolver.lifetime = settings.timeout
    if settings.cache_size:
        resolver.cache = dns.resolver.LRUCache(max_size=settings.cache_size)
    return resolver


def _nameserver(address: ListenAddress) -> dns.nameserver.Nameserver:
    # dnspython would accept a host name here and fail on every query instead.
    if not dns.inet.is_address(address.host):
        raise ConfigError("dns.nameservers", f"{address} is not an IP address and port")
    return dns.nameserver.Do53Nameserver(address.host, address.port)
