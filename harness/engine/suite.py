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
    quality_floor: {metric: ssim, min: 0.5}   # evade: a defense config whose quality interval
                                    # does not clear this is listed, not ranked (default: none)
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
import re
from pathlib import Path
from typing import Any

from harness.api.registry import ATTACKS, DATASETS, DEFENSES, METRICS, RECOGNIZERS
from harness.core.errors import ParamError
from harness.core.limits import GRID_CELLS, shorten
from harness.core.paths import SEGMENT_RULE, segment_problem
from harness.core.yaml_lines import LineDict
from harness.engine.suite_checks import (
    check_conceal,
    check_objective,
    check_roles,
    check_scores,
    quality_floor,
    upload,
)
from harness.engine.suite_files import SuiteFiles, read_suite_files
from harness.engine.suite_methods import grid_size, methods, metrics
from harness.engine.suite_model import OBJECTIVES, REQUIRED, SCALARS, MethodConfig, Suite

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def load_suite(path: str | Path, max_cells: int | None = None) -> Suite:
    """Read, validate and expand a suite; SuiteError (file, line, field) on any problem,
    including a suite of more cells than ``max_cells`` (default: :data:`GRID_CELLS`)."""
    path = Path(path)
    read = read_suite_files(path)
    for key in REQUIRED:
        if key not in read.merged:
            raise read.top_source.error(f"missing required key {key!r}", read.top, "__self__", key)
    _check_size(read, GRID_CELLS.value(max_cells))
    name, description, device, objective = _identity(read, path)
    configs = _configs(read, objective)
    upload_settings = upload(read.merged.get("upload", {}), read.source("upload"))
    floor = None
    if read.merged.get("quality_floor") is not None:
        floor = quality_floor(
            read.merged["quality_floor"],
            read.source("quality_floor"),
            configs["metrics"],
            objective,
        )
    return Suite(
        name=name,
        path=str(path),
        sha256=hashlib.sha256("\0".join(read.texts).encode()).hexdigest(),
        description=description,
        seed=_scalar(read, "seed"),
        device=device,
        objective=objective,
        dataset=configs["dataset"][0],
        recognizers=configs["recognizers"],
        defenses=configs["defenses"],
        counter_attacks=configs["counter_attacks"],
        metrics=configs["metrics"],
        upload=upload_settings,
        batch_size=_scalar(read, "batch_size"),
        precision=_scalar(read, "precision"),
        target_drop_tolerance=_scalar(read, "target_drop_tolerance"),
        quality_floor=floor,
        files=[str(f) for f in read.files],
    )


_AXES = (("defenses", DEFENSES), ("counter_attacks", ATTACKS), ("recognizers", RECOGNIZERS))


def _check_size(read: SuiteFiles, limit: int) -> None:
    """SuiteError when the suite's cells (or its metric configs) number more than ``limit``,
    counted from the lengths of its grids before any grid is expanded."""
    merged = read.merged
    sizes = {f: grid_size(reg, merged.get(f, ["none"])) for f, reg in _AXES}
    cells = sizes["defenses"] * sizes["counter_attacks"] * sizes["recognizers"]
    hint = f"pass {GRID_CELLS.flag} (or set ${GRID_CELLS.env}) to raise it"
    if cells > limit:
        largest = max(sizes, key=lambda f: sizes[f])
        product = " × ".join(f"{f} ({n:,})" for f, n in sizes.items())
        src = read.source(largest)
        raise src.error(
            f"{product} = {cells:,} cells > {limit:,}; {hint}",
            read.top if src is read.top_source else None,
            largest,
            largest,
        )
    n_metrics = grid_size(METRICS, merged.get("metrics"))
    if n_metrics > limit:
        raise read.source("metrics").error(
            f"{n_metrics:,} metric configs > {limit:,}; {hint}", field_name="metrics"
        )


def _scalar(read: SuiteFiles, key: str) -> Any:
    """A scalar setting (seed, batch size, precision, tolerance), validated."""
    src = read.source(key)
    try:
        return SCALARS[key].validate(key, read.merged.get(key, SCALARS[key].default))
    except ParamError as exc:
        container = read.top if src is read.top_source else None
        raise src.error(str(exc).split(": ", 1)[-1], container, key, key) from None


def _identity(read: SuiteFiles, path: Path) -> tuple[str, str, str, str]:
    """The suite's name (the file's stem by default), description, device and objective."""
    merged = read.merged
    name = merged.get("name", path.stem)
    problem = segment_problem(name)
    if problem is not None:
        raise read.source("name").error(
            f"{shorten(repr(name), 160)} is not {SEGMENT_RULE} ({problem}); it names the "
            "suite's folder under the results root",
            field_name="name",
        )
    description = merged.get("description", "")
    if not isinstance(description, str):
        raise read.origins["description"].error("expected a string", field_name="description")
    device = merged.get("device", "auto")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise read.origins["device"].error(
            f"{device!r} is not valid; use auto, cpu, cuda or cuda:N", field_name="device"
        )
    objective = merged.get("objective", "evade")
    if objective not in OBJECTIVES:
        raise read.origins["objective"].error(
            f"{objective!r} is not valid; valid: {', '.join(OBJECTIVES)}",
            field_name="objective",
        )
    return name, description, device, objective


def _configs(read: SuiteFiles, objective: str) -> dict[str, list[MethodConfig]]:
    """The data set, recognizers, defenses, counter-attacks and metrics, each validated and
    expanded, and checked against each other."""
    merged, origins = read.merged, read.origins
    attacks_src = read.source("counter_attacks")
    out = {
        "dataset": methods(DATASETS, [merged["dataset"]], origins["dataset"], "dataset", False),
        "recognizers": methods(
            RECOGNIZERS, merged["recognizers"], origins["recognizers"], "recognizers"
        ),
        "defenses": methods(DEFENSES, merged["defenses"], origins["defenses"], "defenses"),
        "counter_attacks": methods(
            ATTACKS, merged.get("counter_attacks", ["none"]), attacks_src, "counter_attacks"
        ),
    }
    check_objective(out["defenses"], objective, origins["defenses"])
    check_roles(out["defenses"], out["recognizers"], origins["defenses"])
    check_scores(out["counter_attacks"], out["recognizers"], attacks_src)
    check_conceal(out["counter_attacks"], objective, attacks_src)
    out["metrics"] = metrics(merged.get("metrics"), read.source("metrics"), objective)
    return out


__all__ = ["LineDict", "MethodConfig", "Suite", "load_suite"]
