"""Checks of metrics: a value with its sample size and a consistent interval from records of
the metric's scope, None (never NaN, never an exception) without data, and per-image quality
values that rate an image against itself at least as well as against a changed copy."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from harness.api.contracts import MetricValue, QualityMetric
from harness.api.records import CellRecords, DefenseRecords, RecognizerRecords
from harness.api.testing.case import Case

# An interval's ends come from another float64 expression than the value (Wilson's centre ±
# margin): where they coincide with it (a proportion of 0 or 1) they may differ by a few ulps.
ENDS_SLACK = 1e-12


def records(scope: str, key: str, n: int, seed: int = 0, quality: Any = None) -> Any:
    """Seeded records of ``scope`` for ``n`` photos (n = 0: empty ones)."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i}" for i in range(n)]
    if scope == "cell":
        labels = rng.integers(0, 3, n).astype(np.int64)
        clean = np.where(rng.random(n) < 0.8, labels, -1).astype(np.int64)
        prot = np.where(rng.random(n) < 0.5, labels, (labels + 1) % 3).astype(np.int64)
        return CellRecords(ids, labels, clean, prot, clean == labels, prot == labels)
    if scope == "recognizer":
        negatives = rng.random(n) < 0.2 if n else None
        return RecognizerRecords(rng.random(n) < 0.7, negatives, "detector")
    if n == 0:
        return DefenseRecords([])
    timing = {
        "ms_per_image": list(rng.uniform(1.0, 3.0, 3)),
        "batch_images": n,
        "measured_at": "2024-01-01T00:00:00Z",
        "host": "conformance",
        "cached": False,
    }
    report = {"learn_seconds": 2.5, "artefact_bytes": 4096.0, "box_bytes": 64.0}
    report |= {"reached_p": 1.0, "fooled_share": 0.75, "target_share": 0.7, "learn_images": 8.0}
    values = quality if quality is not None else rng.uniform(0.5, 1.0, n)
    return DefenseRecords(ids, {key: np.asarray(values)}, timing, (32, 32), report)


def assert_value(case: Case, v: Any) -> None:
    """A MetricValue: n a count ≥ 0; a finite value with n ≥ 1, or None; ends around the
    value; a coverage in (0, 1]; JSON-ready extras."""
    where = f"{case.id}: compute"
    assert isinstance(v, MetricValue), f"{where} returned a {type(v).__name__}"
    assert isinstance(v.n, (int, np.integer)) and v.n >= 0, f"{where}: n = {v.n!r}"
    assert 0.0 < v.ci_level <= 1.0, f"{where}: ci_level {v.ci_level}"
    json.dumps(v.extra)
    if v.value is None:
        assert v.ci_low is None and v.ci_high is None, f"{where}: an interval without a value"
        return
    assert math.isfinite(float(v.value)) and v.n >= 1, f"{where}: value {v.value} with n {v.n}"
    slack = ENDS_SLACK * max(1.0, abs(float(v.value)))
    if v.ci_low is not None:
        assert v.ci_low <= v.value + slack, f"{where}: ci_low {v.ci_low} > value {v.value}"
    if v.ci_high is not None:
        assert v.value <= v.ci_high + slack, f"{where}: value {v.value} > ci_high {v.ci_high}"


def _noisy_pair(case: Case) -> tuple[Any, Any]:
    import torch

    images, _ = case.inputs()
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(case.seed))
    return images, (images + 0.2 * (noise - 0.5)).clamp(0.0, 1.0)


def check_metric_value(case: Case) -> None:
    """Records of the metric's scope give a well-formed MetricValue, the same one twice."""
    metric = case()
    metric.key = case.label or case.name
    quality = None
    if isinstance(metric, QualityMetric):
        quality = metric.per_image(*_noisy_pair(case))
    made = [records(metric.scope, metric.key, 12, case.seed, quality) for _ in range(2)]
    values = [metric.compute(r) for r in made]
    assert_value(case, values[0])
    assert values[0] == values[1], f"{case.id}: equal records gave {values[0]} and {values[1]}"


def check_metric_without_data(case: Case) -> None:
    """Empty records give value None and n = 0."""
    metric = case()
    metric.key = case.label or case.name
    value = metric.compute(records(metric.scope, metric.key, 0))
    assert_value(case, value)
    assert value.value is None and value.n == 0, f"{case.id}: without data it gave {value}"


def is_quality_metric(case: Case) -> bool:
    return issubclass(case.method_class, QualityMetric)


def check_quality_values(case: Case) -> None:
    """per_image gives finite float64 [B] for a photo and a changed copy, and for a photo and
    itself."""
    metric = case()
    images, noisy = _noisy_pair(case)
    for v in (metric.per_image(images, noisy), metric.per_image(images, images.clone())):
        assert isinstance(v, np.ndarray) and v.dtype == np.float64, f"{case.id}: {type(v)}"
        assert v.shape == (len(images),) and np.isfinite(v).all(), f"{case.id}: per_image {v}"


def compares_with_the_original(case: Case) -> bool:
    return is_quality_metric(case) and case.declares("full_reference", default=True)


def check_identical_photos_rate_best(case: Case) -> None:
    """Full-reference quality: a photo compared with itself rates at least as well as
    compared with a noisy copy (noise of ±0.1, far above any rounding)."""
    metric = case()
    images, noisy = _noisy_pair(case)
    changed = metric.per_image(images, noisy)
    same = metric.per_image(images, images.clone())
    better = same >= changed if metric.higher_is_better else same <= changed
    assert better.all(), f"{case.id}: rates x against itself {same}, against noise {changed}"
