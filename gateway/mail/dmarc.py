"""DMARC, pure: organizational domains, identifier alignment, policy records and their verdict.

RFC 7489: the organizational domain comes from the public suffix list (the copy that ships
with publicsuffixlist; nothing is fetched), alignment is relaxed or strict, and a policy
record is parsed from its TXT text. No DNS here: senderauth.py looks the records up.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from gateway.mail.addresses import normalize_domain

__all__ = [
    "DISPOSITIONS",
    "DMARC_VERSION",
    "DOMAIN_TOKEN",
    "DmarcPolicy",
    "domain_token",
    "evaluate_dmarc",
    "header_from_domain",
    "is_aligned",
    "organizational_domain",
    "parse_dmarc_record",
]

DISPOSITIONS = frozenset({"none", "quarantine", "reject"})  # RFC 7489 §6.3 p= and sp=
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_TOKEN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# RFC 7489 §6.4: the record begins with "v=DMARC1" (the version is case-sensitive).
DMARC_VERSION = re.compile(r"v[ \t]*=[ \t]*DMARC1[ \t]*(?:;|$)")


@functools.cache
def _suffix_list() -> PublicSuffixList:
    # The list ships inside the publicsuffixlist package and is read once, on first use,
    # never at import. It is not fetched from the network.
    return PublicSuffixList()


def organizational_domain(domain: str) -> str | None:
    """The RFC 7489 §3.2 organizational domain: the public suffix plus one label.

    Returns None for a public suffix itself. Uses the Public Suffix List shipped with
    `publicsuffixlist`; an unknown TLD counts as a public suffix, as the list's "*" rule says.
    """
    found: str | None = _suffix_list().privatesuffix(domain.lower().rstrip("."))
    return found


def is_aligned(first: str, second: str, *, is_strict: bool = False) -> bool:
    """Whether two domains are aligned (RFC 7489 §3.1): the same name, or (relaxed) the same
    organizational domain. An empty domain is never aligned."""
    first, second = first.lower().rstrip("."), second.lower().rstrip(".")
    if not first or not second:
        return False
    if first == second:
        return True
    if is_strict:
        return False
    organization = organizational_domain(first)
    return organization is not None and organization == organizational_domain(second)


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """A DMARC record (RFC 7489 §6.3) as it applies to one From domain."""

    disposition: str  # none/quarantine/reject: p=, or sp= for a subdomain that has one
    is_strict_dkim: bool  # adkim=s
    is_strict_spf: bool  # aspf=s


def parse_dmarc_record(text: str, *, is_subdomain: bool) -> DmarcPolicy | None:
    """PURE: the policy in a DMARC TXT record, or None when the record is unusable.

    `is_subdomain`: the record was found at the organizational domain for a From domain
    below it, so sp= applies if it is present and valid (RFC 7489 §6.6.3 step 5).
    """
    if DMARC_VERSION.match(text) is None:
        return None
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        name, is_tag, value = part.partition("=")
        if is_tag:
            tags.setdefault(name.strip().lower(), value.strip().lower())
    disposition = tags.get("p", "")
    if disposition not in DISPOSITIONS:
        # RFC 7489 §6.6.3 step 6: with a reporting address, act as if p=none; without one the
        # record is unusable.
        if "rua" not in tags:
            return None
        disposition = "none"
    if is_subdomain and tags.get("sp") in DISPOSITIONS:
        disposition = tags["sp"]
    return DmarcPolicy(
        disposition=disposition,
        is_strict_dkim=tags.get("adkim") == "s",
        is_strict_spf=tags.get("aspf") == "s",
    )


def evaluate_dmarc(
    policy: DmarcPolicy,
    *,
    from_domain: str,
    spf: str,
    spf_domain: str,
    dkim: Sequence[tuple[str, str]],
) -> str:
    """PURE: the DMARC result (RFC 7489 §4.2) for `from_domain` under `policy`.

    pass: an SPF pass for a domain aligned with `from_domain`, or a DKIM pass with an
    aligned d=. temperror: neither, but an aligned check failed temporarily and might have
    passed. fail: otherwise. The SPF-authenticated domain is `spf_domain`: the MAIL FROM
    domain, or the HELO domain for the null sender.
    """
    spf_aligned = is_aligned(spf_domain, from_domain, is_strict=policy.is_strict_spf)
    dkim_aligned = [
        r for r, d in dkim if is_aligned(d, from_domain, is_strict=policy.is_strict_dkim)
    ]
    if (spf == "pass" and spf_aligned) or "pass" in dkim_aligned:
        return "pass"
    if (spf == "temperror" and spf_aligned) or "temperror" in dkim_aligned:
        return "temperror"
    return "fail"


def header_from_domain(value: str | None) -> str | None:
    """PURE: the RFC 5322.From domain DMARC is about, or None when there is none or no one.

    RFC 7489 §6.6.1: a From with no address, or with addresses in more than one domain,
    names no single domain to evaluate.
    """
    if not value:
        return None
    domains = {
        domain_token(address.rpartition("@")[2])
        for _, address in getaddresses([value])
        if "@" in address
    }
    domains.discard("")
    return domains.pop() if len(domains) == 1 else None


def domain_token(text: str | None) -> str:
    """`text` as a lowercase A-label domain name, or "" when it is not one."""
    if not text:
        return ""
    try:
        domain = normalize_domain(text)
    except ValueError:
        return ""
    return domain if len(domain) <= 253 and DOMAIN_TOKEN.fullmatch(domain) else ""
