"""SPF (pyspf) and DKIM (dkimpy) checks in a worker thread, their DNS through the event loop.

Both libraries are synchronous, so they run in a worker thread. Each DNS question they ask
goes back to the event loop's dnspython resolver (`ThreadDns`) and waits no longer than the
check's deadline. They never use their own DNS code or the system resolver, and no
process-wide hook is installed. A temporary DNS failure is TemporaryDnsError; everything else
becomes a result from RFC 7208's or RFC 6376's closed sets.

This module must not log, write files or keep state between checks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import dkim
import dkim.util
import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver

from gateway.errors import TemporaryDnsError
from gateway.mail.dmarc import (
    domain_token,
)

with warnings.catch_warnings():
    # pyspf 2.0.14 has an invalid escape sequence in a docstring. Python warns about it when
    # it compiles spf.py, which happens wherever no .pyc was written. Under -W error (our
    # pytest setting) that warning would be an ImportError.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    import spf

from gateway.smtp.authresults import SPF_RESULTS

__all__ = [
    "SpfIdentity",
    "ThreadDns",
    "check_spf",
    "lookup",
    "no_dkim",
    "sender_identity",
    "verify_dkim",
]

# RFC 6376 §6.1 lets a verifier limit how many signatures it checks. dkimpy canonicalises
# the body once per signature (about 2 s for 25 MB), so a hostile message with hundreds of
# signatures must not get a check for each. Real mail carries one to three.
_MAX_SIGNATURES = 5
# RFC 8301 §3.2: keys shorter than 1024 bits are never valid.
_MIN_KEY_BITS = 1024
# How long past the deadline a worker thread waits for a query the loop already has running.
_GRACE = 0.5

_DKIM_SIGNATURE = re.compile(rb"(?im)^dkim-signature[ \t]*:")


# ---------------------------------------------------------------------------------------------
# DNS


async def lookup(
    resolver: dns.asyncresolver.Resolver, name: str, rdtype: str, *, budget: float
) -> list[dns.rdata.Rdata]:
    """The records of `rdtype` at `name`. Returns [] for NXDOMAIN, NODATA or an invalid name.

    Raises:
        TemporaryDnsError: timeout, SERVFAIL, REFUSED, no server or the budget is spent.
    """
    if budget <= 0:
        raise TemporaryDnsError("dns timeout")
    try:
        # Absolute, so that no resolv.conf search domain is ever appended.
        qname = dns.name.from_text(name, origin=dns.name.root)
    except (dns.exception.DNSException, ValueError):
        return []  # RFC 7208 §4.3, RFC 6376 §6.1.2: a malformed name has no records
    try:
        answer = await resolver.resolve(
            qname,
            rdtype,
            search=False,
            raise_on_no_answer=False,
            lifetime=min(budget, resolver.lifetime),
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
        return []
    except dns.exception.Timeout as exc:
        raise TemporaryDnsError("dns timeout") from exc
    except dns.exception.DNSException as exc:
        # SERVFAIL or REFUSED from every server, or a malformed answer; as dns_lookup/mx.py does,
        # prefer a retry to a wrong permanent answer.
        raise TemporaryDnsError(f"dns {type(exc).__name__}") from exc
    return [] if answer.rrset is None else list(answer.rrset)


class ThreadDns:
    """DNS for the library code that runs in a worker thread.

    Each query runs on the event loop's resolver. The thread waits for the answer no longer
    than the check's deadline, so a thread never outlives the check by more than `_GRACE`
    plus the CPU time of the work it is doing.
    """

    def __init__(
        self, resolver: dns.asyncresolver.Resolver, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> None:
        self._resolver = resolver
        self._loop = loop
        self._deadline = deadline

    def is_expired(self) -> bool:
        return time.monotonic() >= self._deadline

    def resolve(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """Call from a worker thread only. Returns and raises as `lookup` does."""
        budget = self._deadline - time.monotonic()
        if budget <= 0:
            raise TemporaryDnsError("dns timeout")
        query = lookup(self._resolver, name, rdtype, budget=budget)
        try:
            future = asyncio.run_coroutine_threadsafe(query, self._loop)
        except RuntimeError as exc:  # the loop is closed: the check was abandoned
            query.close()
            raise TemporaryDnsError("event loop closed") from exc
        try:
            return future.result(timeout=max(budget, 0) + _GRACE)
        except (TimeoutError, concurrent.futures.CancelledError) as exc:
            future.cancel()
            raise TemporaryDnsError("dns timeout") from exc


# ---------------------------------------------------------------------------------------------
# SPF (pyspf, in a worker thread)


@dataclass(frozen=True, slots=True)
class SpfIdentity:
    scope: Literal["mailfrom", "helo"]
    domain: str  # "" when there is no valid multi-label domain to check
    sender: str  # pyspf's s=: the MAIL FROM address, or "" for the null sender
    helo: str


def sender_identity(mail_from: str, helo: str | None) -> SpfIdentity:
    helo_text = (helo or "").strip()
    if mail_from in ("", "<>"):
        # RFC 7208 §2.4: for the null sender, check postmaster@<HELO domain>.
        domain = domain_token(helo_text)
        return SpfIdentity("helo", domain if "." in domain else "", "", domain)
    local, _, text = mail_from.rpartition("@")
    domain = domain_token(text)
    # RFC 7208 §4.3: a domain that is malformed or not multi-label gives "none" at once.
    domain = domain if "." in domain else ""
    # pyspf splits s= at its first "@"; a quoted local part holding one would mislead it.
    local = local if local and "@" not in local else "postmaster"
    return SpfIdentity("mailfrom", domain, f"{local}@{domain}", helo_text)


class _SpfQuery(spf.query):  # type: ignore[misc]  # pyspf ships no type information
    """pyspf's RFC 7208 evaluation, with its DNS asked through our resolver.

    pyspf sends every query through `query.dns()`, which calls the module-global DNSLookup
    (dnspython's default resolver). Overriding the method here swaps the transport for this
    query alone and changes nothing process-wide. The override keeps pyspf's per-query cache
    and the void-lookup limit. dnspython follows CNAMEs itself, so pyspf's CNAME handling is
    not needed.
    """

    def __init__(self, thread_dns: ThreadDns, *, client_ip: str, identity: SpfIdentity) -> None:
        super().__init__(i=client_ip, s=identity.sender, h=identity.helo, strict=True)
        self._dns = thread_dns

    def dns(
        self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False
    ) -> list[object]:
        key = (str(name).rstrip(".").lower(), qtype)
        if key not in self.cache:
            try:
                records = self._dns.resolve(*key)
            except TemporaryDnsError as exc:
                raise spf.TempError(str(exc)) from exc
            self.cache[key] = [v for rdata in records if (v := _spf_value(rdata)) is not None]
        result: list[object] = self.cache[key]
        if not result and not ignore_void:
            # RFC 7208 §4.6.4: more than two lookups that find nothing is a permerror.
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def _spf_value(rdata: dns.rdata.Rdata) -> object:
    """A record in the form pyspf's own dnspython lookup gives it, or None if not used."""
    if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return rdata.strings  # the character-strings as bytes; pyspf joins them (§3.3)
    if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return rdata.address
    if isinstance(rdata, dns.rdtypes.ANY.MX.MX):
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
    if isinstance(rdata, dns.rdtypes.ANY.PTR.PTR):
        return rdata.target.to_text(omit_final_dot=True)
    return None


def check_spf(thread_dns: ThreadDns, client_ip: str, identity: SpfIdentity) -> str:
    """Runs in a worker thread: check_host() (RFC 7208 §4) for the identity."""
    try:
        query = _SpfQuery(thread_dns, client_ip=client_ip, identity=identity)
        result = str(query.check()[0])
    except spf.TempError:
        return "temperror"
    except (spf.PermError, spf.AmbiguityWarning, ValueError, LookupError):
        # The constructor raises PermError for an unusable client address. ValueError and
        # LookupError are a guard: if a hostile record trips pyspf's parser, that is the
        # record's fault, and the result is a permerror, not a 451 from our handler.
        return "permerror"
    return result if result in SPF_RESULTS else "permerror"


# ---------------------------------------------------------------------------------------------
# DKIM (dkimpy, in a worker thread)


class _KeyFetcher:
    """dkimpy's dnsfunc for one signature: the key record, through our resolver."""

    def __init__(self, thread_dns: ThreadDns) -> None:
        self._dns = thread_dns
        self.name = b""
        self.record: bytes | None = None

    def __call__(self, name: bytes, timeout: float = 5.0) -> bytes | None:
        # dkimpy's timeout is ignored: the check's deadline and [dns] timeout bound the query.
        self.name = name
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            return None
        texts = [
            r for r in self._dns.resolve(text, "TXT") if isinstance(r, dns.rdtypes.ANY.TXT.TXT)
        ]
        # RFC 6376 §3.6.2.2: the strings of one TXT record are joined. With several records,
        # dkimpy's own lookup uses the first, and so do we.
        self.record = b"".join(texts[0].strings) if texts else None
        return self.record

    def is_key_usable(self) -> bool:
        if self.record is None:
            return False
        try:
            dkim.evaluate_pk(self.name, self.record)
        except (dkim.DKIMException, ValueError, LookupError, TypeError):
            return False
        return True


async def no_dkim() -> tuple[tuple[str, str], ...]:
    return ()


def verify_dkim(thread_dns: ThreadDns, raw: bytes) -> tuple[tuple[str, str], ...]:
    """Runs in a worker thread: (result, d=) for each DKIM-Signature, topmost first."""
    try:
        verifier = dkim.DKIM(raw, minkey=_MIN_KEY_BITS)
    except dkim.DKIMException:  # the header block does not parse
        return (("permerror", ""),) if _DKIM_SIGNATURE.search(raw) else ()
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results: list[tuple[str, str]] = []
    for index, value in enumerate(signatures[:_MAX_SIGNATURES]):
        is_expired = thread_dns.is_expired()
        result = "temperror" if is_expired else _verify_one(verifier, thread_dns, index)
        results.append((result, _signing_domain(value)))
    return tuple(results)


def _verify_one(verifier: dkim.DKIM, thread_dns: ThreadDns, index: int) -> str:
    keys = _KeyFetcher(thread_dns)
    try:
        is_valid = bool(verifier.verify(idx=index, dnsfunc=keys))
    except TemporaryDnsError:
        return "temperror"
    except dkim.ValidationError:  # body hash mismatch, expired, a required tag missing
        return "fail"
    except (dkim.DKIMException, ValueError, LookupError, TypeError):
        # Malformed signature or key. dkimpy lets base64 and tag-parsing errors through.
        return "permerror"
    if is_valid:
        return "pass"
    # dkimpy returns False both for a bad signature and for a missing or unusable key. RFC
    # 6376 §6.1.2 calls the second a permanent error, not a failure.
    return "fail" if keys.is_key_usable() else "permerror"


def _signing_domain(header_value: bytes) -> str:
    try:
        tags = dkim.util.parse_tag_value(header_value)
        return domain_token(tags.get(b"d", b"").decode("ascii"))
    except (dkim.util.InvalidTagValueList, UnicodeDecodeError):
        return ""
