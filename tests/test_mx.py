"""MX lookup: the pure ordering rule with plain values, the resolver against a real DNS server.

The integration tests point dnspython at tests/dnsserver.py on 127.0.0.1, serving ZONE.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from itertools import permutations

import dns.asyncresolver
import dns.nameserver
import dns.resolver
import pytest

from gateway.config import DnsSettings
from gateway.dns_lookup.mx import DnsMxResolver, MailHost, MxResolver, order_exchangers
from gateway.errors import ConfigError, DeliveryDeferred, DeliveryFailed
from tests.dnsserver import DnsServer, Zone

# A DKIM-sized TXT record: longer than one 255-byte string and than a 512-byte UDP answer.
LONG_TXT = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 20

ZONE: Zone = {
    ("lawfirm.example", "MX"): [(20, "mx2.lawfirm.example"), (10, "mx1.lawfirm.example")],
    ("mx1.lawfirm.example", "A"): ["127.0.0.2"],
    ("mx1.lawfirm.example", "AAAA"): ["::1"],
    ("mx2.lawfirm.example", "A"): ["127.0.0.3"],
    ("balanced.example", "MX"): [(10, f"{name}.balanced.example") for name in "abc"],
    ("a.balanced.example", "A"): ["127.0.0.11"],
    ("b.balanced.example", "A"): ["127.0.0.12"],
    ("c.balanced.example", "A"): ["127.0.0.13"],
    ("implicit.example", "A"): ["127.0.0.4"],
    ("nullmx.example", "MX"): [(0, ".")],
    ("mixednull.example", "MX"): [(0, "."), (10, "mx1.lawfirm.example")],
    ("slow.example", "MX"): "timeout",
    ("broken.example", "MX"): "servfail",
    ("refusing.example", "MX"): "refused",
    ("loop.example", "CNAME"): ["loop2.example"],
    ("loop2.example", "CNAME"): ["loop.example"],
    ("dangling.example", "MX"): [(10, "gone.dangling.example"), (20, "mx.elsewhere.example")],
    ("flaky.example", "MX"): [(10, "mx.flaky.example")],
    ("mx.flaky.example", "A"): "servfail",
    ("partial.example", "MX"): [(10, "mx.flaky.example"), (20, "mx2.lawfirm.example")],
    ("loopy.example", "MX"): [
        (5, "localhost"),
        (10, "zero.loopy.example"),
        (20, "mx2.lawfirm.example"),
    ],
    ("zero.loopy.example", "A"): ["0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1"],
    ("zero.loopy.example", "AAAA"): ["::", "::ffff:0:0", "ff02::1"],
    ("onlyloops.example", "MX"): [(5, "localhost"), (10, "zero.loopy.example")],
    ("aliased.example", "MX"): [(10, "mail.aliased.example")],
    ("mail.aliased.example", "CNAME"): ["mx2.lawfirm.example"],
    ("twins.example", "MX"): [(10, "mx2.lawfirm.example"), (20, "mail.aliased.example")],
    ("literal.example", "MX"): [(10, "127.0.0.9"), (20, "mx2.lawfirm.example")],
    ("xn--bcher-kva.example", "MX"): [(10, "mx.xn--bcher-kva.example")],
    ("mx.xn--bcher-kva.example", "A"): ["127.0.0.5"],
    ("spf-only.example", "TXT"): ["v=spf1 -all"],
    ("implicit-flaky.example", "TXT"): ["v=spf1 -all"],
    ("implicit-flaky.example", "A"): "servfail",
    ("_dmarc.lawfirm.example", "TXT"): ["v=DMARC1; p=reject"],
    ("sel._domainkey.lawfirm.example", "TXT"): [LONG_TXT],
}


# ---------------------------------------------------------------------------------------------
# order_exchangers: plain values


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([], []),
        ([(10, "a.example")], ["a.example"]),
        (
            [(20, "b.example"), (10, "a.example"), (30, "c.example")],
            ["a.example", "b.example", "c.example"],
        ),
        ([(65535, "a.example"), (0, "z.example")], ["z.example", "a.example"]),
        # Duplicates collapse onto the most preferred record; case and final dot don't matter.
        ([(10, "a.example"), (20, "b.example"), (30, "A.Example.")], ["a.example", "b.example"]),
        ([(30, "a.example"), (20, "b.example"), (10, "a.example")], ["a.example", "b.example"]),
    ],
)
def test_exchangers_are_tried_in_ascending_preference(
    records: list[tuple[int, str]], expected: list[str]
) -> None:
    assert order_exchangers(records, random.Random(1)) == expected


def test_every_order_of_equal_preferences_appears_over_many_seeds() -> None:
    records = [(10, "a.example"), (10, "b.example"), (10, "c.example"), (5, "first.example")]
    seen = {tuple(order_exchangers(records, random.Random(seed))) for seed in range(200)}
    tails = {order[1:] for order in seen}
    assert {order[0] for order in seen} == {"first.example"}
    assert tails == set(permutations(["a.example", "b.example", "c.example"]))


def test_a_fixed_seed_gives_one_order_whatever_order_the_records_came_in() -> None:
    records = [(10, "a.example"), (10, "b.example"), (10, "c.example"), (20, "d.example")]
    orders = {
        tuple(order_exchangers(list(shuffled), random.Random(42)))
        for shuffled in permutations(records)
    }
    assert len(orders) == 1
    assert orders.pop()[-1] == "d.example"


def test_the_order_for_a_fixed_seed_is_pinned() -> None:
    # A golden value: a change to the shuffle (say, dropping the sort before it) shows here.
    records = [(20, "e.example"), (10, "a.example"), (10, "b.example")]
    records += [(10, "c.example"), (20, "d.example")]
    assert order_exchangers(records, random.Random(7)) == [
        "c.example",
        "a.example",
        "b.example",
        "d.example",
        "e.example",
    ]


def test_duplicates_do_not_weight_the_shuffle() -> None:
    records = [(10, "a.example"), (10, "a.example"), (10, "a.example"), (10, "b.example")]
    firsts = [order_exchangers(records, random.Random(seed))[0] for seed in range(400)]
    assert 150 < firsts.count("a.example") < 250


# ---------------------------------------------------------------------------------------------
# DnsMxResolver against a DNS server on loopback


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer(ZONE)
    async with asyncio.timeout(5):
        await server.start()
    try:
        yield server
    finally:
        async with asyncio.timeout(5):
            await server.stop()


def settings_for(server: DnsServer, *, timeout: float = 1.0) -> DnsSettings:
    return DnsSettings.model_validate(
        {"nameservers": [f"127.0.0.1:{server.port}"], "timeout": timeout}
    )


@pytest.fixture
def resolver(dns_server: DnsServer) -> MxResolver:
    return DnsMxResolver(settings_for(dns_server), rng=random.Random(0))


async def lookup(resolver: MxResolver, domain: str) -> list[MailHost]:
    async with asyncio.timeout(5):
        return await resolver.mail_hosts(domain)


def addresses(hosts: list[MailHost]) -> list[str]:
    return [host.address for host in hosts]


async def test_exchangers_come_in_preference_order_with_ipv4_before_ipv6(
    resolver: MxResolver,
) -> None:
    assert await lookup(resolver, "lawfirm.example") == [
        MailHost("mx1.lawfirm.example", "127.0.0.2", 10),
        MailHost("mx1.lawfirm.example", "::1", 10),
        MailHost("mx2.lawfirm.example", "127.0.0.3", 20),
    ]


async def test_ipv6_can_be_preferred(dns_server: DnsServer) -> None:
    resolver = DnsMxResolver(settings_for(dns_server), prefer_ipv6=True)
    hosts = await lookup(resolver, "LawFirm.Example.")
    assert addresses(hosts) == ["::1", "127.0.0.2", "127.0.0.3"]


async def test_equal_preferences_follow_the_seeded_shuffle(dns_server: DnsServer) -> None:
    records = [(10, f"{n}.balanced.example") for n in "abc"]
    orders = set()
    for seed in range(12):
        resolver = DnsMxResolver(settings_for(dns_server), rng=random.Random(seed))
        names = [host.name for host in await lookup(resolver, "balanced.example")]
        assert names == order_exchangers(records, random.Random(seed))
        orders.add(tuple(names))
    assert len(orders) > 1


async def test_a_domain_without_mx_is_its_own_exchanger(resolver: MxResolver) -> None:
    assert await lookup(resolver, "implicit.example") == [
        MailHost("implicit.example", "127.0.0.4", 0)
    ]


@pytest.mark.parametrize("domain", ["nullmx.example", "mixednull.example"])
async def test_null_mx_fails_permanently(resolver: MxResolver, domain: str) -> None:
    with pytest.raises(DeliveryFailed, match=r"accepts no mail \(null MX, RFC 7505\)"):
        await lookup(resolver, domain)


@pytest.mark.parametrize("domain", ["nowhere.example", "unknown.lawfirm.example"])
async def test_a_nonexistent_domain_fails_permanently(resolver: MxResolver, domain: str) -> None:
    with pytest.raises(DeliveryFailed, match="no such domain") as caught:
        await lookup(resolver, domain)
    assert (caught.value.code, caught.value.host) == (0, "")


async def test_a_dns_timeout_defers(dns_server: DnsServer) -> None:
    resolver = DnsMxResolver(settings_for(dns_server, timeout=0.5))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeliveryDeferred, match="timed out"):
        await lookup(resolver, "slow.example")
    assert 0.4 < loop.time() - started < 2.0


@pytest.mark.parametrize("domain", ["broken.example", "refusing.example", "loop.example"])
async def test_servfail_or_refusal_defers(resolver: MxResolver, domain: str) -> None:
    with pytest.raises(DeliveryDeferred, match="SERVFAIL, refused or down"):
        await lookup(resolver, domain)


async def test_exchangers_that_do_not_exist_fail_permanently(resolver: MxResolver) -> None:
    with pytest.raises(DeliveryFailed, match="no mail exchanger has a usable address"):
        await lookup(resolver, "dangling.example")


async def test_an_exchanger_lookup_that_fails_temporarily_defers(resolver: MxResolver) -> None:
    with pytest.raises(DeliveryDeferred, match="temporary DNS failure"):
        await lookup(resolver, "flaky.example")


async def test_an_unresolvable_exchanger_is_skipped(resolver: MxResolver) -> None:
    hosts = await lookup(resolver, "partial.example")
    assert hosts == [MailHost("mx2.lawfirm.example", "127.0.0.3", 20)]


async def test_localhost_and_unspecified_addresses_are_never_used(resolver: MxResolver) -> None:
    hosts = await lookup(resolver, "loopy.example")
    assert hosts == [MailHost("mx2.lawfirm.example", "127.0.0.3", 20)]


async def test_only_unusable_exchangers_fail_permanently(resolver: MxResolver) -> None:
    with pytest.raises(DeliveryFailed, match="no mail exchanger has a usable address"):
        await lookup(resolver, "onlyloops.example")


async def test_an_exchanger_behind_a_cname_is_followed(resolver: MxResolver) -> None:
    hosts = await lookup(resolver, "aliased.example")
    assert hosts == [MailHost("mail.aliased.example", "127.0.0.3", 10)]


async def test_an_address_is_listed_once_under_its_most_preferred_exchanger(
    resolver: MxResolver,
) -> None:
    hosts = await lookup(resolver, "twins.example")
    assert hosts == [MailHost("mx2.lawfirm.example", "127.0.0.3", 10)]


async def test_an_ip_literal_exchanger_is_looked_up_as_a_name(resolver: MxResolver) -> None:
    hosts = await lookup(resolver, "literal.example")
    assert addresses(hosts) == ["127.0.0.3"]


async def test_an_idna_domain_is_asked_for_as_its_a_label(
    resolver: MxResolver, dns_server: DnsServer
) -> None:
    hosts = await lookup(resolver, "Bücher.example")
    assert hosts == [MailHost("mx.xn--bcher-kva.example", "127.0.0.5", 10)]
    assert ("xn--bcher-kva.example", "MX") in {(q.name, q.rtype) for q in dns_server.queries}


async def test_a_domain_with_neither_mx_nor_address_fails_permanently(
    resolver: MxResolver,
) -> None:
    with pytest.raises(DeliveryFailed, match="no MX records and no usable address"):
        await lookup(resolver, "spf-only.example")


async def test_an_implicit_mx_whose_address_lookup_fails_defers(resolver: MxResolver) -> None:
    with pytest.raises(DeliveryDeferred, match="failed temporarily"):
        await lookup(resolver, "implicit-flaky.example")


@pytest.mark.parametrize("domain", ["", "exa..mple", "x" * 64 + ".example", "a." * 127 + "ex"])
async def test_an_invalid_domain_fails_without_a_query(
    resolver: MxResolver, dns_server: DnsServer, domain: str
) -> None:
    with pytest.raises(DeliveryFailed, match="not a valid domain name"):
        await lookup(resolver, domain)
    assert not dns_server.queries


async def test_no_dns_server_listening_defers() -> None:
    async with asyncio.timeout(5), DnsServer({}) as server:
        settings = settings_for(server, timeout=0.5)
    # The port is closed now: UDP queries get ICMP port unreachable, or nothing at all.
    with pytest.raises(DeliveryDeferred):
        await lookup(DnsMxResolver(settings), "lawfirm.example")


def test_a_nameserver_given_by_name_is_a_config_error() -> None:
    settings = DnsSettings.model_validate({"nameservers": ["dns.example:53"]})
    with pytest.raises(ConfigError, match=r"dns\.nameservers"):
        DnsMxResolver(settings)


# ---------------------------------------------------------------------------------------------
# The test DNS server itself, as the sender checks will use it


def plain_resolver(server: DnsServer) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", server.port)]
    resolver.lifetime = 2.0
    return resolver


async def test_long_txt_records_come_back_whole_over_tcp(dns_server: DnsServer) -> None:
    async with asyncio.timeout(5):
        answer = await plain_resolver(dns_server).resolve("sel._domainkey.lawfirm.example", "TXT")
    strings = [s for rdata in answer for s in rdata.strings]
    assert len(LONG_TXT) > 512
    assert max(len(s) for s in strings) == 255
    assert b"".join(strings).decode() == LONG_TXT
    transports = [q.transport for q in dns_server.queries]
    assert transports == ["udp", "tcp"]


async def test_short_txt_records_come_back_over_udp(dns_server: DnsServer) -> None:
    async with asyncio.timeout(5):
        answer = await plain_resolver(dns_server).resolve("_dmarc.lawfirm.example", "TXT")
    assert [rdata.to_text() for rdata in answer] == ['"v=DMARC1; p=reject"']
    assert [q.transport for q in dns_server.queries] == ["udp"]


async def test_a_name_without_the_asked_type_is_nodata_not_nxdomain(
    dns_server: DnsServer,
) -> None:
    resolver = plain_resolver(dns_server)
    async with asyncio.timeout(5):
        with pytest.raises(dns.resolver.NoAnswer):
            await resolver.resolve("mx2.lawfirm.example", "AAAA")
        # An empty non-terminal exists too (RFC 8020).
        with pytest.raises(dns.resolver.NoAnswer):
            await resolver.resolve("_domainkey.lawfirm.example", "TXT")
        with pytest.raises(dns.resolver.NXDOMAIN):
            await resolver.resolve("nothing.lawfirm.example", "TXT")


def test_the_server_ignores_what_is_not_a_query() -> None:
    server = DnsServer(ZONE)
    assert server.answer(b"\x00garbage", transport="udp") is None


def test_a_zone_with_a_record_the_server_cannot_serve_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot serve"):
        DnsServer({("bad.example", "MX"): ["mx.bad.example"]})
