"""Header text as the record keeps it: encoded-words decoded, unsafe characters replaced.

Pure: strings in, strings out; nothing here raises on hostile input. A-numbers are found
here too, since they are read from the same decoded subject.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping

__all__ = ["MAX_TEXT", "a_numbers_in", "clean", "clean_filename", "header_text"]

# RFC 5322 §2.1.1 limits a line to 998 characters; no recorded value needs more.
MAX_TEXT = 998
_MAX_FILENAME = 255
_MAX_A_NUMBERS = 20


# Replaced by a space, so that a recorded value is one line and displays as what it is:
# C0, DEL and C1 controls (CR, LF and TAB included), the Unicode line and paragraph
# separators, the bidi marks, embeddings, overrides and isolates that reorder text on screen
# (CVE-2021-42574), and lone surrogates, which cannot be written out as UTF-8.
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    *range(0xD800, 0xE000),
]
_TEXT_TABLE: dict[int, str] = dict.fromkeys(_UNSAFE, " ")
_FILENAME_TABLE: dict[int, str] = {**_TEXT_TABLE, ord("/"): "_", ord("\\"): "_"}


# RFC 2047 §2 encoded-word; the charset may carry an RFC 2231 §5 "*language" suffix.
_ENCODED_WORD = re.compile(r"=\?([^?*\s]{1,64})(?:\*[^?]*)?\?([BbQq])\?([^?]*)\?=")


# An Alien Registration Number: A (or a), an optional "#" or "-" (a space either side), then
# 9 digits (3-3-3) or 8 digits (2-3-3), grouped with one separator used throughout or none.
_A_NUMBER = re.compile(
    r"(?<![0-9A-Za-z])[Aa] ?[#-]? ?"
    r"([0-9]{3}([- ]?)[0-9]{3}\2[0-9]{3}|[0-9]{2}([- ]?)[0-9]{3}\3[0-9]{3})(?![0-9])"
)


def header_text(value: str | None, *, is_encoded: bool = False) -> str | None:
    if value is None:
        return None
    return clean(_decode_words(value) if is_encoded else value, MAX_TEXT)


def clean(text: str, limit: int, table: Mapping[int, str] = _TEXT_TABLE) -> str:
    """Unsafe characters to spaces, runs of white space (folding included) to one space."""
    return " ".join(text.translate(table).split())[:limit].rstrip()


def clean_filename(name: str) -> str:
    cleaned = clean(_decode_words(name), _MAX_FILENAME, _FILENAME_TABLE)
    return cleaned or "(unnamed)"


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words; a word that does not decode is kept as written."""
    # email.header.decode_header/make_header raise on bad base64, unknown charsets and
    # 8-bit text beside a word, and then the whole header would be lost.
    if "=?" not in value:
        return value
    out: list[str] = []
    run: list[bytes] = []  # adjacent words in one charset, decoded together so that a
    charset = ""  # character split across two words survives
    last, after_word = 0, False
    for word in _ENCODED_WORD.finditer(value):
        gap, last = value[last : word.start()], word.end()
        data = _word_bytes(word[2], word[3])
        joins = data is not None and after_word and not gap.strip()
        if run and not (joins and word[1].lower() == charset):
            out.append(_decode_bytes(b"".join(run), charset))
            run.clear()
        if not joins:  # RFC 2047 §6.2: white space between encoded-words is not shown
            out.append(gap)
        if data is None:
            out.append(word[0])
        else:
            run.append(data)
            charset = word[1].lower()
        after_word = data is not None
    if run:
        out.append(_decode_bytes(b"".join(run), charset))
    out.append(value[last:])
    return "".join(out)


def _word_bytes(encoding: str, text: str) -> bytes | None:
    data = text.encode("utf-8")
    try:
        if encoding in "Qq":
            return binascii.a2b_qp(data, header=True)
        data = data.rstrip(b"=")  # missing or excess padding is common; restore it
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return None


def _decode_bytes(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown charset, or a codec refusing "replace" (idna)
        return data.decode("utf-8", "replace")


def a_numbers_in(subject: str) -> tuple[str, ...]:
    """Alien Registration Numbers in `subject`, as "A" + 9 digits, first seen first."""
    found: dict[str, None] = {}
    for match in _A_NUMBER.finditer(subject):
        digits = match[1].replace("-", "").replace(" ", "")
        found.setdefault("A" + digits.zfill(9))
        if len(found) == _MAX_A_NUMBERS:
            break
    return tuple(found)
