"""The console's queries and links, pure: the filters a query asks for, the page keys, hrefs.

A query's filter fields are `gateway audit`'s options under the same names, read into the
same AuditRequest (ops/auditrequest.py turns that into store filters), so that a page and the
command line cannot differ in what they find. Nothing here reads the store or answers HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

from gateway.ops.auditrequest import AuditRequest
from gateway.store.browse import Key

__all__ = ["FILTER_FIELDS", "audit_request", "filter_query", "href", "parse_key", "render_key"]

# The query fields that filter, in the order the form shows them: audit's option names.
FILTER_FIELDS = (
    "since",
    "until",
    "sender",
    "sender_domain",
    "address",
    "office",
    "decision",
    "notice",
    "tz",
)
_REFERENCE = re.compile(r"[0-9A-Za-z-]{1,40}")
_SEPARATOR = "~"


def audit_request(query: Mapping[str, str], *, action: str) -> AuditRequest:
    """The audit request the query's filter fields make; blank fields are left out."""
    given = filter_query(query)
    return AuditRequest(
        action=action,
        tz=given.get("tz", "UTC"),
        since=given.get("since"),
        until=given.get("until"),
        sender=given.get("sender"),
        sender_domain=given.get("sender_domain"),
        address=given.get("address"),
        office=given.get("office"),
        decision=given.get("decision"),
        notice=given.get("notice"),
    )


def filter_query(query: Mapping[str, str]) -> dict[str, str]:
    """The query's non-blank filter fields, for links that keep them."""
    return {n: query[n].strip() for n in FILTER_FIELDS if query.get(n, "").strip()}


def render_key(key: Key) -> str:
    return f"{key.at}{_SEPARATOR}{key.reference}"


def parse_key(text: str) -> Key:
    """A page key from a link.

    Raises:
        ValueError: it is not one this console wrote.
    """
    at, separator, reference = text.partition(_SEPARATOR)
    if not separator or not _REFERENCE.fullmatch(reference):
        raise ValueError(f"{text!r} is not a page key")
    moment = datetime.fromisoformat(at)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} is not a page key")
    return Key(at, reference.upper())


def href(path: str, query: Mapping[str, str]) -> str:
    """`path` with the query's fields, in a stable order; none: the bare path."""
    return f"{path}?{urlencode(sorted(query.items()))}" if query else path
