"""Redaction: A-numbers and configured patterns never reach the log; the digest still does."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.audit.log import configure_logging
from gateway.config import AuditSettings, load_settings
from gateway.errors import ConfigError
from gateway.mail.redaction import Redactor


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Motion to continue A123456789", "Motion to continue [A-number]"),
        ("A-123-456-789 and a 12-345-678", "[A-number] and [A-number]"),
        ("A# 123 456 789", "[A-number]"),
        ("A12345678.pdf", "[A-number].pdf"),
        ("Case A1234567 (7 digits) and BA123456789", "Case A1234567 (7 digits) and BA123456789"),
        ("A1234567890 is ten digits", "A1234567890 is ten digits"),
        ("no numbers here", "no numbers here"),
    ],
)
def test_a_numbers_as_people_write_them_are_redacted(text: str, shown: str) -> None:
    assert Redactor(a_numbers=True).text(text) == shown


def test_configured_patterns_are_redacted_too_and_nothing_without_any() -> None:
    redactor = Redactor(patterns=(re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),))
    assert redactor.text("SSN 123-45-6789, A123456789") == "SSN [redacted], A123456789"
    assert not Redactor().is_active
    assert Redactor().text("A123456789") == "A123456789"


def test_a_numbers_are_redacted_by_default() -> None:
    assert Redactor.from_settings(AuditSettings()).text("A123456789") == "[A-number]"
    assert Redactor.from_settings(AuditSettings(redact_a_numbers=False)).text("A123456789") == (
        "A123456789"
    )


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("(unclosed", "is not a regular expression"), ("x*", "matches the empty string")],
)
def test_a_bad_pattern_is_refused_at_load_naming_its_key(
    tmp_path: Path, pattern: str, problem: str
) -> None:
    config = tmp_path / "gateway.toml"
    good = json.dumps(r"\bSSN\b")
    config.write_text(
        f"[audit]\nredact_patterns = [{good}, {json.dumps(pattern)}]\n\n"
        '[[offices]]\nname = "o"\ndisplay_name = "O"\nshort_name = "O"\n'
        'timezone = "UTC"\nretires = 2017-09-12\nportal_url = "https://p.example/"\n'
        'addresses = ["a@o.example"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(config, {})
    assert raised.value.key == "audit.redact_patterns[1]"
    assert problem in raised.value.problem


@pytest.fixture
def audit_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(AuditSettings(format="json", redact_patterns=[r"Smith"]), stream=out)
    yield out
    structlog.reset_defaults()


def test_the_log_shows_the_message_redacted_with_its_digest(audit_log: io.StringIO) -> None:
    structlog.get_logger().info(
        "smtp.message.received",
        reference="20170913-7K3QM9XD0A",
        subject="Motion A123456789 for J. Smith",
        attachments=[{"filename": "A 12-345-678 Smith.pdf", "size": 10}],
        a_numbers=["A123456789", "A012345678"],
        sha256="ab" * 32,
    )
    line = json.loads(audit_log.getvalue())
    assert line["subject"] == "Motion [A-number] for J. [redacted]"
    assert line["attachments"] == [{"filename": "[A-number] [redacted].pdf", "size": 10}]
    assert line["a_numbers"] == ["[A-number]", "[A-number]"]
    assert line["sha256"] == "ab" * 32
    assert line["reference"] == "20170913-7K3QM9XD0A"
    assert "A123456789" not in audit_log.getvalue()


def test_events_without_those_keys_pass_untouched(audit_log: io.StringIO) -> None:
    structlog.get_logger().info("smtp.reply.sent", reply="550 5.1.6 NOT FILED (A123456789)")
    assert json.loads(audit_log.getvalue())["reply"] == "550 5.1.6 NOT FILED (A123456789)"
