"""[[offices]]: one retired filing office, its addresses, phases (Lifecycle) and texts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import cached_property
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.sections import _HEADER_TEXT
from gateway.config.values import (
    _ENGLISH,
    Boundary,
    Language,
    ResponseMode,
    Url,
    _check_zone,
    _Model,
)
from gateway.mail.addresses import normalize_domain, parse_address

__all__ = ["Lifecycle", "OfficeSettings", "OfficeTexts"]


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """An office's phase boundaries as instants in UTC; each starts its phase, inclusive."""

    portal_opens: datetime | None
    retires: datetime
    decommissions: datetime | None


def _to_utc(boundary: Boundary, zone: ZoneInfo) -> datetime:
    if not isinstance(boundary, datetime):
        boundary = datetime.combine(boundary, time(0))
    if boundary.tzinfo is None:
        # A wall-clock time in the office's zone. In a DST gap (fold=0) zoneinfo applies the
        # offset in force before the change, so a missing 02:30 becomes 03:30 daylight time.
        boundary = boundary.replace(tzinfo=zone)
    return boundary.astimezone(UTC)


_DisplayName = Annotated[str, Field(min_length=1, max_length=120, pattern=_HEADER_TEXT)]
_PortalName = Annotated[str, Field(min_length=1, max_length=80, pattern=_HEADER_TEXT)]
_Contact = Annotated[str, Field(min_length=1, max_length=200, pattern=_HEADER_TEXT)]
_PaperLine = Annotated[str, Field(min_length=1, max_length=300, pattern=_HEADER_TEXT)]
_PORTAL_NAMES: dict[Language, str] = {
    "en": "online filing portal",
    "es": "portal de presentación en línea",
}
# The office texts that the notices show: each is given once for a one-language office, or as
# a table with a value for every language the office's notices are in.
_PER_LANGUAGE = ("display_name", "portal_name", "paper_service", "contact")


@dataclass(frozen=True, slots=True)
class OfficeTexts:
    """An office's texts in one language, as a notice in that language shows them."""

    display_name: str
    portal_name: str
    paper_service: tuple[str, ...]
    contact: str | None


class OfficeSettings(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    # Languages of the notices, in the order shown; more than one makes a bilingual notice.
    # Declared before the texts below, whose validation needs them.
    languages: list[Language] = Field(default_factory=lambda: _ENGLISH.copy(), min_length=1)
    display_name: dict[Language, _DisplayName]
    # Plain ASCII name used inside SMTP replies, which must stay 7-bit.
    short_name: str = Field(min_length=1, max_length=40, pattern=r"^[\x20-\x7e]+$")
    timezone: Annotated[str, AfterValidator(_check_zone)]
    portal_opens: Boundary | None = None
    retires: Boundary
    decommissions: Boundary | None = None
    response: ResponseMode = ResponseMode.REJECT_AFTER_DATA
    portal_url: Url
    registration_url: Url | None = None
    instructions_url: Url | None = None
    paper_service: dict[Language, list[_PaperLine]] = Field(
        default_factory=list, validate_default=True
    )
    # Whom to ask (an e-mail address, a phone number, a URL or a sentence); shown in the
    # notices, and in SMTP replies when it is ASCII and fits. None: the notices name nobody.
    contact: dict[Language, _Contact] | None = None
    addresses: list[str] = Field(min_length=1)
    legacy_host: str | None = None
    templates: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    # The portal as the notices name it: "... through the <portal_name>".
    portal_name: dict[Language, _PortalName] = Field(
        default_factory=lambda: dict(_PORTAL_NAMES), validate_default=True
    )

    @field_validator(*_PER_LANGUAGE, mode="before")
    @classmethod
    def _one_value_per_language(cls, value: Any, info: ValidationInfo) -> Any:
        # A plain value is the office's text in its only language. With more languages it
        # would show one language's words in another's notice, so a table is needed.
        languages = info.data.get("languages")
        if value is None or isinstance(value, Mapping) or languages is None:
            return value  # without languages, their error is the one to fix
        if value == []:
            return {lang: [] for lang in languages}  # no paper service, in any language
        if len(languages) > 1:
            raise ValueError(
                f"the notices are in {', '.join(languages)}: give one text per language,"
                f" as {info.field_name} = {{{' = ..., '.join(languages)} = ...}}"
            )
        return {languages[0]: value}

    @field_validator(*_PER_LANGUAGE)
    @classmethod
    def _every_language(cls, value: Any, info: ValidationInfo) -> Any:
        languages = info.data.get("languages") or []
        missing = [lang for lang in languages if value is not None and lang not in value]
        if missing:
            raise ValueError(
                f"no text in {missing[0]!r}, one of the office's languages ({', '.join(languages)})"
            )
        return value

    def texts(self, lang: Language) -> OfficeTexts:
        """The office's texts for a notice in `lang`.

        Raises:
            KeyError: `lang` is not one of the languages the settings were validated for.
        """
        return OfficeTexts(
            display_name=self.display_name[lang],
            portal_name=self.portal_name[lang],
            paper_service=tuple(self.paper_service[lang]),
            contact=None if self.contact is None else self.contact[lang],
        )

    @property
    def title(self) -> str:
        """The display name in the office's first language: for reports and check-config."""
        return self.display_name[self.languages[0]]

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if entry.startswith("@"):
                normalize_domain(entry[1:])
            else:
                parse_address(entry)
        return entries

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        def utc(b: Boundary | None) -> datetime | None:
            return None if b is None else _to_utc(b, self.zone)

        return Lifecycle(
            utc(self.portal_opens),
            _to_utc(self.retires, self.zone),
            utc(self.decommissions),
        )

    @field_validator("languages")
    @classmethod
    def _languages_once(cls, languages: list[str]) -> list[str]:
        if len(set(languages)) != len(languages):
            raise ValueError("a language is listed twice")
        return languages

    @model_validator(mode="after")
    def _ordered_phases(self) -> OfficeSettings:
        cycle = self.lifecycle
        if cycle.portal_opens is not None and cycle.portal_opens > cycle.retires:
            raise ValueError("portal_opens must not be after retires")
        if cycle.decommissions is not None and cycle.decommissions <= cycle.retires:
            raise ValueError("decommissions must be after retires")
        return self
