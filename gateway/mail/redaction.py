"""Redaction: what of a message's own words may appear in the log and in audit reports.

Subjects and attachment names often carry an A-number (an Alien Registration Number, the
identifier of a person in immigration proceedings) or other personal data. The state store
keeps them unredacted: it is the evidence, and access to it is controlled. The audit log and
the reports travel further, so they get the redacted text; the message's reference and SHA-256
still identify it. This module only rewrites text; it reads no settings file and logs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["A_NUMBER_MARK", "PATTERN_MARK", "RedactionSettings", "Redactor"]

A_NUMBER_MARK = "[A-number]"
PATTERN_MARK = "[redacted]"
# An A-number as people write it: A (or a), an optional "#" or "-" (a space either side), then
# 9 digits (3-3-3) or 8 digits (2-3-3), grouped with one separator used throughout or none.
# The same shapes mail/headertext.py recognises, so that whatever the record lists is also hidden.
_A_NUMBER = re.compile(
    r"(?<![0-9A-Za-z])[Aa] ?[#-]? ?"
    r"(?:[0-9]{3}([- ]?)[0-9]{3}\1[0-9]{3}|[0-9]{2}([- ]?)[0-9]{3}\2[0-9]{3})(?![0-9])"
)


class RedactionSettings(Protocol):
    """What `from_settings` reads: `[audit]` (AuditSettings) has both, already checked.

    A protocol rather than an import, because mail/ is the pure bottom of the package and
    config/ builds on it (it parses addresses with mail/addresses.py).
    """

    @property
    def redact_a_numbers(self) -> bool: ...

    @property
    def redact_patterns(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class Redactor:
    """Replaces A-numbers and configured patterns in text; a no-op when given none."""

    a_numbers: bool = False
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_settings(cls, settings: RedactionSettings) -> Redactor:
        """The redactor `[audit]` asks for (its patterns were checked when it was loaded)."""
        return cls(
            settings.redact_a_numbers, tuple(re.compile(p) for p in settings.redact_patterns)
        )

    @property
    def is_active(self) -> bool:
        return self.a_numbers or bool(self.patterns)

    def text(self, value: str) -> str:
        """`value` with every A-number and configured pattern replaced by a marker."""
        if self.a_numbers:
            value = _A_NUMBER.sub(A_NUMBER_MARK, value)
        for pattern in self.patterns:
            value = pattern.sub(PATTERN_MARK, value)
        return value

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def a_number_list(self, found: Iterable[str]) -> list[str]:
        """A message's A-numbers as the log may show them: one marker each, when redacting."""
        return [A_NUMBER_MARK if self.a_numbers else self.text(a) for a in found]
