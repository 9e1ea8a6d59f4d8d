"""DMARC's pure parts (gateway/mail/dmarc.py) with plain values: no DNS, no messages."""

from __future__ import annotations

import pytest

from gateway.mail.dmarc import domain_token, parse_dmarc_record


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Example.COM", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("", ""),
        (None, ""),
        ("a..bücher.example", ""),  # IDNA refuses it
        ("under_score.example", ""),  # a name, but not a host name
        ("a." * 127 + "example", ""),  # past 253 octets
    ],
)
def test_a_domain_token_is_an_a_label_host_name_or_nothing(text: str | None, token: str) -> None:
    assert domain_token(text) == token


@pytest.mark.parametrize(
    "record",
    [
        "v=DMARC1; p=reject; junk",
        "v=DMARC1; junk; p=reject",
        "v=DMARC1; p=reject; ;",
    ],
)
def test_parts_of_a_dmarc_record_without_a_tag_are_ignored(record: str) -> None:
    assert parse_dmarc_record(record, is_subdomain=False) == parse_dmarc_record(
        "v=DMARC1; p=reject", is_subdomain=False
    )
