"""Bounds on what people type: how long a string may be, how a value is shown in a message, and
a schema base that refuses YAML booleans where numbers are meant.

Why a module of its own: suite files and ``-o`` values come from people and tools we do not
control, and an unbounded value hurts far from where it was read — a 600,000-character dataset
name made ``difflib`` and rich's highlighter run for minutes inside an *error message*, and
``epochs: true`` silently trained one epoch. Every schema section (run config, method
parameters, suites, resource profiles) inherits :class:`Checked`, so each field gets the same
rules without repeating them, and every message that echoes a value goes through :func:`cut`.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationInfo, field_validator

MAX_NAME = 256
"""Longest name-like string (registry names, split names, profile names, scheduler strings)."""

MAX_PATH = 1024
"""Longest path (data_root, checkpoint, include); real ones are well under 200 characters."""

MAX_DESCRIPTION = 10_000
"""Longest free text (a suite's description); also the longest scalar the YAML loader reads."""

MAX_ERRORS = 20
"""Validation errors shown at most; the rest are counted (40,000 unknown keys were 40,000 lines)."""

SHOWN = 60
"""Characters of a value echoed in a message before it is cut."""


def cut(value: Any, limit: int = SHOWN) -> str:
    """``repr(value)`` of at most about ``limit`` characters: a long string is cut and the rest
    counted (``'aaaa…' (… 599,940 more characters)``), so a message stays one short line. The cut
    happens before ``repr`` so a megabyte is never copied to be thrown away."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… (… {len(value) - limit:,} more characters)"
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value):,} items>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… (… {len(text) - limit:,} more characters)"


def capped(lines: list[str], limit: int = MAX_ERRORS) -> list[str]:
    """The first ``limit`` lines, then one line saying how many more there were."""
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"… and {len(lines) - limit:,} more errors (fix these first)"]


def _flat(annotation: Any) -> list[Any]:
    """The plain types inside an annotation (Optional, unions, Annotated, containers unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flat(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, list, dict, set, frozenset):
        out = [origin] if origin in (tuple, list, dict) else []
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                out += _flat(arg)
        return out
    return [annotation]


def _numeric_only(annotation: Any) -> bool:
    """True when the annotation takes numbers and not booleans: a YAML ``true`` there is a mistake
    (pydantic's lax mode would read it as 1)."""
    flat = _flat(annotation)
    return any(t in (int, float) for t in flat) and bool not in flat and Any not in flat


@functools.cache
def _known_field(cls: type, name: str) -> bool:
    return cls.model_fields.get(name) is not None


@functools.cache
def _numeric_only_field(cls: type, name: str) -> bool:
    """:func:`_numeric_only` of a model field's annotation, worked out once per field."""
    return _numeric_only(cls.model_fields[name].annotation)


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, bool) for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, bool) for v in value.values())
    return False


class Checked(BaseModel):
    """Schema base: every field refuses booleans where numbers are meant, and strings longer than
    its limit (:data:`MAX_NAME` unless ``_text_limits`` names the field), before any other
    validator sees the value — so no registry lookup, did-you-mean or pattern match ever runs on
    a megabyte of text."""

    _text_limits: ClassVar[dict[str, int]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, BaseModel):  # a section validated when it was built (shared by runs of a suite): checked then
            return value
        name = info.field_name or ""
        if not _known_field(cls, name):
            return value
        # an item of a list is named by its index (``seeds.0: …``) so the message points at its line
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        if _has_bool(value) and _numeric_only_field(cls, name):
            where, bad = next(((i, v) for i, v in items if isinstance(v, bool)), (None, value))
            raise ValueError(f"{'' if where is None else f'{name}.{where}: '}{cut(bad)} is a boolean, not a number (write the number itself)")
        limit = cls._text_limits.get(name, MAX_NAME)
        for i, text in items:
            if isinstance(text, str) and len(text) > limit:
                raise ValueError(f"{'' if i is None else f'{name}.{i}: '}{cut(text)} is longer than {limit:,} characters")
        return value
