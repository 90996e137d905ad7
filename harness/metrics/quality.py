"""The quality metrics: the upload (or what the owner recovers) against the original, per
image, averaged with a t-interval.

SSIM has one pinned definition: Gaussian 11×11 window, σ 1.5, K = (0.01, 0.03), data range 1, no
padding, mean over RGB (Wang et al. 2004; pytorch-msssim; equal to scikit-image's
``structural_similarity`` with gaussian_weights, σ 1.5 and population covariance).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import MetricFormat, MetricRole, MetricValue, QualityMetric
from harness.api.records import DefenseRecords
from harness.core.params import Param
from harness.metrics.stats import mean_interval


def mean_metric(values: np.ndarray, note: str = "") -> MetricValue:
    """The mean of the finite per-image values with its t-interval; value None when none is."""
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
    gate_tolerance: ClassVar[float | None] = 0.01
    headline: ClassVar[bool] = True
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
        return mean_metric(
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
    gate_tolerance: ClassVar[float | None] = 0.5
    display: ClassVar[MetricFormat | None] = MetricFormat(digits=1, delta_digits=2)
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
        return mean_metric(records.quality.get(self.key, np.zeros(0)))


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

    role: ClassVar[MetricRole] = "recovery"
    gate_tolerance: ClassVar[float | None] = None
    headline: ClassVar[bool] = False

    recovery: ClassVar[bool] = True
    params: ClassVar[dict[str, Param]] = RECOVERY_PARAMS


class RecoveryPSNR(PSNR):
    """PSNR(original, recovered) in dB, capped at 100 dB (reversible defenses)."""

    display_order: ClassVar[int] = 90

    role: ClassVar[MetricRole] = "recovery"
    gate_tolerance: ClassVar[float | None] = None

    recovery: ClassVar[bool] = True
    params: ClassVar[dict[str, Param]] = RECOVERY_PARAMS
