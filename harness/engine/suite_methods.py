"""A suite's method entries (a name, or ``{name, params, label}``) validated against each
method's declared parameters, with parameter lists expanded into grids and labels made."""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass
from typing import Any

from harness.api.registry import METRICS, Registry
from harness.core.errors import ParamError, PluginError, UnknownNameError
from harness.core.limits import shorten
from harness.core.params import Param, suggest
from harness.core.yaml_lines import line_of
from harness.engine.suite_files import Source
from harness.engine.suite_model import METHOD_KEYS, MethodConfig
from harness.runs.folder import file_name_part


def methods(
    registry: Registry[Any], entries: Any, src: Source, field_name: str, grid: bool = True
) -> list[MethodConfig]:
    """Every config of the list ``entries`` (one per grid point), labels unique."""
    if not isinstance(entries, list) or not entries:
        raise src.error(
            f"expected a non-empty list of {registry.kind} names or mappings "
            f"({', '.join(METHOD_KEYS)})",
            field_name=field_name,
        )
    out: list[MethodConfig] = []
    seen: dict[str, tuple[str, int]] = {}  # a label as file names hold it → (label, entry)
    for i, entry in enumerate(entries):
        where = f"{field_name}[{i}]" if grid else field_name
        for cfg in _method(registry, _Entry.of(registry, entry, src, where, entries, i), grid):
            _check_printable(src, entries, i, cfg.label, field_name)
            part = file_name_part(cfg.label)
            if part in seen:
                raise _same_label(src, field_name, entries, seen[part], (cfg.label, i))
            seen[part] = (cfg.label, i)
            out.append(cfg)
    return out


def _check_printable(src: Source, entries: list[Any], i: int, label: str, field_name: str) -> None:
    """A label is printed on terminals and drawn in reports: a control character in it (an
    escape sequence, a bell, NUL) is refused rather than sent to someone's terminal."""
    bad = next((c for c in label if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise src.error(
            f"the label {shorten(ascii(label), 120)} holds the control character "
            f"U+{ord(bad):04X}; labels are printable text",
            entries,
            i,
            f"{field_name}[{i}]",
        )


def _same_label(
    src: Source,
    field_name: str,
    entries: list[Any],
    first: tuple[str, int],
    second: tuple[str, int],
) -> Exception:
    """Two labels of one list that are the same, or the same as file names hold them."""
    (a, i), (b, j) = first, second
    at = f" (line {line})" if (line := line_of(entries, i)) is not None else ""
    what = (
        f"two entries share the label {a!r}"
        if a == b
        else f"the labels {a!r}{at} and {b!r} differ only in characters a file name cannot "
        f"hold (both are {file_name_part(a)!r})"
    )
    return src.error(f"{what}; give one a distinct 'label'", entries, j, f"{field_name}[{j}]")


def metrics(value: Any, src: Source, objective: str = "evade") -> list[MethodConfig]:
    """The suite's metrics; when it names none, every metric that is on by default for its
    objective and loads, in display order."""
    if value is None:
        found = METRICS.loadable()  # a plugin metric that cannot load is reported and skipped
        names = sorted(
            (n for n, cls in found.items() if cls.by_default and objective in cls.objectives),
            key=lambda n: (found[n].display_order, n),
        )
        return [MethodConfig(n, METRICS.resolve(n, {}), n) for n in names]
    return methods(METRICS, value, src, "metrics")


@dataclass
class _Entry:
    """One method entry as a mapping, and where its name sits (for errors)."""

    entry: dict[str, Any]
    container: Any
    key: Any
    src: Source
    where: str

    @classmethod
    def of(
        cls, registry: Registry[Any], entry: Any, src: Source, where: str, parent: Any, index: int
    ) -> _Entry:
        if isinstance(entry, str):
            return cls({"name": entry}, parent, index, src, where)
        if not isinstance(entry, dict):
            raise src.error(
                f"expected a {registry.kind} name or a mapping, got {entry!r}", parent, index, where
            )
        for k in entry:
            if k not in METHOD_KEYS:
                raise src.error(
                    f"unknown key{suggest(str(k), list(METHOD_KEYS))}; valid keys: "
                    f"{', '.join(METHOD_KEYS)}",
                    entry,
                    k,
                    f"{where}.{k}",
                )
        if "name" not in entry:
            raise src.error(
                f"missing 'name'; valid {registry.kind}s: {', '.join(registry.names())}",
                entry,
                "__self__",
                where,
            )
        return cls(entry, entry, "name", src, where)

    def name(self, registry: Registry[Any]) -> str:
        name = self.entry["name"]
        if not isinstance(name, str) or name not in registry:
            msg = (
                registry.unknown_message(name)
                if isinstance(name, str)
                else f"expected a {registry.kind} name"
            )
            raise self.src.error(msg, self.container, self.key, f"{self.where}.name")
        return name

    def params(self) -> dict[str, Any]:
        given = self.entry.get("params", {}) or {}
        if not isinstance(given, dict):
            raise self.src.error(
                "expected a mapping of parameter names to values",
                self.entry,
                "params",
                f"{self.where}.params",
            )
        return given

    def label(self) -> str | None:
        label = self.entry.get("label")
        if label is not None and not isinstance(label, str):
            raise self.src.error("expected a string", self.entry, "label", f"{self.where}.label")
        return label

    def declared(self, registry: Registry[Any], name: str) -> dict[str, Param]:
        try:
            return registry.params_of(name)
        except (UnknownNameError, PluginError) as exc:
            raise self.src.error(str(exc), self.container, self.key, f"{self.where}.name") from None


def _method(registry: Registry[Any], entry: _Entry, grid: bool) -> list[MethodConfig]:
    """The configs of one entry: one per point of its grid, each validated and labelled."""
    name = entry.name(registry)
    given = entry.params()
    label = entry.label()
    declared = entry.declared(registry, name)
    combos = _expand(given, declared) if grid else [dict(given)]
    varies = [k for k in combos[0] if any(c[k] != combos[0][k] for c in combos)]
    configs = []
    for combo in combos:
        try:
            resolved = registry.resolve(name, combo)
        except ParamError as exc:
            raise _param_error(entry, given, combo, exc) from None
        text = label or _default_label(name, combo)
        if label and len(combos) > 1:  # a labelled grid: the label and what varies
            varying = {k: combo[k] for k in varies}
            text = f"{label}({_format_params(varying)})"
        configs.append(MethodConfig(name=name, params=resolved, label=text))
    return configs


def _param_error(
    entry: _Entry, given: dict[str, Any], combo: dict[str, Any], exc: ParamError
) -> Exception:
    """A parameter's error at the line of that parameter, else of ``params``."""
    bad = _param_in_message(str(exc), combo)
    return entry.src.error(
        str(exc).split(": ", 1)[-1] if bad else str(exc),
        given if bad in given else entry.entry,
        bad or "params",
        f"{entry.where}.params.{bad}" if bad else f"{entry.where}.params",
    )


def _param_in_message(message: str, combo: dict[str, Any]) -> str | None:
    for key in combo:
        if f".{key}:" in message or f"parameter {key!r}" in message:
            return key
    return None


def _axis(value: Any, param: Param | None) -> list[Any] | None:
    """The values of a grid axis when ``value`` is one (a list given for a parameter that is
    not a list, or a list of lists for one that is), else None."""
    is_list_param = param is not None and param.type is list
    if isinstance(value, list) and (
        not is_list_param or (value and all(isinstance(v, list) for v in value))
    ):
        return list(value)
    return None


def _expand(given: dict[str, Any], declared: dict[str, Param]) -> list[dict[str, Any]]:
    """Cartesian product over parameters given as lists (unless the parameter is a list)."""
    keys, choices = [], []
    for key, value in given.items():
        axis = _axis(value, declared.get(key))
        if axis is not None and not axis:
            return [dict(given)]  # an empty grid: let validation report the empty value
        keys.append(key)
        choices.append(axis if axis is not None else [value])
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*choices)] or [{}]


def grid_size(registry: Registry[Any], entries: Any) -> int:
    """How many configs the method list ``entries`` expands into, by multiplying the lengths
    of each entry's grid axes (nothing is expanded). An entry :func:`methods` will refuse
    counts as one."""
    if not isinstance(entries, list):
        return 1
    total = 0
    for entry in entries:
        size = 1
        if isinstance(entry, dict) and isinstance(entry.get("params"), dict):
            name = entry.get("name")
            try:
                declared = registry.params_of(name) if isinstance(name, str) else {}
            except UnknownNameError:
                declared = {}
            for key, value in entry["params"].items():
                size *= len(_axis(value, declared.get(key)) or [None])
        total += size
    return total


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _default_label(name: str, given: dict[str, Any]) -> str:
    return f"{name}({_format_params(given)})" if given else name
