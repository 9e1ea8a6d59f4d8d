"""Address normalisation and the book of retired addresses, with plain values."""

from __future__ import annotations

import pytest

from gateway.mail.addresses import (
    AddressBook,
    AddressKind,
    normalize_domain,
    normalize_sender,
    parse_address,
)

BOOK = AddressBook.build(
    [
        ("chicago", "OCC-Chicago-Filings@OCC-Chicago.Example"),
        ("chicago", "service@bücher.example"),
        ("other", "@other.example"),
    ]
)


@pytest.mark.parametrize(
    ("given", "kind", "office"),
    [
        ("occ-chicago-filings@occ-chicago.example", AddressKind.RETIRED, "chicago"),
        ("OCC-CHICAGO-FILINGS@occ-chicago.EXAMPLE.", AddressKind.RETIRED, "chicago"),
        ("occ-chicago-filings+urgent@occ-chicago.example", AddressKind.RETIRED, "chicago"),
        ("service@xn--bcher-kva.example", AddressKind.RETIRED, "chicago"),
        ("service@BÜCHER.example", AddressKind.RETIRED, "chicago"),
        ("anyone@other.example", AddressKind.RETIRED, "other"),
        ("Postmaster@occ-chicago.example", AddressKind.POSTMASTER, None),
        ("postmaster@other.example", AddressKind.POSTMASTER, None),
        ("someone-else@occ-chicago.example", AddressKind.UNKNOWN_LOCAL, None),
        ("occ-chicago-filings@elsewhere.example", AddressKind.FOREIGN, None),
        ("anyone@sub.other.example", AddressKind.FOREIGN, None),
    ],
)
def test_lookup_classifies_each_address(given: str, kind: AddressKind, office: str | None) -> None:
    result = BOOK.lookup(parse_address(given))
    assert (result.kind, result.office) == (kind, office)


@pytest.mark.parametrize(
    "bad",
    ["no-at-sign", "@domain.example", "user@", "user@exa..mple", "user@" + "x" * 64 + ".example"],
)
def test_malformed_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"address|domain"):
        parse_address(bad)


def test_an_address_cannot_belong_to_two_offices() -> None:
    with pytest.raises(ValueError, match="listed by both"):
        AddressBook.build([("a", "x@d.example"), ("b", "X+tag@D.example")])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("<>", ""),
        ("", ""),
        # The sender keeps its case and subaddress: a notice goes back to that exact mailbox.
        ("Jane.Doe+Case42@LawFirm.Example", "Jane.Doe+Case42@lawfirm.example"),
        (
            "abogada@despacho-jurídico.example",
            "abogada@" + "despacho-jurídico.example".encode("idna").decode(),
        ),
    ],
)
def test_sender_is_normalised_without_folding(given: str, expected: str) -> None:
    assert normalize_sender(given) == expected


@pytest.mark.parametrize(
    "domain",
    [
        "bü\u200dcher.example",  # a joiner IDNA 2008 does not allow there
        "a..bücher.example",  # an empty label in a U-label name
        "ü" * 70 + ".example",  # a label past 63 octets once encoded
    ],
)
def test_a_non_ascii_domain_idna_refuses_is_invalid(domain: str) -> None:
    with pytest.raises(ValueError, match="invalid domain"):
        normalize_domain(domain)


@pytest.mark.parametrize(
    ("domain", "office"),
    [
        ("other.example", "other"),  # served whole (@other.example)
        ("occ-chicago.example", "chicago"),  # served through one listed address
        ("xn--bcher-kva.example", "chicago"),
        ("elsewhere.example", None),
    ],
)
def test_the_office_of_a_served_domain(domain: str, office: str | None) -> None:
    assert BOOK.office_of_domain(domain) == office
