"""Baseline defenses: no protection, Gaussian blur and pixelation.

The obvious things an owner can do without any privacy research; every other defense has to
beat them on the leaderboard (cf. Rajabi et al., PETS 2021, §6.2, where blur and pixelation
are the classic obfuscations adversarial perturbations are compared with).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.api.contracts import Context, Defense, DefenseObjective
from harness.core.params import Param
from harness.toolkit.imaging import GAUSSIAN_BLUR_PARAMS, gaussian_blur, pixelate


class NoDefense(Defense):
    """The photo as it is: the reference row (fooling rate 0 without a counter-attack), in
    evade and conceal suites alike."""

    objective: ClassVar[DefenseObjective] = "any"
    family: ClassVar[str | None] = None  # nothing to adapt to

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return images.clone()


class GaussianBlurDefense(Defense):
    """Gaussian blur of standard deviation ``sigma`` pixels (reflect borders)."""

    family: ClassVar[str | None] = "blur"
    params: ClassVar[dict[str, Param]] = GAUSSIAN_BLUR_PARAMS

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return gaussian_blur(images, self.sigma, self.kernel_size)


class PixelateDefense(Defense):
    """Mosaic: each ``block``×``block`` cell replaced by its mean colour."""

    family: ClassVar[str | None] = "pixelation"
    params: ClassVar[dict[str, Param]] = {
        "block": Param(int, 4, "cell side in pixels", low=1, high=1024),
    }

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return pixelate(images, self.block)
