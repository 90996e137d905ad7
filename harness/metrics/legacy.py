"""The upgrade path for run folders written before metrics described themselves.

A run's manifest now holds each metric's declaration (:meth:`harness.api.contracts.Metric.
describe`: role, paired test, gate tolerance, display, headline) beside its scope, direction
and unit, and the boards read only that. A folder written before has scope, direction and unit
alone: :data:`BUILT_IN` gives the built-in metrics' declarations by name, and
:func:`declaration` derives one for any other metric from its scope and unit, as the boards
did then. This module is the one place in privbench that knows metrics by name.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from harness.api.contracts import NUMBER, PERCENT, MetricFormat

ONE_DECIMAL = MetricFormat(digits=1, delta_digits=2)


def _entry(
    role: str,
    test: str = "none",
    display: MetricFormat = PERCENT,
    tolerance: float | None = None,
    headline: bool = False,
) -> dict[str, Any]:
    return {
        "role": role,
        "paired_test": test,
        "gate_tolerance": tolerance,
        "display": asdict(display),
        "headline": headline,
    }


# The built-in metrics' declarations, as their classes make them (a test keeps them equal).
BUILT_IN: dict[str, dict[str, Any]] = {
    "fooling_rate": _entry("privacy", "mcnemar"),
    "recognition_rate": _entry("recognition"),
    "accuracy_drop": _entry("utility_loss"),
    "detection_rate": _entry("detection"),
    "clean_recognition_rate": _entry("clean"),
    "false_detection_rate": _entry("clean"),
    "ssim": _entry("quality", "bootstrap", NUMBER, 0.01, headline=True),
    "psnr": _entry("quality", "bootstrap", ONE_DECIMAL, 0.5),
    "nima": _entry("quality", "bootstrap", NUMBER),
    "nima_change": _entry("quality", "bootstrap", NUMBER),
    "recovery_ssim": _entry("recovery", "bootstrap", NUMBER),
    "recovery_psnr": _entry("recovery", "bootstrap", ONE_DECIMAL),
    "latency": _entry("cost", display=MetricFormat(unit_label="ms/img"), headline=True),
    "learning_time": _entry("cost", display=ONE_DECIMAL),
    "storage_per_image": _entry("cost", display=NUMBER),
    "reached_p": _entry("target", display=MetricFormat(style="flag")),
}

# What a cell outcome's fooled bits measure, named so when a suite lists no metric with the
# McNemar test (compare and check test the outcomes of every cell).
OUTCOME_METRIC = "fooling_rate"


def declaration(name: str, scope: str, unit: str) -> dict[str, Any]:
    """The declaration of metric ``name`` for a manifest that has none: the built-in one, or
    what the boards made of a metric by its scope and unit (rates of cells and recognizers in
    percent; defense values in numbers, one decimal for dB and seconds; 'flag' a yes/no target
    check)."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if scope in ("cell", "recognizer"):
        return _entry("other")
    if unit == "flag":
        return _entry("target", display=MetricFormat(style="flag"))
    display = ONE_DECIMAL if unit in ("dB", "s") else NUMBER
    if unit == "ms":
        display = MetricFormat(display.style, display.digits, display.delta_digits, "ms/img")
    return _entry("other", display=display)
