"""Perturbation estimation and removal (Rajabi et al., PETS 2021, §6.3, Table 1).

A platform that sees M photos carrying the same perturbation estimates it as their pixel-wise
median δ' and undoes it: ``x = λ·x' + (1 − λ)·(1 − δ')`` (the paper sweeps λ over 0.40–0.56;
0.48 was its best single value). Anything shared by the M photos (a universal perturbation, one
fixed overlay) cancels at λ near ½, at the price of halved contrast. The ``tanh`` mode is the
adaptive variant for UEP's rule ``x' = ½·tanh(arctanh(2x − 1) + β·δ) + ½``: the median is taken
in tanh space and subtracted there (keeping each channel's mean level). Against k-RTIO, where
every photo has its own overlay, there is nothing shared to estimate.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from harness.api.contracts import Context, CounterAttack
from harness.core.errors import PrivbenchError
from harness.core.params import Param

_EPS = 1e-6


def to_tanh_space(images: torch.Tensor) -> torch.Tensor:
    """arctanh(2x − 1), with x kept inside (0, 1)."""
    return torch.atanh((2.0 * images - 1.0).clamp(-1.0 + _EPS, 1.0 - _EPS))


class PerturbationEstimation(CounterAttack):
    """Median of M protected photos as the shared perturbation, then its removal (§6.3)."""

    knows = "algorithm"  # one perturbation shared by many photos (tanh mode: UEP's rule)
    # Rajabi et al.'s attack on UEP (§6.3); the median cancels a fixed overlay as well.
    targets: ClassVar[frozenset[str]] = frozenset({"universal-perturbation", "overlay"})

    smoke: ClassVar[dict[str, Any]] = {"m": 4}
    params: ClassVar[dict[str, Param]] = {
        "m": Param(
            int,
            35,
            "protected photos the median is taken over (a seeded subset)",
            low=2,
            high=100000,
        ),
        "lam": Param(float, 0.48, "λ of x = λ·x' + (1 − λ)·(1 − δ')", low=0.0, high=1.0),
        "mode": Param(
            str,
            "median-blend",
            "median-blend (the paper's) or tanh (adaptive, knows UEP's tanh rule)",
            choices=("median-blend", "tanh"),
        ),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.estimate: torch.Tensor | None = None

    def fit(self, protected: torch.Tensor, ctx: Context) -> None:
        if len(protected) < 2:
            raise PrivbenchError("estimation needs at least two protected photos of one size")
        m = min(self.m, len(protected))
        pick = torch.from_numpy(ctx.rng("estimation").choice(len(protected), m, replace=False))
        sample = protected[pick.to(protected.device)]
        if self.mode == "tanh":
            sample = to_tanh_space(sample)
        self.estimate = sample.median(dim=0).values

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        if self.estimate is None:
            raise RuntimeError("estimation: fit() must see the protected pool first")
        if images.shape[1:] != self.estimate.shape:
            raise PrivbenchError("estimation: images differ in size from the fitted pool")
        if self.mode == "median-blend":
            return (self.lam * images + (1.0 - self.lam) * (1.0 - self.estimate)).clamp(0, 1)
        shared = self.estimate - self.estimate.mean(dim=(-2, -1), keepdim=True)
        return (0.5 * torch.tanh(to_tanh_space(images) - shared) + 0.5).clamp(0, 1)
