"""Text in a notice: hostile header text cleaned, dates and sizes as the reader writes them.

Pure: no templates, no I/O. Dates are spelt from our own tables, not the locale module,
which is process-global state.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from email.headerregistry import HeaderRegistry

__all__ = [
    "A_NUMBER_TEXT",
    "MAX_A_NUMBERS",
    "SUBJECT_LIMIT",
    "a_number_text",
    "clean_filename",
    "clean_message_id",
    "clean_text",
    "cutoff_text",
    "date_text",
    "datetime_text",
    "decode_header_text",
    "digits_of",
    "size_text",
]

SUBJECT_LIMIT = 250  # the whole Subject line; RFC 5322 allows 998, readers see ~80
_FILENAME_LIMIT = 100
MAX_A_NUMBERS = 5
_MESSAGE_ID = re.compile(r"<[\x21-\x7e]{1,250}>")
_MESSAGE_ID_FORBIDDEN = re.compile(r"[<>\"\\(),;:\s]")
A_NUMBER_TEXT = re.compile(r"[A-Za-z0-9 -]{1,20}")
_FOLDING = re.compile(r"\r?\n(?=[ \t])")


def clean_text(value: str, *, limit: int) -> str:
    """One line of displayable text: no controls, separators, bidi overrides; capped with '…'."""
    kept: list[str] = []
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            kept.append(" ")  # CR, LF, NEL, U+2028...: each could start a new line somewhere
        elif category not in ("Cf", "Cs"):  # bidi overrides, zero-width text, lone surrogates
            kept.append(char)
    text = " ".join("".join(kept).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def decode_header_text(raw: str) -> str:
    """Decode RFC 2047 encoded-words the way a mail reader shows them; never raises."""
    unfolded = _FOLDING.sub("", raw)
    if "=?" not in unfolded:
        return unfolded
    # The registry decodes leniently: unknown charsets and bad bytes become defects, not errors.
    return str(HeaderRegistry()("subject", unfolded))


def clean_filename(raw: str) -> str:
    name = clean_text(decode_header_text(raw), limit=10 * _FILENAME_LIMIT)
    if len(name) <= _FILENAME_LIMIT:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 10:
        return clean_text(name, limit=_FILENAME_LIMIT)
    # Keep the extension: "….pdf" still tells the reader which document it was.
    return stem[: _FILENAME_LIMIT - len(extension) - 2].rstrip() + "…." + extension


def clean_message_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    candidate = _FOLDING.sub("", raw).strip()
    if _MESSAGE_ID.fullmatch(candidate) is None or "@" not in candidate:
        return None
    return None if _MESSAGE_ID_FORBIDDEN.search(candidate[1:-1]) else candidate


def a_number_text(value: str) -> str:
    """An A-number as people write it, "A123-456-789", whatever form it was recorded in."""
    digits = digits_of(value)
    if len(digits) in (8, 9):
        digits = digits.zfill(9)
        return f"A{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    return value


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text).lstrip("0")


_MONTHS = {
    "en": "January February March April May June July August September October November December",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre"
    " diciembre",
}


_WEEKDAYS = {
    "en": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "es": "lunes martes miércoles jueves viernes sábado domingo",
}


def date_text(value: date, lang: str) -> str:
    """'September 12, 2017' / '12 de septiembre de 2017'."""
    month = _MONTHS[lang].split()[value.month - 1]
    if lang == "es":
        return f"{value.day} de {month} de {value.year}"
    return f"{month} {value.day}, {value.year}"


def datetime_text(value: datetime, lang: str) -> str:
    """'Tuesday, September 12, 2017, 9:14 AM CDT'; 'martes, 12 de septiembre de 2017, 9:14 (CDT)'"""
    weekday = _WEEKDAYS[lang].split()[value.weekday()]
    zone = value.tzname() or "UTC"
    if lang == "es":
        return f"{weekday}, {date_text(value, lang)}, {value.hour}:{value.minute:02d} ({zone})"
    hour = value.hour % 12 or 12
    meridiem = "AM" if value.hour < 12 else "PM"
    return f"{weekday}, {date_text(value, lang)}, {hour}:{value.minute:02d} {meridiem} {zone}"


def cutoff_text(value: datetime, lang: str) -> str:
    """A phase boundary: the date alone when it is at midnight, as configured boundaries are."""
    if (value.hour, value.minute) == (0, 0):
        return date_text(value, lang)
    return datetime_text(value, lang)


def size_text(size: int, lang: str) -> str:
    """'512 bytes', '245 KB', '1.2 MB' (1,2 MB in Spanish), in the 1024 units mail readers use."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = (size / 1024, "KB") if size < 1024 * 1024 else (size / 1024 / 1024, "MB")
    text = f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    return f"{text.replace('.', ',') if lang == 'es' else text} {unit}"
