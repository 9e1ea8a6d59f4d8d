"""Mail addresses as the gateway compares them, and the book of retired addresses.

Pure: no I/O. An address is normalised once, at the inbound boundary, with `parse_address`;
everything after that compares `Address` values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import idna

__all__ = [
    "Address",
    "AddressBook",
    "AddressKind",
    "Lookup",
    "normalize_domain",
    "normalize_sender",
    "parse_address",
]


@dataclass(frozen=True, slots=True)
class Address:
    """A normalised address: local part folded, domain as a lowercase A-label."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def normalize_domain(domain: str) -> str:
    """Return the lowercase ASCII (IDNA 2008 A-label) form of a domain.

    Raises:
        ValueError: the domain is empty or not a valid IDNA name.
    """
    name = domain.strip().rstrip(".")
    if not name:
        raise ValueError("empty domain")
    if name.isascii():
        name = name.lower()
        # Reject obviously broken ASCII names cheaply; full checks only for U-labels.
        if any(not label or len(label) > 63 for label in name.split(".")):
            raise ValueError(f"invalid domain {domain!r}")
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid domain {domain!r}: {exc}") from exc


_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F))


def _refuse_controls(text: str) -> None:
    # RFC 5321 §4.1.2 allows no control characters in a path, not even quoted; a NUL would
    # cut the address short in C-based tools that read our records or logs.
    if not _CONTROLS.isdisjoint(text):
        raise ValueError(f"control character in address {text!r}")


def _fold_local(local: str) -> str:
    # Retired mailboxes are matched the way people type them: case-insensitively, with a
    # "+tag" subaddress folded onto its base mailbox.
    base = local.split("+", 1)[0] if not local.startswith("+") else local
    return base.casefold()


def parse_address(text: str) -> Address:
    """Parse `local@domain` (no angle brackets) into a normalised Address.

    Raises:
        ValueError: no "@", an empty local part, a control character, or an invalid domain.
    """
    _refuse_controls(text)
    local, at, domain = text.strip().rpartition("@")
    if not at or not local:
        raise ValueError(f"not a mail address: {text!r}")
    return Address(_fold_local(local), normalize_domain(domain))


def normalize_sender(text: str) -> str:
    """Normalise an envelope sender without folding it: "" for the null sender.

    The local part is kept exactly, since a notice must go back to the very mailbox that
    sent the message; only the domain is put in canonical form.

    Raises:
        ValueError: the address has no "@", an empty local part, a control character, or
            an invalid domain.
    """
    if text in ("", "<>"):
        return ""
    _refuse_controls(text)
    local, at, domain = text.strip().rpartition("@")
    if not at or not local:
        raise ValueError(f"not a mail address: {text!r}")
    return f"{local}@{normalize_domain(domain)}"


class AddressKind(enum.StrEnum):
    RETIRED = "retired"
    POSTMASTER = "postmaster"
    UNKNOWN_LOCAL = "unknown-local"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class Lookup:
    kind: AddressKind
    office: str | None = None


@dataclass(frozen=True, slots=True)
class AddressBook:
    """Which office, if any, owns an address; built once from the configuration."""

    exact: dict[str, str]
    whole_domains: dict[str, str]
    served_domains: frozenset[str]

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str]]) -> AddressBook:
        """Build from (office name, entry) pairs; an entry is `user@domain` or `@domain`.

        Raises:
            ValueError: an entry is malformed or belongs to two offices.
        """
        exact: dict[str, str] = {}
        whole: dict[str, str] = {}
        for office, entry in entries:
            if entry.startswith("@"):
                key, table = normalize_domain(entry[1:]), whole
            else:
                key, table = str(parse_address(entry)), exact
            owner = table.get(key)
            if owner is not None and owner != office:
                raise ValueError(f"{entry!r} is listed by both {owner!r} and {office!r}")
            table[key] = office
        domains = frozenset(whole) | frozenset(k.rpartition("@")[2] for k in exact)
        return cls(exact=exact, whole_domains=whole, served_domains=domains)

    def office_of_domain(self, domain: str) -> str | None:
        """The office a served domain belongs to (the first listed, if several share it)."""
        if domain in self.whole_domains:
            return self.whole_domains[domain]
        return next((o for k, o in self.exact.items() if k.rpartition("@")[2] == domain), None)

    def lookup(self, address: Address) -> Lookup:
        """Classify an address: retired (with its office), postmaster, unknown here, foreign."""
        if address.domain not in self.served_domains:
            return Lookup(AddressKind.FOREIGN)
        # RFC 5321 §4.5.1: postmaster must be accepted for every served domain.
        if address.local == "postmaster":
            return Lookup(AddressKind.POSTMASTER)
        office = self.exact.get(str(address)) or self.whole_domains.get(address.domain)
        if office is None:
            return Lookup(AddressKind.UNKNOWN_LOCAL)
        return Lookup(AddressKind.RETIRED, office)
