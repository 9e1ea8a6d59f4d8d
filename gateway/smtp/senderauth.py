"""Sender authentication: SPF, DKIM and DMARC for the envelope sender of a received message.

A courtesy notice goes only to a sender the gateway can show is who it claims to be; mailing
one to a forged sender would be backscatter. `SenderAuthenticator.check()` asks DNS through
the resolvers in `[dns]` (dnspython) and returns an `AuthResults` value. The policy that turns
the SPF, DKIM and DMARC results into a `Verdict` is the pure `decide_verdict()`
(authresults.py); DMARC's pure parts (`parse_dmarc_record`, `evaluate_dmarc`, `is_aligned`)
are in mail/dmarc.py, apart from its lookups here. SPF (pyspf) and DKIM (dkimpy) run in a
worker thread with their DNS through the event loop's resolver (senderchecks.py).

This module must not send mail, log, write files, reply to SMTP clients or keep state between
checks. The one exception is the public suffix list, read once from the installed package.
It must not let a DNS or message problem escape as an exception: those become
temperror/permerror results.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.rdtypes.ANY.TXT

from gateway.config import DnsSettings
from gateway.dns_lookup.mx import make_resolver
from gateway.errors import TemporaryDnsError
from gateway.mail.dmarc import (
    DMARC_VERSION,
    DmarcPolicy,
    domain_token,
    evaluate_dmarc,
    header_from_domain,
    is_aligned,
    organizational_domain,
    parse_dmarc_record,
)
from gateway.smtp.authresults import AuthResults, Verdict, decide_verdict
from gateway.smtp.senderchecks import (
    SpfIdentity,
    ThreadDns,
    check_spf,
    lookup,
    no_dkim,
    sender_identity,
    verify_dkim,
)

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
        thread_dns = ThreadDns(self._resolver, asyncio.get_running_loop(), deadline)
        identity = sender_identity(mail_from, helo)
        from_domain = domain_token(from_header_domain)
        async with asyncio.TaskGroup() as group:
            spf_task = group.create_task(self._spf(thread_dns, client_ip.split("%")[0], identity))
            dkim_task = group.create_task(
                asyncio.to_thread(verify_dkim, thread_dns, raw) if has_body else no_dkim()
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

    async def _spf(self, thread_dns: ThreadDns, client_ip: str, identity: SpfIdentity) -> str:
        if not identity.domain:
            return "none"  # RFC 7208 §4.3: no valid domain to check
        return await asyncio.to_thread(check_spf, thread_dns, client_ip, identity)

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
        found = await lookup(
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
