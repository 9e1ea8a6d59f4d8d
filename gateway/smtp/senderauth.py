"""Sender authentication: SPF, DKIM and DMARC for the envelope sender of a received message.

A courtesy notice goes only to a sender the gateway can show is who it claims to be; mailing
one to a forged sender would be backscatter. `SenderAuthenticator.check()` asks DNS through
the resolvers in `[dns]` (dnspython) and returns an `AuthResults` value. The policy that turns
the SPF, DKIM and DMARC results into a `Verdict` is the pure `decide_verdict()`; DMARC's pure
parts (`parse_dmarc_record`, `evaluate_dmarc`, `is_aligned`) are kept apart from its lookups.

SPF (pyspf) and DKIM (dkimpy) are synchronous libraries, so they run in a worker thread.
Each DNS question they ask goes back to the event loop's dnspython resolver and waits no
longer than the check's deadline. They never use their own DNS code or the system resolver,
and no process-wide hook is installed.

This module must not send mail, log, write files, reply to SMTP clients or keep state between
checks. The one exception is the public suffix list, read once from the installed package.
It must not let a DNS or message problem escape as an exception: those become
temperror/permerror results.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import re
import time
import warnings
from collections.abc import Sequence
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

from gateway.config import DnsSettings
from gateway.dns_lookup.mx import make_resolver
from gateway.errors import TemporaryDnsError
from gateway.mail.dmarc import (
    DISPOSITIONS,
    DMARC_VERSION,
    DOMAIN_TOKEN,
    DmarcPolicy,
    domain_token,
    evaluate_dmarc,
    header_from_domain,
    is_aligned,
    organizational_domain,
    parse_dmarc_record,
)

with warnings.catch_warnings():
    # pyspf 2.0.14 has an invalid escape sequence in a docstring. Python warns about it when
    # it compiles spf.py, which happens wherever no .pyc was written. Under -W error (our
    # pytest setting) that warning would be an ImportError.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    import spf

__all__ = [
    "AuthResults",
    "DmarcPolicy",
    "SenderAuthenticator",
    "Verdict",
    "decide_verdict",
    "evaluate_dmarc",
    "header_from_domain",
    "is_aligned",
    "organizational_domain",
    "parse_dmarc_record",
]

# RFC 7208 §4.6.4 asks for at least 20 seconds for an SPF evaluation. The client waits 10
# minutes for the reply to the end of DATA (RFC 5321 §4.5.3.2.6), so 20 s fits easily.
_DEFAULT_TIMEOUT = 20.0
# RFC 6376 §6.1 lets a verifier limit how many signatures it checks. dkimpy canonicalises
# the body once per signature (about 2 s for 25 MB), so a hostile message with hundreds of
# signatures must not get a check for each. Real mail carries one to three.
_MAX_SIGNATURES = 5
# RFC 8301 §3.2: keys shorter than 1024 bits are never valid.
_MIN_KEY_BITS = 1024
# How long past the deadline a worker thread waits for a query the loop already has running.
_GRACE = 0.5

_SPF_RESULTS = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
)  # RFC 7208 §2.6
_DKIM_SIGNATURE = re.compile(rb"(?im)^dkim-signature[ \t]*:")


class Verdict(enum.StrEnum):
    """What the sender's authentication allows; the table is in `decide_verdict`."""

    PASS = "pass"
    FAIL = "fail"
    TEMPERROR = "temperror"
    NONE = "none"


# ---------------------------------------------------------------------------------------------
# Results and the verdict (pure)


@dataclass(frozen=True, slots=True)
class AuthResults:
    """What SPF, DKIM and DMARC said about one message, and the verdict drawn from them.

    Every domain is a lowercase ASCII domain name, or "" when none (or none valid) was given.
    """

    spf: str  # RFC 7208 §2.6: pass/fail/softfail/neutral/none/temperror/permerror
    spf_domain: str  # the domain checked: the envelope sender's, or HELO for the null sender
    spf_identity: Literal["mailfrom", "helo"]  # which identity spf_domain is (RFC 7208 §2.3-2.4)
    dkim: tuple[tuple[str, str], ...]  # (result, d= domain) per signature, topmost first
    dmarc: str  # RFC 7489 / RFC 8601 §2.7: pass/fail/none/temperror/permerror
    dmarc_domain: str  # the RFC 5322.From domain DMARC was evaluated for
    dmarc_policy: str | None  # p= (or sp=) that applies to that domain, if a record was found
    verdict: Verdict
    reason: str  # short and built from closed sets only, e.g. "dmarc fail (p=reject)"

    def header_value(self, authserv_id: str) -> str:
        """The RFC 8601 Authentication-Results field value for these results.

        Only results from closed sets and valid domain names are written. A value that is not
        a domain name (a hostile d= tag, say) leaves its property out.

        Raises:
            ValueError: `authserv_id` is not a domain name.
        """
        if DOMAIN_TOKEN.fullmatch(authserv_id.lower()) is None:
            raise ValueError(f"{authserv_id!r} is not a domain name")
        spf_property = "smtp.helo" if self.spf_identity == "helo" else "smtp.mailfrom"
        clauses = [authserv_id.lower(), _resinfo("spf", self.spf, spf_property, self.spf_domain)]
        for result, domain in self.dkim or (("none", ""),):
            clauses.append(_resinfo("dkim", result, "header.d", domain))
        # OpenDMARC writes the applied policy as a comment (RFC 8601 §2.3 allows comments).
        policy = f"p={self.dmarc_policy}" if self.dmarc_policy in DISPOSITIONS else ""
        clauses.append(_resinfo("dmarc", self.dmarc, "header.from", self.dmarc_domain, policy))
        return "; ".join(clauses)


def _resinfo(method: str, result: str, ptype_property: str, value: str, comment: str = "") -> str:
    # RFC 8601 §2.2: "method=result (comment) ptype.property=value". The results come from our
    # closed sets; anything else would be a bug, and is written as permerror rather than
    # passed through.
    words = [f"{method}={result if result in _SPF_RESULTS else 'permerror'}"]
    if comment:
        words.append(f"({comment})")
    domain = value.lower()
    if DOMAIN_TOKEN.fullmatch(domain) and len(domain) <= 253:
        words.append(f"{ptype_property}={domain}")
    return " ".join(words)


def decide_verdict(
    spf: str,
    dkim: Sequence[tuple[str, str]],
    dmarc: str,
    *,
    mail_from_domain: str | None,
    dmarc_policy: str | None = None,
) -> tuple[Verdict, str]:
    """PURE: the sender-authentication policy; returns the verdict and a short reason.

    `mail_from_domain` is the envelope sender's domain, or None for the null sender ("<>").
    A DKIM result is *aligned* when its d= has the same organizational domain as
    `mail_from_domain` (relaxed alignment, RFC 7489 §3.1.1); `dmarc` is about the From
    domain. The first row that matches decides:

    | # | condition                                     | verdict   | reason                    |
    |---|-----------------------------------------------|-----------|---------------------------|
    | 1 | null sender                                   | NONE      | null sender               |
    | 2 | dmarc = fail                                  | FAIL      | dmarc fail (p=<policy>)   |
    | 3 | spf or aligned dkim pass, dmarc = temperror   | TEMPERROR | dmarc temperror           |
    | 4 | spf = pass                                    | PASS      | spf pass                  |
    | 5 | aligned dkim pass                             | PASS      | dkim pass aligned         |
    | 6 | spf = temperror                               | TEMPERROR | spf temperror             |
    | 7 | aligned dkim temperror                        | TEMPERROR | dkim temperror            |
    | 8 | spf = fail or softfail                        | FAIL      | spf fail / spf softfail   |
    | 9 | anything else (none, neutral, permerror, ...) | FAIL      | no spf or aligned dkim... |

    Row 9's reason is "no spf or aligned dkim pass".
    Rows 4 and 5 reach PASS only when dmarc is pass, none or permerror (a broken record
    applies no policy, RFC 7489 §6.6.3). Rows 6 and 7 say TEMPERROR only when the temporary
    error could have been the pass that row 4 or 5 needed. `evaluate_dmarc` already gives
    temperror rather than fail when a temporary error hid an aligned pass.
    """
    if mail_from_domain is None:
        return Verdict.NONE, "null sender"
    if dmarc == "fail":
        shown = f" (p={dmarc_policy})" if dmarc_policy in DISPOSITIONS else ""
        return Verdict.FAIL, f"dmarc fail{shown}"
    aligned = [result for result, d in dkim if is_aligned(d, mail_from_domain)]
    if (spf == "pass" or "pass" in aligned) and dmarc == "temperror":
        return Verdict.TEMPERROR, "dmarc temperror"
    if spf == "pass":
        return Verdict.PASS, "spf pass"
    if "pass" in aligned:
        return Verdict.PASS, "dkim pass aligned"
    if spf == "temperror":
        return Verdict.TEMPERROR, "spf temperror"
    if "temperror" in aligned:
        return Verdict.TEMPERROR, "dkim temperror"
    if spf in ("fail", "softfail"):
        return Verdict.FAIL, f"spf {spf}"
    return Verdict.FAIL, "no spf or aligned dkim pass"


# ---------------------------------------------------------------------------------------------
# DNS


async def _lookup(
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


class _ThreadDns:
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
        """Call from a worker thread only. Returns and raises as `_lookup` does."""
        budget = self._deadline - time.monotonic()
        if budget <= 0:
            raise TemporaryDnsError("dns timeout")
        query = _lookup(self._resolver, name, rdtype, budget=budget)
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
class _SpfIdentity:
    scope: Literal["mailfrom", "helo"]
    domain: str  # "" when there is no valid multi-label domain to check
    sender: str  # pyspf's s=: the MAIL FROM address, or "" for the null sender
    helo: str


def _spf_identity(mail_from: str, helo: str | None) -> _SpfIdentity:
    helo_text = (helo or "").strip()
    if mail_from in ("", "<>"):
        # RFC 7208 §2.4: for the null sender, check postmaster@<HELO domain>.
        domain = domain_token(helo_text)
        return _SpfIdentity("helo", domain if "." in domain else "", "", domain)
    local, _, text = mail_from.rpartition("@")
    domain = domain_token(text)
    # RFC 7208 §4.3: a domain that is malformed or not multi-label gives "none" at once.
    domain = domain if "." in domain else ""
    # pyspf splits s= at its first "@"; a quoted local part holding one would mislead it.
    local = local if local and "@" not in local else "postmaster"
    return _SpfIdentity("mailfrom", domain, f"{local}@{domain}", helo_text)


class _SpfQuery(spf.query):  # type: ignore[misc]  # pyspf ships no type information
    """pyspf's RFC 7208 evaluation, with its DNS asked through our resolver.

    pyspf sends every query through `query.dns()`, which calls the module-global DNSLookup
    (dnspython's default resolver). Overriding the method here swaps the transport for this
    query alone and changes nothing process-wide. The override keeps pyspf's per-query cache
    and the void-lookup limit. dnspython follows CNAMEs itself, so pyspf's CNAME handling is
    not needed.
    """

    def __init__(self, thread_dns: _ThreadDns, *, client_ip: str, identity: _SpfIdentity) -> None:
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


def _check_spf(thread_dns: _ThreadDns, client_ip: str, identity: _SpfIdentity) -> str:
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
    return result if result in _SPF_RESULTS else "permerror"


# ---------------------------------------------------------------------------------------------
# DKIM (dkimpy, in a worker thread)


class _KeyFetcher:
    """dkimpy's dnsfunc for one signature: the key record, through our resolver."""

    def __init__(self, thread_dns: _ThreadDns) -> None:
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


async def _no_dkim() -> tuple[tuple[str, str], ...]:
    return ()


def _verify_dkim(thread_dns: _ThreadDns, raw: bytes) -> tuple[tuple[str, str], ...]:
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


def _verify_one(verifier: dkim.DKIM, thread_dns: _ThreadDns, index: int) -> str:
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


# ---------------------------------------------------------------------------------------------
# The authenticator


@dataclass(frozen=True, slots=True)
class _DmarcFound:
    record: str | None  # the one DMARC record that applies, or None when there is none
    is_subdomain: bool  # found at the organizational domain, for a From below it


class SenderAuthenticator:
    """Checks SPF, DKIM and DMARC for received messages through the `[dns]` resolvers.

    One instance serves every session. It holds only the dnspython resolver, which is safe to
    share on one event loop.
    """

    def __init__(self, dns: DnsSettings, *, timeout: float | None = None) -> None:
        """Build the resolver from `dns`. `timeout` is the budget for one check in seconds
        (SenderAuthSettings.timeout); each query is also bounded by `dns.timeout`.

        Raises:
            ConfigError: a nameserver is not an IP address, or none is configured and the
                system has no usable resolver configuration.
        """
        self._resolver = make_resolver(dns)
        self._timeout = _DEFAULT_TIMEOUT if timeout is None else timeout

    async def check(
        self,
        *,
        client_ip: str,
        helo: str | None,
        mail_from: str,
        raw: bytes,
        from_header_domain: str | None,
        has_body: bool = True,
    ) -> AuthResults:
        """Authenticate the envelope sender of `raw`, received from `client_ip`.

        `mail_from` is the reverse-path without angle brackets ("" for the null sender).
        `from_header_domain` is the RFC 5322.From domain (see `header_from_domain`).
        Never raises for DNS or message problems: they become temperror/permerror results.
        Without the body (`has_body` false: only the head of an oversize message was kept)
        DKIM cannot be verified and is left out, so SPF alone can authenticate.
        """
        deadline = time.monotonic() + self._timeout
        thread_dns = _ThreadDns(self._resolver, asyncio.get_running_loop(), deadline)
        identity = _spf_identity(mail_from, helo)
        from_domain = domain_token(from_header_domain)
        async with asyncio.TaskGroup() as group:
            spf_task = group.create_task(self._spf(thread_dns, client_ip.split("%")[0], identity))
            dkim_task = group.create_task(
                asyncio.to_thread(_verify_dkim, thread_dns, raw) if has_body else _no_dkim()
            )
            dmarc_task = group.create_task(self._discover_dmarc(from_domain, deadline))
        spf_result, dkim_results = spf_task.result(), dkim_task.result()
        dmarc, policy = _dmarc_outcome(
            dmarc_task.result(), from_domain, spf_result, identity.domain, dkim_results
        )
        verdict, reason = decide_verdict(
            spf_result,
            dkim_results,
            dmarc,
            mail_from_domain=None if identity.scope == "helo" else identity.domain,
            dmarc_policy=policy,
        )
        return AuthResults(
            spf=spf_result,
            spf_domain=identity.domain,
            spf_identity=identity.scope,
            dkim=dkim_results,
            dmarc=dmarc,
            dmarc_domain=from_domain,
            dmarc_policy=policy,
            verdict=verdict,
            reason=reason,
        )

    async def _spf(self, thread_dns: _ThreadDns, client_ip: str, identity: _SpfIdentity) -> str:
        if not identity.domain:
            return "none"  # RFC 7208 §4.3: no valid domain to check
        return await asyncio.to_thread(_check_spf, thread_dns, client_ip, identity)

    async def _discover_dmarc(self, from_domain: str, deadline: float) -> _DmarcFound | None:
        """RFC 7489 §6.6.3 policy discovery. Returns None when DNS failed temporarily."""
        if not from_domain:
            return _DmarcFound(None, is_subdomain=False)
        try:
            records = await self._dmarc_records(from_domain, deadline)
            if records:
                return _DmarcFound(_single(records), is_subdomain=False)
            organization = organizational_domain(from_domain)
            if organization is None or organization == from_domain:
                return _DmarcFound(None, is_subdomain=False)
            records = await self._dmarc_records(organization, deadline)
            return _DmarcFound(_single(records), is_subdomain=True)
        except TemporaryDnsError:
            return None

    async def _dmarc_records(self, domain: str, deadline: float) -> list[str]:
        found = await _lookup(
            self._resolver, f"_dmarc.{domain}", "TXT", budget=deadline - time.monotonic()
        )
        texts = [
            b"".join(r.strings).decode("utf-8", "replace")
            for r in found
            if isinstance(r, dns.rdtypes.ANY.TXT.TXT)
        ]
        # RFC 7489 §6.6.3 step 3: records that do not start with v=DMARC1 are discarded.
        return [text for text in texts if DMARC_VERSION.match(text)]


def _single(records: Sequence[str]) -> str | None:
    # RFC 7489 §6.6.3: more than one record means no policy (nor a look at the org domain).
    return records[0] if len(records) == 1 else None


def _dmarc_outcome(
    found: _DmarcFound | None,
    from_domain: str,
    spf_result: str,
    spf_domain: str,
    dkim_results: Sequence[tuple[str, str]],
) -> tuple[str, str | None]:
    """The DMARC result and the policy that applies, from what discovery found."""
    if found is None:
        return "temperror", None
    if found.record is None:
        return "none", None
    policy = parse_dmarc_record(found.record, is_subdomain=found.is_subdomain)
    if policy is None:
        return "permerror", None
    result = evaluate_dmarc(
        policy, from_domain=from_domain, spf=spf_result, spf_domain=spf_domain, dkim=dkim_results
    )
    return result, policy.disposition
