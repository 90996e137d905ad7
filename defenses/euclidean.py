"""Euclidean transforms as a defense: the spatial attack of Engstrom, Tran, Tsipras, Schmidt
and Madry (ICML 2019, §3, §4), as Sakha's fifth Pixel Privacy run used it (MediaEval 2019).

Each photo is rotated, then translated (zeros fill what moves in, the size stays), choosing
among candidate transforms the one that hurts the owner's surrogate most: the misclassified
candidate with the highest cross-entropy against the clean prediction, else the candidate
with the highest cross-entropy. Candidates come from ``search: random`` (``tries`` uniform
draws per photo, seeded by the run seed and the pixels; Engstrom's worst-of-k) or
``search: grid`` (``linspace`` of each limit with ``granularity`` points, Engstrom's default
[5, 5, 31]). Sakha's limits are the defaults: 20% of the size and ±20°.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from defenses.adversarial import SurrogateDefense
from harness.api.contracts import Context, derive_seed
from harness.core.errors import ParamError
from harness.core.params import Param
from harness.toolkit.geometry import random_transforms, rotate_translate, transform_grid

MISCLASSIFIED_BONUS = 1e6  # ranks every misclassified candidate above every other one
CHUNK_IMAGES = 1024  # transformed copies per surrogate pass

TRANSFORM_LIMIT_PARAMS: dict[str, Param] = {
    "max_translation": Param(
        float, 0.2, "largest shift, a fraction of the width or height", low=0.0, high=1.0
    ),
    "max_rotation": Param(float, 20.0, "largest rotation in degrees", low=0.0, high=180.0),
}


def check_granularity(owner: str, value: list[Any]) -> tuple[int, int, int]:
    """Three positive integers (translation x, translation y, rotation)."""
    if len(value) != 3 or not all(isinstance(g, int) and g >= 1 for g in value):
        raise ParamError(
            f"{owner}.granularity: expected three positive integers [x, y, rotation], got {value!r}"
        )
    return int(value[0]), int(value[1]), int(value[2])


class Euclidean(SurrogateDefense):
    """Worst-case rotation and translation against the surrogate."""

    method_name: ClassVar[str] = "euclidean"
    family: ClassVar[str | None] = "spatial-transform"  # adversarial, but in pose, not pixels
    smoke: ClassVar[dict[str, Any]] = {"tries": 2, "granularity": [2, 2, 2]}
    params: ClassVar[dict[str, Param]] = {
        **SurrogateDefense.params,
        **TRANSFORM_LIMIT_PARAMS,
        "search": Param(str, "random", "candidate transforms", choices=("random", "grid")),
        "tries": Param(int, 10, "random candidates per photo", low=1, high=100_000),
        "granularity": Param(list, [5, 5, 31], "grid points per dimension [x, y, rotation]"),
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        check_granularity(cls.method_name, params["granularity"])

    def candidates(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """[B, k, 3] candidate (tx, ty, θ) per photo."""
        if self.search == "grid":
            grid = transform_grid(
                self.max_translation,
                self.max_rotation,
                check_granularity(self.method_name, self.granularity),
            )
            return np.broadcast_to(grid, (len(images), *grid.shape))
        pixels = images.detach().float().cpu().numpy()
        out = []
        for img in pixels:
            digest = hashlib.sha256(img.tobytes()).hexdigest()[:16]
            rng = np.random.default_rng(derive_seed(ctx.seed, "euclidean", digest))
            out.append(random_transforms(rng, self.tries, self.max_translation, self.max_rotation))
        return np.stack(out)

    def choose(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """The chosen (tx, ty, θ) per photo: [B, 3]."""
        cands = self.candidates(images, ctx)
        b, k, _ = cands.shape
        clean = self.scores(images).argmax(1)
        best = np.full(b, -np.inf)
        chosen = cands[:, 0].copy()
        per_pass = max(1, CHUNK_IMAGES // b)
        for start in range(0, k, per_pass):
            part = cands[:, start : start + per_pass]  # [B, m, 3]
            m = part.shape[1]
            flat = torch.from_numpy(part.reshape(-1, 3).copy())
            copies = images.repeat_interleave(m, 0)
            moved = rotate_translate(copies, flat[:, 2], flat[:, 0], flat[:, 1])
            with torch.no_grad():
                logits = self.surrogate.logits(moved).float()
            target = clean.repeat_interleave(m, 0)
            ce = F.cross_entropy(logits, target, reduction="none")
            wrong = (logits.argmax(1) != target).double()
            score = (ce.double() + MISCLASSIFIED_BONUS * wrong).cpu().numpy().reshape(b, m)
            top = score.argmax(1)
            better = score[np.arange(b), top] > best
            best = np.where(better, score[np.arange(b), top], best)
            chosen[better] = part[np.arange(b), top][better]
        return chosen

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        t = torch.from_numpy(self.choose(images, ctx))
        return rotate_translate(images, t[:, 2], t[:, 0], t[:, 1]).clamp(0.0, 1.0)
