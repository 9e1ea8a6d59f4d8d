"""Configuration problems in an operator's words: every one of them, each with its key.

pydantic reports what failed in its own vocabulary ("Extra inputs are not permitted",
"Input should be a valid integer, unable to parse string as an integer"). An operator fixing
a TOML file at 2 a.m. wants the key, what is wrong with it in plain words, and, for a
misspelt key, the setting that was probably meant. Pure: a validation error and the settings
model in, (key, problem) pairs out.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["describe", "dotted"]

# pydantic's error type -> our words; {name} fields come from the error's context.
_WORDS: Mapping[str, str] = {
    "missing": "is required and missing",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": 'must be text, in quotes ("...")',
    "list_type": "must be a list, in brackets [...]",
    "dict_type": "must be a table of settings",
    "model_type": "must be a table of settings",
    "model_attributes_type": "must be a table of settings",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must have at least {min_length}",
    "too_long": "must have at most {max_length}",
    "string_too_short": "must be at least {min_length} characters long",
    "string_too_long": "must be at most {max_length} characters long",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
    "string_pattern_mismatch": "is not in the expected form",
    "url_parsing": "must be a URL such as https://portal.example/",
    "url_scheme": "must be a URL starting with {expected_schemes}",
    "datetime_parsing": "must be a date and time such as 2017-09-12T00:00:00",
    "datetime_from_date_parsing": "must be a date such as 2017-09-12 or a date and time",
    "date_parsing": "must be a date such as 2017-09-12",
}


def describe(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Every problem of `exc` as (dotted key, plain words), in the file's order, once each."""
    found: dict[tuple[str, str], None] = {}
    for error in exc.errors(include_url=False):
        location = tuple(error["loc"])
        found[(dotted(location), _words(error, location, model))] = None
    return list(found)


def dotted(location: Sequence[int | str]) -> str:
    """("offices", 0, "timezone") -> "offices[0].timezone", without pydantic's union tags."""
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")
    # Union types add their member names to the location; they mean nothing to an operator.
    # So do a table's bad keys ("[key]") and the tags of a per-language text.
    return re.sub(
        r"\.(date|datetime|str|function-after\[[^\]]*\]|\[key\]|plain|per-language)", "", key
    )


def _words(
    error: Mapping[str, Any], location: tuple[int | str, ...], model: type[BaseModel]
) -> str:
    kind = str(error["type"])
    if kind == "extra_forbidden":
        return _unknown_key(location, model)
    template = _WORDS.get(kind)
    if template is None:
        return str(error["msg"]).removeprefix("Value error, ")
    context = {k: _plain(v) for k, v in (error.get("ctx") or {}).items()}
    try:
        return template.format(**context)
    except (KeyError, IndexError):
        return str(error["msg"])


def _plain(value: Any) -> str:
    # pydantic quotes literal choices as "'a', 'b' or 'c'"; keep that, it reads well.
    return str(value)


def _unknown_key(location: tuple[int | str, ...], model: type[BaseModel]) -> str:
    known = _fields_at([p for p in location[:-1] if not _is_tag(p)], model)
    bad = str(location[-1]) if location else ""
    if not known:
        return "is not a setting here"
    close = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
    if close:
        return f"is not a setting here; did you mean {close[0]!r}?"
    return f"is not a setting here (known: {', '.join(sorted(known))})"


def _is_tag(part: int | str) -> bool:
    return isinstance(part, str) and bool(re.fullmatch(r"function-after\[.*\]|\[key\]", part))


def _fields_at(path: Sequence[int | str], model: type[BaseModel]) -> list[str]:
    """The setting names of the table at `path`, or [] when the path leads to no table."""
    current: Any = model
    for part in path:
        current = _step(current, part)
        if current is None:
            return []
    table = _model_in(current)
    return list(table.model_fields) if table is not None else []


def _step(annotation: Any, part: int | str) -> Any:
    if isinstance(part, int):
        args = typing.get_args(annotation)
        return args[0] if typing.get_origin(annotation) in (list, tuple) and args else None
    table = _model_in(annotation)
    if table is None or part not in table.model_fields:
        return None
    return table.model_fields[part].annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation stands for, looking through `X | None` and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            found = _model_in(member)
            if found is not None:
                return found
    return None
