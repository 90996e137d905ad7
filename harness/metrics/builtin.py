"""The built-in metrics. Each declares its scope, direction and parity settings.

Fooling rate follows Oh, Fritz and Schiele (ICCV 2017) and Rajabi et al. (PETS 2021, §6): among
probes the recognizer gets right when clean, the share it gets wrong after protection (and the
platform's counter-attack). SSIM has one pinned definition: Gaussian 11×11 window, σ 1.5, K = (0.01,
0.03), data range 1, no padding, mean over RGB (Wang et al. 2004; pytorch-msssim; equal to
scikit-image's ``structural_similarity`` with gaussian_weights, σ 1.5 and population covariance).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import Metric, MetricScope, MetricValue, QualityMetric
from harness.api.records import CellRecords, DefenseRecords, RecognizerRecords
from harness.core.params import Param
from harness.metrics.stats import (
    mean_interval,
    median_interval,
    paired_difference_interval,
    wilson_interval,
)


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

    def compute(self, records: RecognizerRecords) -> MetricValue:
        r = records.recognized_clean
        return proportion(int(r.sum()), len(r))


class FalseDetectionRate(Metric):
    """Share of clean negatives (non-faces) in which a detector finds a face."""

    display_order: ClassVar[int] = 50

    scope: ClassVar[MetricScope] = "recognizer"
    higher_is_better = False
    kinds: ClassVar[tuple[str, ...]] = ("detector",)

    def compute(self, records: RecognizerRecords) -> MetricValue:
        if records.detected_negatives is None:
            return MetricValue(None, 0, None, None, "the data set has no negatives")
        d = records.detected_negatives
        return proportion(int(d.sum()), len(d))


def _mean_metric(values: np.ndarray, note: str = "") -> MetricValue:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return MetricValue(None, 0, None, None, note or "undefined for these images")
    mean, lo, hi = mean_interval(v)
    return MetricValue(mean, len(v), lo, hi, note)


class SSIM(QualityMetric):
    """SSIM(original, protected as uploaded), Wang et al. 2004, pinned settings (see module)."""

    display_order: ClassVar[int] = 60

    higher_is_better = True
    parity: ClassVar[dict[str, Any]] = {
        "implementation": "pytorch_msssim.ssim",
        "window": 11,
        "sigma": 1.5,
        "K": [0.01, 0.03],
        "data_range": 1.0,
        "padding": "valid",
        "channels": "mean over RGB",
    }
    win_size: ClassVar[int] = 11

    def per_image(self, original: torch.Tensor, protected: torch.Tensor) -> np.ndarray:
        from pytorch_msssim import ssim

        if min(original.shape[-2:]) < self.win_size:
            return np.full(len(original), np.nan)
        values = ssim(
            original.float(),
            protected.float(),
            data_range=1.0,
            size_average=False,
            win_size=self.win_size,
            win_sigma=1.5,
        )
        return values.double().cpu().numpy()

    def compute(self, records: DefenseRecords) -> MetricValue:
        return _mean_metric(
            records.quality.get(self.key, np.zeros(0)),
            f"images smaller than the {self.win_size}×{self.win_size} window"
            if min(records.image_size) < self.win_size
            else "",
        )


PSNR_CAP_DB = 100.0


class PSNR(QualityMetric):
    """PSNR(original, protected as uploaded) in dB per image, data range 1, mean over images.

    Identical images (MSE 0) are capped at 100 dB so the mean stays finite.
    """

    display_order: ClassVar[int] = 70

    higher_is_better = True
    unit = "dB"
    parity: ClassVar[dict[str, Any]] = {
        "data_range": 1.0,
        "cap_db": PSNR_CAP_DB,
        "aggregate": "mean of per-image PSNR",
    }

    def per_image(self, original: torch.Tensor, protected: torch.Tensor) -> np.ndarray:
        mse = ((original.double() - protected.double()) ** 2).flatten(1).mean(1).cpu().numpy()
        with np.errstate(divide="ignore"):
            psnr = np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP_DB)
        return np.minimum(psnr, PSNR_CAP_DB)

    def compute(self, records: DefenseRecords) -> MetricValue:
        return _mean_metric(records.quality.get(self.key, np.zeros(0)))


RECOVERY_PARAMS: dict[str, Param] = {
    "jpeg_quality": Param(
        int,
        None,
        "re-encode the upload as JPEG at this quality before "
        "recovering (what many platforms do); none = the upload as is",
        low=1,
        high=100,
    ),
}


class RecoverySSIM(SSIM):
    """SSIM(original, recovered): how exactly the owner gets the photo back from the upload
    (reversible defenses; k-RTIO, Rajabi et al., PETS 2021, §6.2, Fig. 13). Same pinned SSIM
    as ``ssim``."""

    display_order: ClassVar[int] = 80

    recovery: ClassVar[bool] = True
    params: ClassVar[dict[str, Param]] = RECOVERY_PARAMS


class RecoveryPSNR(PSNR):
    """PSNR(original, recovered) in dB, capped at 100 dB (reversible defenses)."""

    display_order: ClassVar[int] = 90

    recovery: ClassVar[bool] = True
    params: ClassVar[dict[str, Param]] = RECOVERY_PARAMS


class LearningTime(Metric):
    """Wall time the defense took to learn from the owner's data (local models and search),
    measured once when it was learned (a cached re-run reports that measurement)."""

    display_order: ClassVar[int] = 96

    scope: ClassVar[MetricScope] = "defense"
    higher_is_better = False
    unit = "s"

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
    needs_timing: ClassVar[bool] = True
    unit = "ms"
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
    unit = "flag"

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
