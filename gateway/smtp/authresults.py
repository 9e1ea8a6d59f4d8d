"""Sender authentication's results and the verdict drawn from them. Pure: no DNS, no I/O.

`decide_verdict()` turns the SPF, DKIM and DMARC results into a `Verdict`; `AuthResults`
carries them and writes the RFC 8601 Authentication-Results value. The checks that produce
the results are in senderchecks.py (SPF, DKIM) and senderauth.py (DMARC, the whole check).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.mail.dmarc import (
    DISPOSITIONS,
    DOMAIN_TOKEN,
    is_aligned,
)

__all__ = ["SPF_RESULTS", "AuthResults", "Verdict", "decide_verdict"]

SPF_RESULTS = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
)  # RFC 7208 §2.6


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
    words = [f"{method}={result if result in SPF_RESULTS else 'permerror'}"]
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
