"""The cost metrics of a defense config: protect latency, learning time and storage, and
whether a learned defense reached its own target."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from harness.api.contracts import Metric, MetricFormat, MetricRole, MetricScope, MetricValue
from harness.api.records import DefenseRecords
from harness.metrics.stats import median_interval


class LearningTime(Metric):
    """Wall time the defense took to learn from the owner's data (local models and search),
    measured once when it was learned (a cached re-run reports that measurement)."""

    display_order: ClassVar[int] = 96

    scope: ClassVar[MetricScope] = "defense"
    higher_is_better = False
    role: ClassVar[MetricRole] = "cost"
    unit = "s"
    display: ClassVar[MetricFormat | None] = MetricFormat(digits=1, delta_digits=2)

    def compute(self, records: DefenseRecords) -> MetricValue:
        seconds = records.fit_report.get("learn_seconds")
        if seconds is None:
            return MetricValue(None, 0, None, None, "nothing to learn")
        return MetricValue(seconds, 1, None, None, "one measurement")


class StoragePerImage(Metric):
    """Bytes the owner must keep per protected image to recover it: the learned artefact
    shared over the protected images, plus per-image metadata (e.g. face boxes)."""

    display_order: ClassVar[int] = 97

    scope: ClassVar[MetricScope] = "defense"
    higher_is_better = False
    role: ClassVar[MetricRole] = "cost"
    unit = "B"

    def compute(self, records: DefenseRecords) -> MetricValue:
        report = records.fit_report
        if "artefact_bytes" not in report or not records.ids:
            return MetricValue(None, 0, None, None, "no stored artefact")
        total = report["artefact_bytes"] + report.get("box_bytes", 0.0)
        return MetricValue(total / len(records.ids), len(records.ids), None, None, "exact size")


class Latency(Metric):
    """Protect latency in ms per image: the median over timed batches of fresh images (ids never
    protected before, no cache I/O in the timer) after one warm-up batch, with an
    order-statistic interval whose real coverage is reported; CUDA is synchronised before each
    clock read. A timing reused from the cache says when and on what it was measured."""

    display_order: ClassVar[int] = 95

    scope: ClassVar[MetricScope] = "defense"
    higher_is_better = False
    role: ClassVar[MetricRole] = "cost"
    needs_timing: ClassVar[bool] = True
    unit = "ms"
    display: ClassVar[MetricFormat | None] = MetricFormat(unit_label="ms/img")
    headline: ClassVar[bool] = True
    parity: ClassVar[dict[str, Any]] = {
        "statistic": "median over batches",
        "warmup_batches": 1,
        "ids": "fresh per timed batch",
    }

    def compute(self, records: DefenseRecords) -> MetricValue:
        timing = records.timing
        t = np.asarray(timing.get("ms_per_image", []), dtype=np.float64)
        if len(t) == 0:
            return MetricValue(None, 0, None, None, "not timed")
        med, lo, hi, coverage = median_interval(t)
        extra = {
            "batch_images": timing["batch_images"],
            "measured_at": timing["measured_at"],
            "measured_on": timing["host"],
            "cached": timing["cached"],
        }
        notes = [f"median of {len(t)} timed batches of {timing['batch_images']} images"]
        if lo is None:
            notes.append("one timed batch: no interval")
        elif coverage < 0.95:
            notes.append(f"too few batches for 95%: the full range covers {100 * coverage:.2f}%")
        if timing["cached"]:
            notes.append(f"measured {timing['measured_at']}, reused from the cache")
        return MetricValue(med, len(t), lo, hi, "; ".join(notes), coverage, extra)


class ReachedTarget(Metric):
    """Whether a learned defense reached its own target on the owner's learning images (UEP:
    every local CNN fooled on at least a share p of them; Rajabi et al., PETS 2021, §5.1).
    1 = reached, 0 = not: the defense then fell back to its best attempt, which the leaderboard
    flags. n = learning images; the row also gives the fooled share and the target."""

    display_order: ClassVar[int] = 98

    scope: ClassVar[MetricScope] = "defense"
    higher_is_better = True
    role: ClassVar[MetricRole] = "target"
    unit = "flag"
    display: ClassVar[MetricFormat | None] = MetricFormat(style="flag")

    def compute(self, records: DefenseRecords) -> MetricValue:
        report = records.fit_report
        if "reached_p" not in report:
            return MetricValue(None, 0, None, None, "nothing learned towards a target")
        share, target = report.get("fooled_share"), report.get("target_share")
        n = int(report.get("learn_images", 0))
        return MetricValue(
            float(report["reached_p"]),
            n,
            None,
            None,
            f"fooled share {share:.3f} of {n} learning images; target {target}",
            extra={"fooled_share": share, "target_share": target},
        )
