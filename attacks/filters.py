"""Image-space filters a platform can run before recognition (Rajabi et al., PETS 2021, §6.2,
Fig. 17: blur, median, grayscale, Gaussian; the paper gives no kernel sizes, so they are
parameters here). They are generic moves designed against no defense: each declares no
``targets``, so it is oblivious against every defense."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from harness.api.contracts import Context, CounterAttack
from harness.core.params import Param
from harness.toolkit.imaging import (
    GAUSSIAN_BLUR_PARAMS,
    gaussian_blur,
    jpeg_roundtrip,
    median_filter,
    rgb_to_gray,
)


class NoCounterAttack(CounterAttack):
    """The platform takes the upload as it is."""


class GaussianBlurAttack(CounterAttack):
    """Gaussian low-pass to wash out high-frequency protection."""

    params: ClassVar[dict[str, Param]] = GAUSSIAN_BLUR_PARAMS

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        return gaussian_blur(images, self.sigma, self.kernel_size)


class MedianFilterAttack(CounterAttack):
    """k×k median filter per channel (Huang 1979), reflect borders."""

    params: ClassVar[dict[str, Param]] = {
        "kernel_size": Param(int, 3, "odd window side", low=1, high=101, odd=True),
    }

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        return median_filter(images, self.kernel_size)


class BoxBlurAttack(CounterAttack):
    """k×k mean filter ("blurring" in Rajabi et al., PETS 2021, Fig. 17, after Reinhard et
    al.), reflect borders."""

    params: ClassVar[dict[str, Param]] = {
        "kernel_size": Param(int, 3, "odd window side", low=1, high=101, odd=True),
    }

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        k = self.kernel_size
        padded = F.pad(images, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
        return F.avg_pool2d(padded, k, stride=1)


class GrayscaleAttack(CounterAttack):
    """Drop colour: BT.601 luma replicated to three channels."""

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        return rgb_to_gray(images)


class JpegAttack(CounterAttack):
    """Re-encode as JPEG at ``quality`` (what many platforms do to every upload)."""

    params: ClassVar[dict[str, Param]] = {
        "quality": Param(int, 75, "JPEG quality", low=1, high=100),
    }

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        return jpeg_roundtrip(images, self.quality)
