"""Checks every kind of method passes: its parameters are declared and validated, its smoke
settings are valid, ``missing`` reports without raising, and its identity follows its
parameters."""

from __future__ import annotations

import json
import math
from typing import Any

from harness.api.testing.case import Case
from harness.core.errors import ParamError, PrivbenchError
from harness.core.identity import method_identity
from harness.core.params import Param

WRONG_TYPE: dict[type, Any] = {
    bool: "yes",
    int: 1.5,
    float: "not a number",
    str: 3,
    list: 3,
    dict: 3,
}
TYPES = tuple(WRONG_TYPE)


def bad_values(p: Param) -> list[Any]:
    """Values ``p`` must refuse: a wrong type, each side of its range, an unknown choice, an
    even number where it must be odd."""
    bad = [WRONG_TYPE[p.type]]
    if p.type in (int, float):
        step = 1 if p.type is int else 1.0
        if p.low is not None:
            bad.append((math.floor(p.low) if p.type is int else p.low) - step)
            bad += [p.low] if p.low_open else []
        if p.high is not None:
            bad.append((math.ceil(p.high) if p.type is int else p.high) + step)
            bad += [p.high] if p.high_open else []
    if p.choices:
        bad.append("no-such-choice")
    if p.odd:
        low = 2 if p.low is None else int(p.low) + 2 - int(p.low) % 2
        if p.high is None or low <= p.high:
            bad.append(low)
    return bad


def other_value(p: Param, current: Any) -> Any:
    """A valid value other than ``current``, or None when none can be derived (lists, maps)."""
    if p.type is bool:
        return not current
    if p.choices:
        return next((c for c in p.choices if c != current), None)
    if p.type is str:
        return f"{current or 'value'}-changed"
    if p.type in (int, float):
        low = p.low if p.low is not None else 0
        candidates = [current * 2 + 1 if current is not None else low + 1, low + 1, low]
        candidates += [p.high] if p.high is not None else []
        for c in candidates:
            value = int(c) if p.type is int else float(c)
            if p.odd and value % 2 == 0:
                value += 1
            try:
                if p.validate("x", value) != current:
                    return value
            except ParamError:
                continue
    return None


def check_params_declared(case: Case) -> None:
    """Every ``params`` entry is a Param of a supported type with help text, a number with its
    valid range, whose default passes its own validation; the case's parameters resolve."""
    cls = case.method_class
    assert isinstance(cls.params, dict), f"{case.id}: params is not a dict"
    for key, p in cls.params.items():
        where = f"{case.id}: params[{key!r}]"
        assert isinstance(p, Param), f"{where} is a {type(p).__name__}, not a Param"
        assert p.type in TYPES, f"{where} has type {p.type!r}; use one of {TYPES}"
        assert p.help.strip(), f"{where} has no help text (privbench list prints it)"
        if p.type in (int, float) and not p.choices:
            assert p.low is not None or p.high is not None, (
                f"{where} is a number without a range: declare low and/or high, so that a "
                "typo in a suite is refused before the run"
            )
        if not p.required:
            try:
                p.validate(f"{case.name}.{key}", p.default)
            except ParamError as exc:
                raise AssertionError(f"{where}: its default fails validation: {exc}") from None
    case.resolve()


def check_bad_params_refused(case: Case) -> None:
    """A wrong type, a value out of range, an unknown choice and an unknown name are each
    refused with a ParamError that names the parameter."""
    cls = case.method_class
    tries = [(key, {**case.params, key: v}) for key, p in cls.params.items() for v in bad_values(p)]
    tries.append(("no_such_parameter", {**case.params, "no_such_parameter": 1}))
    for key, given in tries:
        try:
            case.resolve(given)
        except ParamError as exc:
            assert key in str(exc), (
                f"{case.id}: the ParamError for {key}={given[key]!r} does not name the "
                f"parameter: {exc}"
            )
            continue
        raise AssertionError(f"{case.id}: {key}={given[key]!r} was accepted")


def check_smoke_params_valid(case: Case) -> None:
    """``smoke`` names declared parameters only, and ``smoke_params`` gives valid ones."""
    cls = case.method_class
    unknown = set(cls.smoke) - set(cls.params)
    assert not unknown, f"{case.id}: smoke names undeclared parameters {sorted(unknown)}"
    smoke = cls.smoke_params(case.resolve())
    try:
        case.resolve(smoke)
    except ParamError as exc:
        raise AssertionError(f"{case.id}: smoke_params gives invalid parameters: {exc}") from None


def check_missing_is_empty_when_ready(case: Case) -> None:
    """``missing`` returns a list of sentences without raising, and an empty one for a case
    that runs here (what it lacks would stop the run)."""
    lacking = case.method_class.missing(case.resolve())
    assert isinstance(lacking, list) and all(isinstance(m, str) for m in lacking), (
        f"{case.id}: missing() must return a list of sentences, got {lacking!r}"
    )
    assert not lacking, f"{case.id}: runs here, yet missing() reports {lacking}"


def _identity(method: Any) -> str:
    return json.dumps(method_identity(method), sort_keys=True)


def check_identity_follows_params(case: Case) -> None:
    """Equal parameters give equal identities (what cache keys hash, so nothing in it may
    change between instances); the config holds every resolved parameter; and changing any
    parameter to another valid value changes the identity."""
    resolved = case.resolve()
    first, second = case(), case()
    try:
        text = _identity(first)
    except TypeError as exc:
        raise AssertionError(f"{case.id}: method_identity is not JSON data: {exc}") from None
    assert text == _identity(second), f"{case.id}: two instances with equal parameters differ"
    assert first.config == resolved, (
        f"{case.id}: config {first.config!r} is not the resolved parameters {resolved!r}"
    )
    for key, p in case.method_class.params.items():
        value = other_value(p, resolved[key])
        if value is None:
            continue
        try:
            changed = case(**{key: value})
            changed_text = _identity(changed)
        except (PrivbenchError, ValueError, OSError):
            continue  # not buildable here with that value (a file it names is absent)
        assert changed_text != text, f"{case.id}: {key}={value!r} leaves the identity unchanged"
