"""The recognizer's counter-measures against AIP (Oh, Fritz and Schiele, ICCV 2017, §5.2).

The platform processes each uploaded photo several times at random and sums the recognizer's
scores over the copies before deciding (``process``):

- ``none``: the photo as uploaded, once;
- ``T``, ``N``, ``B``, ``C``: ``draws`` random translations, noises, blurs or crops
  (:mod:`harness.toolkit.jitter`; blur kernels 1-9, as the released code draws them);
- ``ensemble``: ``draws`` copies of each of the above, the unprocessed photo included.

Processed copies are clipped to [0, 1] and rounded to the uint8 grid, as images are. Summing
scores needs a recognizer with scores (:meth:`~harness.api.contracts.Recognizer.scores`); a suite
that pairs this counter-attack with one without (a detector) is refused when it is loaded.
The released code's ensemble stops one round short (four rounds of all five, then the
unprocessed photo of the fifth); here it is all ``draws`` rounds.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import Context, CounterAttack, Recognizer, derive_seed
from harness.core.params import Param
from harness.toolkit.imaging import quantise
from harness.toolkit.jitter import KINDS, PLATFORM_BLUR_KERNELS, jitter

PROCESSES = ("none", "T", "N", "B", "C", "ensemble")


class AipCounterMeasure(CounterAttack):
    """Sum the recognizer's scores over randomly processed copies of each photo."""

    needs_scores = True
    # Oh, Fritz and Schiele's counter-measures (§5.2): processing chosen to wash out a small
    # adversarial perturbation (knowing no surrogate, budget or key): adaptive to that family,
    # a generic move against any other.
    knows = "algorithm"
    targets: ClassVar[frozenset[str]] = frozenset({"adversarial-perturbation"})
    smoke: ClassVar[dict[str, Any]] = {"draws": 1}
    params: ClassVar[dict[str, Param]] = {
        "process": Param(str, "ensemble", "processing of the copies", choices=PROCESSES),
        "draws": Param(int, 5, "random copies per processing", low=1, high=100),
    }

    def copies(self) -> list[str]:
        """The processing of each copy, in the order they are drawn."""
        if self.process == "none":
            return ["O"]
        kinds = list(KINDS) if self.process == "ensemble" else [self.process]
        return [k for _ in range(self.draws) for k in kinds]

    def wrap(self, recognizer: Recognizer) -> Recognizer:
        return ScoreEnsemble(recognizer, self.copies(), self.process)


def photo_rngs(seed: int, scope: str, images: torch.Tensor) -> list[np.random.Generator]:
    """One generator per photo, seeded by the run seed, ``scope`` and the photo's pixels (on
    the uint8 grid), so its draws do not depend on the batch."""
    pixels = torch.round(images.detach().clamp(0.0, 1.0) * 255.0).to(torch.uint8).cpu().numpy()
    return [
        np.random.default_rng(derive_seed(seed, scope, hashlib.sha256(p.tobytes()).hexdigest()))
        for p in pixels
    ]


class ScoreEnsemble(Recognizer):
    """``inner`` queried on processed copies; its decision on the mean of their scores (the
    same argmax as their sum, and a threshold keeps its meaning)."""

    def __init__(self, inner: Recognizer, copies: list[str], scope: str) -> None:
        super().__init__(**inner.config)
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]
        self.copies = copies
        self.scope = scope

    def pooled_scores(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """Mean of the inner scores over the copies."""
        rngs = photo_rngs(ctx.seed, f"aip-ensemble/{self.scope}", images)
        total: np.ndarray | None = None
        for kind in self.copies:
            seen = quantise(jitter(kind, images, rngs, PLATFORM_BLUR_KERNELS))
            s = np.asarray(self.inner.scores(seen, ctx), dtype=np.float64)
            total = s if total is None else total + s
        assert total is not None
        return total / len(self.copies)

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        return self.inner.decide(self.pooled_scores(images, ctx))
