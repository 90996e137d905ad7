"""Suites: YAML files that say what to evaluate, validated before anything runs.

Schema (top level)::

    name: quickstart                # default: the file's stem
    description: ...
    include: [base.yaml]            # other suites, relative to this file; their keys are
                                    # defaults, and a key set here replaces the included one
    seed: 0
    device: auto                    # auto | cpu | cuda | cuda:N
    objective: evade                # evade: machines fail, people see; conceal: the
                                    # reverse, one trusted target model must still work
    target_drop_tolerance: 0.05     # conceal: the most target accuracy a ranked defense may
                                    # lose (a share; 0.05 = 5 points)
    quality_floor: {metric: ssim, min: 0.5}   # evade: a defense config whose mean quality is
                                    # below this is listed but not ranked (default: none)
    dataset: {name: lfw-subset, params: {...}}
    recognizers: [sface, {name: small-cnn, params: {epochs: 30}}]
    defenses: [none, {name: naive-overlay, params: {alpha: [0.3, 0.45]}, label: overlay}]
    counter_attacks: [none, {name: jpeg, params: {quality: 75}}]
    metrics: [fooling_rate, ssim,   # default: every registered metric with default params,
                                    # except those that need weights (nima)
              {name: recovery_psnr, params: {jpeg_quality: [95, 75]}}]
    upload: {format: png}           # png | jpeg (with quality) | rgb565 (5/6/5 bits, then
                                    # PNG: how the protective U-Net's phone app stored photos)
    batch_size: 64
    precision: fp32                 # fp32 | bf16 | fp16: autocast for torch recognizers

A method entry is a name or a mapping with ``name``, ``params`` and optional ``label``. A list
given for a parameter whose declared type is not a list expands into a grid (Cartesian product).
Every error names the file, the line and what would be valid.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS, Registry
from harness.core.errors import ParamError, SuiteError, UnknownNameError
from harness.core.params import Param, suggest
from harness.core.yaml_lines import LineDict, line_of, load_yaml

TOP_LEVEL = (
    "name",
    "description",
    "include",
    "seed",
    "device",
    "objective",
    "dataset",
    "recognizers",
    "defenses",
    "counter_attacks",
    "metrics",
    "upload",
    "batch_size",
    "precision",
    "target_drop_tolerance",
    "quality_floor",
)
REQUIRED = ("dataset", "recognizers", "defenses")
METHOD_KEYS = ("name", "params", "label")
OBJECTIVES = ("evade", "conceal")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

SCALARS: dict[str, Param] = {
    "seed": Param(int, 0, "master seed of the run", low=0),
    "batch_size": Param(int, 64, "images per batch", low=1, high=100000),
    "precision": Param(
        str,
        "fp32",
        "torch recognizers run under autocast unless fp32",
        choices=("fp32", "bf16", "fp16"),
    ),
    "target_drop_tolerance": Param(
        float,
        0.05,
        "conceal suites: the largest drop of the target's accuracy (a share) for a defense to "
        "be ranked",
        low=0.0,
        high=1.0,
    ),
}
UPLOAD: dict[str, Param] = {
    "format": Param(
        str, "png", "how protected photos are uploaded", choices=("png", "jpeg", "rgb565")
    ),
    "quality": Param(int, 95, "JPEG quality when format is jpeg", low=1, high=100),
}
QUALITY_FLOOR: dict[str, Param] = {
    "metric": Param(str, "ssim", "a defense-scope quality metric of the suite (ssim, psnr, nima)"),
    "min": Param(float, 0.5, "the lowest mean value of that metric a ranked defense may have"),
}


@dataclass(frozen=True)
class MethodConfig:
    """One fully resolved method: registry name, every parameter (defaults filled), a label."""

    name: str
    params: dict[str, Any]
    label: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (used in manifests and cache keys)."""
        return {"name": self.name, "params": self.params, "label": self.label}


@dataclass
class Suite:
    """A validated, expanded suite."""

    name: str
    path: str
    sha256: str
    description: str
    seed: int
    device: str
    objective: str
    dataset: MethodConfig
    recognizers: list[MethodConfig]
    defenses: list[MethodConfig]
    counter_attacks: list[MethodConfig]
    metrics: list[MethodConfig]
    upload: dict[str, Any]
    batch_size: int
    precision: str = "fp32"
    target_drop_tolerance: float = 0.05
    quality_floor: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    smoke: bool = False  # cut by harness.engine.smoke: a code-path check, not a measurement

    def resolved(self) -> dict[str, Any]:
        """The resolved configuration written into the manifest."""
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "device": self.device,
            "objective": self.objective,
            "dataset": self.dataset.as_dict(),
            "recognizers": [m.as_dict() for m in self.recognizers],
            "defenses": [m.as_dict() for m in self.defenses],
            "counter_attacks": [m.as_dict() for m in self.counter_attacks],
            "metrics": [m.as_dict() for m in self.metrics],
            "upload": self.upload,
            "batch_size": self.batch_size,
            "precision": self.precision,
            **(
                {"target_drop_tolerance": self.target_drop_tolerance}
                if self.objective == "conceal"
                else {}
            ),
            **({"quality_floor": self.quality_floor} if self.quality_floor else {}),
            **({"smoke": True} if self.smoke else {}),
        }

    @property
    def n_cells(self) -> int:
        """Number of (defense config, counter-attack, recognizer) cells."""
        return len(self.defenses) * len(self.counter_attacks) * len(self.recognizers)


class _Source:
    """Where a piece of the merged suite came from, for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(
        self, message: str, container: Any = None, key: Any = None, field_name: str | None = None
    ) -> SuiteError:
        line = line_of(container, key) if container is not None else None
        if line is None and container is not None:
            line = line_of(container, "__self__")
        return SuiteError(message, path=self.path, line=line, field=field_name)


def _read(
    path: Path, stack: tuple[Path, ...]
) -> tuple[dict[str, Any], dict[str, _Source], list[str], list[Path]]:
    """Read ``path`` and its includes; return merged top level, origin of each key, texts, files."""
    if not path.is_file():
        where = f" (included from {stack[-1]})" if stack else ""
        raise SuiteError(f"suite file not found{where}", path=str(path))
    if path.resolve() in [p.resolve() for p in stack]:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise SuiteError(f"include cycle: {chain}", path=str(path))
    text = path.read_text(encoding="utf-8")
    data = load_yaml(text, str(path))
    src = _Source(str(path))
    if data is None:
        raise SuiteError("the suite is empty", path=str(path))
    if not isinstance(data, dict):
        raise src.error(
            f"a suite must be a mapping of keys ({', '.join(TOP_LEVEL)}), got {type(data).__name__}"
        )
    for key in data:
        if key not in TOP_LEVEL:
            raise src.error(
                f"unknown key{suggest(str(key), list(TOP_LEVEL))}; valid keys: "
                f"{', '.join(TOP_LEVEL)}",
                data,
                key,
                str(key),
            )
    merged: dict[str, Any] = {}
    origins: dict[str, _Source] = {}
    texts: list[str] = []
    files: list[Path] = []
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise src.error("expected a file name or a list of file names", data, "include", "include")
    for inc in includes:
        sub, sub_origins, sub_texts, sub_files = _read(path.parent / inc, (*stack, path))
        merged.update(sub)
        origins.update(sub_origins)
        texts.extend(sub_texts)
        files.extend(sub_files)
    for key, value in data.items():
        if key == "include":
            continue
        merged[key] = value
        origins[key] = src
    merged["__top__"] = data
    origins["__top__"] = src
    texts.append(text)
    files.append(path)
    return merged, origins, texts, files


def load_suite(path: str | Path) -> Suite:
    """Read, validate and expand a suite; SuiteError (file, line, field) on any problem."""
    path = Path(path)
    merged, origins, texts, files = _read(path, ())
    top = merged.pop("__top__")
    top_src = origins.pop("__top__")
    for key in REQUIRED:
        if key not in merged:
            raise top_src.error(f"missing required key {key!r}", top, "__self__", key)

    def scalar(key: str) -> Any:
        src = origins.get(key, top_src)
        try:
            return SCALARS[key].validate(key, merged.get(key, SCALARS[key].default))
        except ParamError as exc:
            raise src.error(
                str(exc).split(": ", 1)[-1], top if src is top_src else None, key, key
            ) from None

    name = merged.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise origins.get("name", top_src).error(
            "expected letters, digits, '.', '_' or '-' (it names the results folder)",
            field_name="name",
        )
    description = merged.get("description", "")
    if not isinstance(description, str):
        raise origins["description"].error("expected a string", field_name="description")
    device = merged.get("device", "auto")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise origins["device"].error(
            f"{device!r} is not valid; use auto, cpu, cuda or cuda:N", field_name="device"
        )
    objective = merged.get("objective", "evade")
    if objective not in OBJECTIVES:
        raise origins["objective"].error(
            f"{objective!r} is not valid; valid: {', '.join(OBJECTIVES)}",
            field_name="objective",
        )

    dataset = _methods(DATASETS, [merged["dataset"]], origins["dataset"], "dataset", grid=False)
    recognizers = _methods(
        RECOGNIZERS, merged["recognizers"], origins["recognizers"], "recognizers"
    )
    defenses = _methods(DEFENSES, merged["defenses"], origins["defenses"], "defenses")
    attacks_raw = merged.get("counter_attacks", ["none"])
    counter_attacks = _methods(
        ATTACKS, attacks_raw, origins.get("counter_attacks", top_src), "counter_attacks"
    )
    for d in defenses:
        obj = getattr(DEFENSES.get(d.name), "objective", "evade")
        if obj not in (objective, "any"):
            raise origins["defenses"].error(
                f"defense {d.name!r} has objective {obj!r} but the suite's objective is "
                f"{objective!r}",
                field_name="defenses",
            )
    _check_roles(defenses, recognizers, origins["defenses"])
    _check_scores(counter_attacks, recognizers, origins.get("counter_attacks", top_src))
    if objective == "conceal" and "none" not in [a.name for a in counter_attacks]:
        raise origins.get("counter_attacks", top_src).error(
            "a conceal suite needs the 'none' counter-attack: the trusted target classifies "
            "the upload as it is",
            field_name="counter_attacks",
        )
    metrics = _metrics(merged.get("metrics"), origins.get("metrics", top_src), objective)
    upload = _upload(merged.get("upload", {}), origins.get("upload", top_src))
    floor = None
    if merged.get("quality_floor") is not None:
        floor = _quality_floor(
            merged["quality_floor"], origins.get("quality_floor", top_src), metrics, objective
        )
    return Suite(
        name=name,
        path=str(path),
        sha256=hashlib.sha256("\0".join(texts).encode()).hexdigest(),
        description=description,
        seed=scalar("seed"),
        device=device,
        objective=objective,
        dataset=dataset[0],
        recognizers=recognizers,
        defenses=defenses,
        counter_attacks=counter_attacks,
        metrics=metrics,
        upload=upload,
        batch_size=scalar("batch_size"),
        precision=scalar("precision"),
        target_drop_tolerance=scalar("target_drop_tolerance"),
        quality_floor=floor,
        files=[str(f) for f in files],
    )


def _check_roles(
    defenses: list[MethodConfig], recognizers: list[MethodConfig], src: _Source
) -> None:
    """Recognizers a defense names by role (protective U-Net's target and auxiliary) must be
    classifiers of this suite, named by label."""
    kinds = {r.label: RECOGNIZERS.get(r.name).kind for r in recognizers}
    for d in defenses:
        for role, label in DEFENSES.get(d.name).recognizer_roles(d.params).items():
            if label is None:
                continue
            if label not in kinds:
                raise src.error(
                    f"defense {d.label!r}: {role} {label!r} is not a recognizer label of this "
                    f"suite{suggest(label, list(kinds))}; labels: {', '.join(kinds)}",
                    field_name=f"defenses.{d.name}.params.{role}",
                )
            if kinds[label] != "classifier":
                raise src.error(
                    f"defense {d.label!r}: {role} {label!r} is a {kinds[label]}; it must be a "
                    "classifier",
                    field_name=f"defenses.{d.name}.params.{role}",
                )


def _check_scores(
    attacks: list[MethodConfig], recognizers: list[MethodConfig], src: _Source
) -> None:
    """A counter-attack that pools class scores needs recognizers that have them."""
    lacking = [r for r in recognizers if not RECOGNIZERS.get(r.name).has_scores()]
    for a in attacks:
        if not lacking or not ATTACKS.get(a.name).needs_scores:
            continue
        having = [r.label for r in recognizers if r not in lacking]
        named = ", ".join(f"{r.label} (a {RECOGNIZERS.get(r.name).kind})" for r in lacking)
        raise src.error(
            f"counter-attack {a.label!r} sums the recognizer's class scores over processed "
            f"copies, and {named} has none; remove it from this suite or give the "
            f"counter-attack a suite of its own with recognizers that have scores"
            + (f" (here: {', '.join(having)})" if having else " (identifiers, classifiers)"),
            field_name="counter_attacks",
        )


def _methods(
    registry: Registry[Any], entries: Any, src: _Source, field_name: str, grid: bool = True
) -> list[MethodConfig]:
    if not isinstance(entries, list) or not entries:
        raise src.error(
            f"expected a non-empty list of {registry.kind} names or mappings "
            f"({', '.join(METHOD_KEYS)})",
            field_name=field_name,
        )
    out: list[MethodConfig] = []
    for i, entry in enumerate(entries):
        where = f"{field_name}[{i}]" if grid else field_name
        out.extend(_method(registry, entry, src, where, entries, i, grid))
    labels = [m.label for m in out]
    for label in labels:
        if labels.count(label) > 1:
            raise src.error(
                f"two entries share the label {label!r}; give one a distinct 'label'",
                field_name=field_name,
            )
    return out


def _method(
    registry: Registry[Any],
    entry: Any,
    src: _Source,
    where: str,
    parent: Any,
    index: int,
    grid: bool,
) -> list[MethodConfig]:
    if isinstance(entry, str):
        entry_map: dict[str, Any] = {"name": entry}
        container, key = parent, index
    elif isinstance(entry, dict):
        entry_map, container, key = entry, entry, "name"
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
    else:
        raise src.error(
            f"expected a {registry.kind} name or a mapping, got {entry!r}", parent, index, where
        )
    name = entry_map["name"]
    if not isinstance(name, str) or name not in registry:
        msg = (
            registry.unknown_message(name)
            if isinstance(name, str)
            else f"expected a {registry.kind} name"
        )
        raise src.error(msg, container, key, f"{where}.name")
    given = entry_map.get("params", {}) or {}
    if not isinstance(given, dict):
        raise src.error(
            "expected a mapping of parameter names to values",
            entry_map,
            "params",
            f"{where}.params",
        )
    label = entry_map.get("label")
    if label is not None and not isinstance(label, str):
        raise src.error("expected a string", entry_map, "label", f"{where}.label")
    try:
        declared = registry.params_of(name)
    except UnknownNameError as exc:
        raise src.error(str(exc), container, key, f"{where}.name") from None
    combos = _expand(given, declared) if grid else [dict(given)]
    configs = []
    for combo in combos:
        try:
            resolved = registry.resolve(name, combo)
        except ParamError as exc:
            bad = _param_in_message(str(exc), combo)
            raise src.error(
                str(exc).split(": ", 1)[-1] if bad else str(exc),
                given if bad in given else entry_map,
                bad or "params",
                f"{where}.params.{bad}" if bad else f"{where}.params",
            ) from None
        text = label or _default_label(name, combo)
        if label and len(combos) > 1:  # a labelled grid: the label and what varies
            varying = {k: v for k, v in combo.items() if any(c[k] != v for c in combos)}
            text = f"{label}({_format_params(varying)})"
        configs.append(MethodConfig(name=name, params=resolved, label=text))
    return configs


def _param_in_message(message: str, combo: dict[str, Any]) -> str | None:
    for key in combo:
        if f".{key}:" in message or f"parameter {key!r}" in message:
            return key
    return None


def _expand(given: dict[str, Any], declared: dict[str, Param]) -> list[dict[str, Any]]:
    """Cartesian product over parameters given as lists (unless the parameter is a list)."""
    keys, choices = [], []
    for key, value in given.items():
        param = declared.get(key)
        is_list_param = param is not None and param.type is list
        if isinstance(value, list) and (
            not is_list_param or (value and all(isinstance(v, list) for v in value))
        ):
            if not value:
                return [dict(given)]  # an empty grid: let validation report the empty value
            keys.append(key)
            choices.append(list(value))
        else:
            keys.append(key)
            choices.append([value])
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*choices)] or [{}]


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _default_label(name: str, given: dict[str, Any]) -> str:
    return f"{name}({_format_params(given)})" if given else name


def _metrics(value: Any, src: _Source, objective: str = "evade") -> list[MethodConfig]:
    if value is None:
        names = sorted(
            (
                n
                for n in METRICS.names()
                if METRICS.get(n).by_default and objective in METRICS.get(n).objectives
            ),
            key=lambda n: (getattr(METRICS.get(n), "display_order", 100), n),
        )
        return [MethodConfig(n, METRICS.resolve(n, {}), n) for n in names]
    return _methods(METRICS, value, src, "metrics")


def _upload(value: Any, src: _Source) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise src.error(
            "expected a mapping with 'format' (png, jpeg or rgb565) and 'quality'",
            field_name="upload",
        )
    for key in value:
        if key not in UPLOAD:
            raise src.error(
                f"unknown key{suggest(str(key), list(UPLOAD))}; valid keys: {', '.join(UPLOAD)}",
                value,
                key,
                f"upload.{key}",
            )
    out = {}
    for key, param in UPLOAD.items():
        try:
            out[key] = param.validate(f"upload.{key}", value.get(key, param.default))
        except ParamError as exc:
            raise src.error(str(exc).split(": ", 1)[-1], value, key, f"upload.{key}") from None
    return out


def _quality_floor(
    value: Any, src: _Source, metrics: list[MethodConfig], objective: str
) -> dict[str, Any]:
    """``quality_floor: {metric, min}``: the metric must be a quality metric the suite
    measures on each defense config (higher is better)."""
    if objective != "evade":
        raise src.error(
            "quality_floor applies to evade suites (people must still see the photo)",
            field_name="quality_floor",
        )
    if not isinstance(value, dict):
        raise src.error(
            "expected a mapping such as {metric: ssim, min: 0.5}", field_name="quality_floor"
        )
    out = {}
    for key in value:
        if key not in QUALITY_FLOOR:
            raise src.error(
                f"unknown key{suggest(str(key), list(QUALITY_FLOOR))}; valid keys: "
                f"{', '.join(QUALITY_FLOOR)}",
                value,
                key,
                f"quality_floor.{key}",
            )
    for key, param in QUALITY_FLOOR.items():
        try:
            out[key] = param.validate(f"quality_floor.{key}", value.get(key, param.default))
        except ParamError as exc:
            raise src.error(
                str(exc).split(": ", 1)[-1], value, key, f"quality_floor.{key}"
            ) from None
    usable = [
        m.label
        for m in metrics
        if (cls := METRICS.get(m.name)).scope == "defense"
        and cls.higher_is_better
        and cls.unit not in ("ms", "s", "B", "flag")
        and not getattr(cls, "recovery", False)
    ]
    if out["metric"] not in usable:
        valid = ", ".join(usable) or "none (add ssim to metrics)"
        raise src.error(
            f"{out['metric']!r} is not a quality metric of this suite"
            f"{suggest(out['metric'], usable)}; valid: {valid}",
            value,
            "metric",
            "quality_floor.metric",
        )
    return out


__all__ = ["LineDict", "MethodConfig", "Suite", "load_suite"]
