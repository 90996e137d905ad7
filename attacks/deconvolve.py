"""Deconvolution: the platform undoes a Gaussian blur whose σ it knows.

Richardson-Lucy deconvolution (Richardson, JOSA 1972; Lucy, AJ 1974) is the maximum-likelihood
estimate of an image blurred by a known point-spread function P under Poisson noise. Each
iteration multiplies the estimate by the back-projected ratio of the observed photo to the
re-blurred estimate: ``x ← x · (Pᵀ ⋆ (y / (P ⋆ x)))``, with Pᵀ = P for a Gaussian. The estimate
starts at the observed photo (as MATLAB's ``deconvlucy`` does). P is the defense's own kernel:
a Gaussian of ``sigma`` with side 2·⌈3σ⌉ + 1 (capped to what reflected borders allow, as the
blur caps it), applied separably with the same reflected borders (scipy.ndimage's ``mirror``),
so with the right σ the re-blur is the defense's blur. The result is clipped to [0, 1].

Each pixel is a direct sum over the kernel's taps (no FFT across the batch), so a photo's result
does not depend on the batch it is in.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import Context, CounterAttack
from harness.core.params import Param
from harness.toolkit.imaging import GAUSSIAN_BLUR_PARAMS, gaussian_kernel_size

_FLOOR = 1e-12  # the re-blurred estimate is divided by; a photo's black pixels stay black


def gaussian_kernel(sigma: float, size: int) -> np.ndarray:
    """The normalised 1-D Gaussian of ``sigma`` over ``size`` taps (torchvision's kernel)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    pdf = np.exp(-0.5 * (x / sigma) ** 2)
    return pdf / pdf.sum()


class Deconvolve(CounterAttack):
    """Richardson-Lucy deconvolution with the Gaussian the defense blurred with."""

    knows = "parameters"  # the blur's σ (and kernel side)
    targets: ClassVar[frozenset[str]] = frozenset({"blur"})  # inverts a known blur

    smoke: ClassVar[dict[str, Any]] = {"iterations": 3}
    params: ClassVar[dict[str, Param]] = {
        **GAUSSIAN_BLUR_PARAMS,
        "iterations": Param(int, 30, "Richardson-Lucy iterations", low=1, high=10_000),
    }

    def kernel(self, height: int, width: int) -> np.ndarray:
        """The 1-D kernel for a photo of this size (capped like the defense's blur)."""
        side = self.kernel_size or gaussian_kernel_size(self.sigma)
        limit = 2 * (min(height, width) - 1) + 1  # odd: the widest reflected borders allow
        return gaussian_kernel(self.sigma, min(side, limit))

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        from scipy.ndimage import correlate1d

        g = self.kernel(*images.shape[-2:]).astype(np.float32)

        def blur(a: np.ndarray) -> np.ndarray:
            rows = correlate1d(a, g, axis=-1, mode="mirror")
            return correlate1d(rows, g, axis=-2, mode="mirror")

        observed = images.detach().cpu().numpy()
        estimate = observed.copy()
        for _ in range(self.iterations):
            estimate *= blur(observed / np.maximum(blur(estimate), _FLOOR))
        out = np.clip(estimate, 0.0, 1.0, dtype=np.float32)
        return torch.from_numpy(out).to(images.device)
