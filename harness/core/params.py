"""Declared method parameters: type, default, range, choices.

Each defense, recognizer, counter-attack, metric and data set declares its parameters as a
``dict[str, Param]``. The suite validator checks every value against them before anything runs,
so a typo in a suite costs milliseconds, not the first twenty minutes of a run.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.errors import ParamError

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


@dataclass(frozen=True)
class Param:
    """One declared parameter.

    ``type`` is one of bool, int, float, str, list, dict (a mapping, e.g. another method's
    parameters). ``low``/``high`` bound numbers (inclusive
    unless ``low_open``/``high_open``); ``choices`` restricts strings. ``default=None`` with
    ``required=False`` means "optional, no value".
    """

    type: type
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    required: bool = False
    nullable: bool = False
    odd: bool = False

    def describe(self) -> str:
        """Short human description used by ``privbench list`` and in error messages."""
        parts = [self.type.__name__]
        if self.choices:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        if self.low is not None or self.high is not None:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            low = "-inf" if self.low is None else _fmt(self.low)
            high = "inf" if self.high is None else _fmt(self.high)
            parts.append(f"in {lo}{low}, {high}{hi}")
        if self.odd:
            parts.append("odd (0 = automatic)" if self.low == 0 else "odd")
        if self.required:
            parts.append("required")
        else:
            parts.append(f"default {self.default!r}")
        return ", ".join(parts)

    def validate(self, name: str, value: Any) -> Any:
        """``value`` coerced to the declared type; ParamError saying what is valid otherwise."""
        if value is None:
            if self.nullable or (not self.required and self.default is None):
                return None
            raise ParamError(f"{name}: a value is required ({self.describe()})")
        value = self._coerce(name, value)
        if self.choices is not None and value not in self.choices:
            hint = suggest(str(value), [str(c) for c in self.choices])
            raise ParamError(
                f"{name}: {value!r} is not valid; choose one of "
                f"{', '.join(map(str, self.choices))}{hint}"
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_range(name, value)
        elif isinstance(value, (list, dict)):
            _check_finite(name, value)
        if self.odd and value % 2 == 0 and not (value == 0 and self.low == 0):
            raise ParamError(f"{name}: {value!r} must be odd ({self.describe()})")
        return value

    def _coerce(self, name: str, value: Any) -> Any:
        expected = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.type is bool:
            if isinstance(value, bool):
                return value
        elif self.type is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif self.type is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif self.type is str:
            if isinstance(value, str):
                return value
        elif self.type is list and isinstance(value, (list, tuple)):
            return list(value)
        elif self.type is dict and isinstance(value, dict):
            return dict(value)
        raise ParamError(f"{name}: expected {expected}, got {value!r} ({type(value).__name__})")

    def _check_range(self, name: str, value: float) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamError(f"{name}: {value!r} is not a finite number ({self.describe()})")
        bad_low = self.low is not None and (
            value <= self.low if self.low_open else value < self.low
        )
        bad_high = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if bad_low or bad_high:
            raise ParamError(f"{name}: {value!r} is out of range ({self.describe()})")
        if isinstance(value, int) and abs(value) > _INT_LIMIT:
            raise ParamError(f"{name}: {value!r} is larger than a 64-bit integer")


_INT_LIMIT = 2**63 - 1  # what numpy and torch hold; a larger integer ends in OverflowError


def _check_finite(name: str, value: Any) -> None:
    """ParamError for a NaN, an infinity or an integer past 64 bits anywhere in ``value``
    (a list or mapping parameter)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, float) and not math.isfinite(item):
            raise ParamError(f"{name}: holds {item!r}; every number must be finite")
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > _INT_LIMIT:
            raise ParamError(f"{name}: holds {item!r}, larger than a 64-bit integer")


def _fmt(x: float) -> str:
    return f"{x:g}"


def suggest(word: object, options: list[str]) -> str:
    """' (did you mean X?)' when ``word`` is close to one of ``options``, else ''. A key that
    YAML read as something else than a string (``null``, ``1``) is compared as its text."""
    close = difflib.get_close_matches(str(word), options, n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def resolve_params(
    owner: str, declared: Mapping[str, Param], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Check ``given`` against ``declared`` and fill defaults; raise ParamError on any problem."""
    unknown = [k for k in given if k not in declared]
    if unknown:
        valid = sorted(declared)
        k = unknown[0]
        listing = ", ".join(valid) if valid else "none"
        raise ParamError(
            f"{owner}: unknown parameter {k!r}{suggest(k, valid)}; valid parameters: {listing}"
        )
    resolved: dict[str, Any] = {}
    for key, param in declared.items():
        if key in given:
            resolved[key] = param.validate(f"{owner}.{key}", given[key])
        elif param.required:
            raise ParamError(f"{owner}.{key}: a value is required ({param.describe()})")
        else:
            resolved[key] = param.default
    return resolved
