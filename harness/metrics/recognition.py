"""The recognition metrics: what the platform's recognizers achieve, as shares with Wilson
intervals.

Fooling rate follows Oh, Fritz and Schiele (ICCV 2017) and Rajabi et al. (PETS 2021, §6): among
probes the recognizer gets right when clean, the share it gets wrong after protection (and the
platform's counter-attack).
"""

from __future__ import annotations

from typing import ClassVar

from harness.api.contracts import Metric, MetricRole, MetricScope, MetricValue, PairedTest
from harness.api.records import CellRecords, RecognizerRecords
from harness.metrics.stats import paired_difference_interval, wilson_interval


def proportion(successes: int, n: int, note: str = "") -> MetricValue:
    """A proportion with its Wilson 95% interval; value None when n = 0."""
    if n == 0:
        return MetricValue(None, 0, None, None, note or "no eligible images")
    lo, hi = wilson_interval(successes, n)
    return MetricValue(successes / n, n, lo, hi, note)


class FoolingRate(Metric):
    """Among probes recognised when clean, the share not recognised after protection.

    n = number of probes recognised when clean; 95% Wilson interval.
    """

    display_order: ClassVar[int] = 10

    scope: ClassVar[MetricScope] = "cell"
    higher_is_better = True
    role: ClassVar[MetricRole] = "privacy"
    paired_test: ClassVar[PairedTest] = "mcnemar"

    def compute(self, records: CellRecords) -> MetricValue:
        eligible = records.recognized_clean
        fooled = eligible & ~records.recognized_protected
        return proportion(int(fooled.sum()), int(eligible.sum()))


class RecognitionRate(Metric):
    """Share of all probes the platform recognises after protection (accuracy, or a link to
    the right gallery entry)."""

    display_order: ClassVar[int] = 20

    scope: ClassVar[MetricScope] = "cell"
    higher_is_better = False
    role: ClassVar[MetricRole] = "recognition"
    kinds: ClassVar[tuple[str, ...]] = ("identifier", "classifier")

    def compute(self, records: CellRecords) -> MetricValue:
        r = records.recognized_protected
        return proportion(int(r.sum()), len(r))


class AccuracyDrop(Metric):
    """Accuracy on clean probes minus accuracy on the same probes protected (a share; positive
    = the protection costs the recognizer accuracy), with the Bonett-Price paired interval. For a
    conceal suite's target this is what the owner's trusted service loses (Ye et al., ACM
    MMSys 2022, §4.2: most pairs lose under 5 points). n = probes."""

    display_order: ClassVar[int] = 25

    scope: ClassVar[MetricScope] = "cell"
    higher_is_better = False
    role: ClassVar[MetricRole] = "utility_loss"
    kinds: ClassVar[tuple[str, ...]] = ("identifier", "classifier")
    objectives: ClassVar[tuple[str, ...]] = ("conceal",)

    def compute(self, records: CellRecords) -> MetricValue:
        clean, prot = records.recognized_clean, records.recognized_protected
        n = len(clean)
        if n == 0:
            return MetricValue(None, 0, None, None, "no probes")
        diff, lo, hi = paired_difference_interval(
            int((clean & prot).sum()),
            int((clean & ~prot).sum()),
            int((~clean & prot).sum()),
            int((~clean & ~prot).sum()),
        )
        return MetricValue(diff, n, lo, hi)


class DetectionRate(Metric):
    """Share of protected probes in which the detector still finds a face (detectors only)."""

    display_order: ClassVar[int] = 30

    scope: ClassVar[MetricScope] = "cell"
    higher_is_better = False
    role: ClassVar[MetricRole] = "detection"
    kinds: ClassVar[tuple[str, ...]] = ("detector",)

    def compute(self, records: CellRecords) -> MetricValue:
        d = records.detected_protected
        return proportion(int(d.sum()), len(d))


class CleanRecognitionRate(Metric):
    """Share of clean probes the recognizer gets right: the baseline every fooling rate is
    measured against."""

    display_order: ClassVar[int] = 40

    scope: ClassVar[MetricScope] = "recognizer"
    higher_is_better = True
    role: ClassVar[MetricRole] = "clean"

    def compute(self, records: RecognizerRecords) -> MetricValue:
        r = records.recognized_clean
        return proportion(int(r.sum()), len(r))


class FalseDetectionRate(Metric):
    """Share of clean negatives (non-faces) in which a detector finds a face."""

    display_order: ClassVar[int] = 50

    scope: ClassVar[MetricScope] = "recognizer"
    higher_is_better = False
    role: ClassVar[MetricRole] = "clean"
    kinds: ClassVar[tuple[str, ...]] = ("detector",)

    def compute(self, records: RecognizerRecords) -> MetricValue:
        if records.detected_negatives is None:
            return MetricValue(None, 0, None, None, "the data set has no negatives")
        d = records.detected_negatives
        return proportion(int(d.sum()), len(d))
