"""The shape of a run folder's files, checked when they are read.

A submission archive's digests can be recomputed by anyone, so its manifest, ``results.jsonl``
and records are untrusted input (docs/security.md): every key privbench reads is checked for
its type here, once, in time linear in the file, and a malformed one is a :class:`RunFileError`
naming the file (and line or key) and what it should be, never an internal error later.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

from harness.core.errors import RunFileError
from harness.core.limits import shorten

_NONE = type(None)
_WHAT = {
    dict: "an object",
    list: "a list",
    str: "a string",
    float: "a finite number",
    int: "an integer",
    bool: "true or false",
}

# Manifest key → the types it may have (after upgrade filled the keys a run did not record).
MANIFEST_KEYS: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "status": (str,),
    "suite": (dict,),
    "config": (dict,),
    "privbench_version": (str, _NONE),
    "recognizer_kinds": (dict,),
    "roles": (dict,),
    "git": (dict,),
    "plugins": (list, _NONE),
    "packages": (dict,),
    "machine": (dict,),
    "key": (dict,),
    "seed": (int, _NONE),
    "metrics": (dict,),
    "plan": (dict,),
    "started": (str, _NONE),
    "smoke": (dict, _NONE),
    "dataset": (dict,),
    "updated": (str, _NONE),
    "duration_s": (float, _NONE),
    "stage_seconds": (dict,),
    "cache": (dict, _NONE),
    "failures": (list,),
    "skipped": (list,),
    "finished": (str, _NONE),
    "digests": (dict, _NONE),
}
SUITE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "path": (str, _NONE),
    "sha256": (str,),
    "files": (list,),
}
# Keys inside the manifest's objects that readers use: a dotted path ("*": every entry of an
# object or list) → the types it may have where it is present; "!" after a path: required
# where its parent is present.
NESTED: dict[str, tuple[type, ...]] = {
    "config.dataset": (dict,),
    "config.description": (str, _NONE),
    "config.objective": (str,),
    "config.upload": (dict,),
    "config.quality_floor": (dict, _NONE),
    "config.quality_floor.metric!": (str,),
    "config.quality_floor.min!": (float,),
    "config.metrics": (list,),
    "config.metrics.*": (dict,),
    "dataset.sizes": (dict,),
    "dataset.sizes.*": (int,),
    "dataset.samples": (list,),
    "dataset.samples.*": (str,),
    "dataset.fingerprint": (str, _NONE),
    "dataset.protocol": (str, _NONE),
    "git.commit": (str, _NONE),
    "metrics.*": (dict,),
    "metrics.*.name": (str,),
    "metrics.*.scope": (str,),
    "metrics.*.unit": (str,),
    "metrics.*.higher_is_better": (bool,),
    "plugins.*": (dict,),
    "recognizer_kinds.*": (str,),
    "roles.*": (dict,),
    "stage_seconds.*": (float,),
}
METHOD_KEYS: dict[str, tuple[type, ...]] = {"label": (str,), "name": (str,), "params": (dict,)}
METHOD_LISTS = ("recognizers", "defenses", "counter_attacks")

# results.jsonl: key → types; the first group every row has.
ROW_KEYS: dict[str, tuple[type, ...]] = {
    "scope": (str,),
    "defense": (str, _NONE),
    "counter_attack": (str, _NONE),
    "recognizer": (str, _NONE),
    "metric": (str,),
    "value": (float, _NONE),
    "n": (int, _NONE),
}
ROW_OPTIONAL: dict[str, tuple[type, ...]] = {
    "ci_low": (float, _NONE),
    "ci_high": (float, _NONE),
    "ci_level": (float, _NONE),
    "higher_is_better": (bool, _NONE),
    "unit": (str, _NONE),
}
# The labels a row of each scope must name.
SCOPE_LABELS = {
    "cell": ("defense", "counter_attack", "recognizer"),
    "defense": ("defense",),
    "recognizer": ("recognizer",),
}
RECORD_KEYS: dict[str, tuple[type, ...]] = {
    "id": (str, int),
    "recognized_clean": (bool,),
    "recognized_protected": (bool,),
}


# C0 and C1 control characters and DEL, less the newline and the tab
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def fits(value: Any, types: tuple[type, ...]) -> bool:
    """Whether ``value`` is one of ``types``: bool is not a number, an int is a float (if a
    float can hold it), and a float must be finite."""
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return int in types or abs(value) <= sys.float_info.max
    if isinstance(value, float):
        return float in types and math.isfinite(value)
    return isinstance(value, types)


def _expected(types: tuple[type, ...]) -> str:
    names = [_WHAT[t] for t in types if t is not _NONE]
    return " or ".join(names + (["null"] if _NONE in types else []))


def _found(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {shorten(repr(value), 40)}"
    return _WHAT.get(type(value), type(value).__name__)


def check_keys(
    data: dict[str, Any],
    keys: dict[str, tuple[type, ...]],
    where: str,
    required: bool = True,
    prefix: str = "",
) -> None:
    """RunFileError naming ``where`` and the key unless each of ``keys`` in ``data`` has one of
    its types; a missing key is refused too when ``required``."""
    for key, types in keys.items():
        _check_entry(data.get(key), key in data, required, types, where, f"{prefix}{key}")


def _check_entry(
    value: Any, present: bool, required: bool, types: tuple[type, ...], where: str, name: str
) -> None:
    """RunFileError naming ``where`` and the key ``name`` unless ``value`` has one of ``types``
    (when ``present``) or may be missing (not ``required``)."""
    if not present:
        if required:
            raise RunFileError(f"{where}: no '{name}' (it should be {_expected(types)})")
    elif not fits(value, types):
        raise RunFileError(f"{where}: '{name}' is {_found(value)}; it should be {_expected(types)}")


def _check_object(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RunFileError(f"{where}: {what} is {_found(value)}; it should be an object")
    return value


def check_values(data: Any, where: str) -> None:
    """RunFileError naming ``where`` and the key of the first NaN or infinite number anywhere
    in ``data`` (JSON has none; Python's reader lets them in), or of the first text holding a
    control character other than a newline or a tab (an escape sequence bound for the
    terminal of whoever reads the run: privbench writes none). Iterative: no depth limit."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise RunFileError(f"{where}: '{key}' is {value}; it should be a finite number")
        if isinstance(value, str) and _CONTROL.search(value):
            char = _CONTROL.search(value).group(0)  # type: ignore[union-attr]
            raise RunFileError(
                f"{where}: '{key}' holds the control character U+{ord(char):04X}; privbench "
                "writes printable text only"
            )
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
            stack.extend((f"{key}.<key>", k) for k in value if isinstance(k, str))
        elif isinstance(value, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))


def _join(name: str, key: object) -> str:
    return f"{name}.{key}" if name else str(key)


def _entries(data: Any, parts: list[str], name: str) -> list[tuple[str, Any, bool]]:
    """(dotted name, value, present) of what ``parts`` reaches in ``data``; a key missing from
    an object is reached as not present."""
    if not parts:
        return [(name, data, True)]
    head, rest = parts[0], parts[1:]
    if head == "*":
        items = (
            data.items()
            if isinstance(data, dict)
            else enumerate(data)
            if isinstance(data, list)
            else ()
        )
        return [e for k, v in items for e in _entries(v, rest, _join(name, k))]
    if not isinstance(data, dict):
        return []
    if head not in data:
        return [(_join(name, head), None, False)] if not rest else []
    return _entries(data[head], rest, _join(name, head))


def check_nested(data: dict[str, Any], where: str) -> None:
    """RunFileError naming ``where`` and the dotted key unless each key of :data:`NESTED` has
    one of its types where it is present (or, marked "!", where its parent is)."""
    for path, types in NESTED.items():
        required = path.endswith("!")
        for name, value, present in _entries(data, path.rstrip("!").split("."), ""):
            _check_entry(value, present, required, types, where, name)


def check_manifest(data: dict[str, Any], where: str) -> None:
    """RunFileError naming ``where`` and the key unless every key a reader uses has its type
    (the top-level keys, the suite, each method config, failures and skipped entries) and no
    number anywhere is NaN or infinite."""
    check_values(data, where)
    check_keys(data, {k: MANIFEST_KEYS[k] for k in ("run_id", "suite", "config")}, where)
    check_keys(data, MANIFEST_KEYS, where, required=False)
    suite = data["suite"]
    check_keys(suite, {k: SUITE_KEYS[k] for k in ("name", "sha256")}, where, prefix="suite.")
    check_keys(suite, SUITE_KEYS, where, required=False, prefix="suite.")
    for kind in METHOD_LISTS:
        configs = data["config"].get(kind, [])
        _check_entry(configs, True, True, (list,), where, f"config.{kind}")
        for i, cfg in enumerate(configs):
            _check_object(cfg, where, f"'config.{kind}[{i}]'")
            check_keys(cfg, METHOD_KEYS, where, prefix=f"config.{kind}[{i}].")
    check_nested(data, where)
    for kind in ("failures", "skipped"):
        for i, entry in enumerate(data.get(kind) or []):
            _check_object(entry, where, f"'{kind}[{i}]'")
    for name, value in (data.get("digests") or {}).items():
        _check_entry(value, True, True, (str,), where, f"digests.{name}")


def check_row(row: Any, where: str) -> None:
    """RunFileError naming ``where`` (file:line) and the key unless ``row`` is a results row:
    an object with the keys every row has, of their types, and the labels its scope needs."""
    _check_object(row, where, "the row")
    check_keys(row, ROW_KEYS, where)
    check_keys(row, ROW_OPTIONAL, where, required=False)
    if (row.get("ci_low") is None) != (row.get("ci_high") is None):
        raise RunFileError(f"{where}: 'ci_low' and 'ci_high' must both be numbers or both null")
    for key in SCOPE_LABELS.get(row["scope"], ()):
        if row[key] is None:
            raise RunFileError(f"{where}: a {row['scope']!r} row has no {key!r} label")
    check_values({k: row[k] for k in ROW_KEYS if isinstance(row[k], str)}, where)


def check_record(row: Any, where: str) -> None:
    """RunFileError naming ``where`` (file:line) unless ``row`` is a per-image outcome: an
    object with an ``id`` and ``recognized_clean`` / ``recognized_protected`` true or false."""
    _check_object(row, where, "the record")
    check_keys(row, RECORD_KEYS, where)
    if isinstance(row["id"], str):
        check_values({"id": row["id"]}, where)


def check_quality(row: Any, where: str) -> None:
    """RunFileError naming ``where`` (file:line) unless ``row`` is a per-image quality row: an
    object with an ``id`` and each metric's value a finite number or null."""
    _check_object(row, where, "the record")
    check_keys(row, {"id": (str, int)}, where)
    check_keys(row, {k: (float, _NONE) for k in row if k != "id"}, where)
