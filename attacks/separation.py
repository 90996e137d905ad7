"""Counter-attacks that try to remove a transparent overlay.

``bss-ica``: blind source separation (Rajabi et al., PETS 2021, §5.2 and Appendix D, Fig. 21): when
the same overlay O is blended into many photos, ``y_i = α·x_i + (1 − α)·O`` share one source.
FastICA over the pool of protected photos (pixels as samples, photos as observations) isolates it as
the component every photo loads on with the same sign and weight; it is then regressed out of each
photo. This is what breaks the naive overlay; k-RTIO gives every photo its own overlay, so there is
no shared source to find.

``overlay-guess``: the platform knows the pool S and α but not the key: it tries every average
of k pool images (resized, without the keyed block permutation), inverts the blend with each,
and keeps the most natural-looking result (low total variation, nothing outside [0, 1]).
"""

from __future__ import annotations

import itertools
import warnings
from typing import ClassVar

import numpy as np
import torch

from defenses.overlay_pool import overlay_pool
from harness.api.contracts import Context, CounterAttack
from harness.core.errors import PrivbenchError
from harness.core.params import Param


def stretch(images: torch.Tensor, low_pct: float = 1.0, high_pct: float = 99.0) -> torch.Tensor:
    """Per-image contrast stretch of the [low, high] percentiles to [0, 1] (the separated
    photo's scale and offset are unknown to the platform; recognizers need a normal range)."""
    flat = images.flatten(1)
    lo = torch.quantile(flat, low_pct / 100, dim=1).view(-1, 1, 1, 1)
    hi = torch.quantile(flat, high_pct / 100, dim=1).view(-1, 1, 1, 1)
    return ((images - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)


class BlindSourceSeparation(CounterAttack):
    """FastICA (scikit-learn) over the protected pool; removes the source shared by all photos.

    The shared source is the ICA component whose mixing weights across photos have the highest
    |mean| / std (a common overlay enters every photo with the same weight 1 − α).
    """

    knows = "algorithm"  # that the protection is a blend with an image shared across photos
    # Rajabi et al.'s attack on overlays (Appendix D): it looks for an overlay source; a blur,
    # a pixelation or a per-photo perturbation has none, so against those it is a generic move.
    targets: ClassVar[frozenset[str]] = frozenset({"overlay"})

    params: ClassVar[dict[str, Param]] = {
        "n_components": Param(int, 2, "independent components to extract", low=1, high=256),
        "max_iter": Param(int, 1000, "FastICA iterations", low=1, high=100000),
    }

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self.source: torch.Tensor | None = None
        self.consistency = float("nan")

    def fit(self, protected: torch.Tensor, ctx: Context) -> None:
        from sklearn.decomposition import FastICA

        n = len(protected)
        if n < 2:
            raise PrivbenchError("bss-ica needs at least two protected photos of one size")
        observations = protected.flatten(1).double().cpu().numpy().T  # pixels × photos
        ica = FastICA(
            n_components=min(self.n_components, n),
            whiten="unit-variance",
            max_iter=self.max_iter,
            random_state=ctx.rng("bss-ica").integers(2**31),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings: a result is still a result
            sources = ica.fit_transform(observations)
        weights = ica.mixing_  # photos × components
        score = np.abs(weights.mean(0)) / (weights.std(0) + 1e-12)
        best = int(np.argmax(score))
        self.consistency = float(score[best])
        s = sources[:, best] - sources[:, best].mean()
        self.source = (
            torch.from_numpy(s).to(protected.device, protected.dtype).view(protected.shape[1:])
        )

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        if self.source is None:
            raise RuntimeError("bss-ica: fit() must see the protected pool first")
        if images.shape[1:] != self.source.shape:
            raise PrivbenchError("bss-ica: images differ in size from the pool it was fitted on")
        s = self.source.flatten()
        centred = images.flatten(1) - images.flatten(1).mean(1, keepdim=True)
        beta = centred @ s / (s @ s)  # each photo's weight on the shared source
        cleaned = images - beta.view(-1, 1, 1, 1) * self.source
        return stretch(cleaned)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image (mean absolute neighbour difference)."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def implausibility(guess: torch.Tensor) -> torch.Tensor:
    """How unlike a photo an (unclamped) inversion is: total variation plus 10× the mass that
    falls outside [0, 1] (a wrong overlay leaves both; clamping first would let an all-black
    guess win with zero variation)."""
    outside = (guess.clamp(max=0.0).abs() + (guess - 1.0).clamp(min=0.0)).flatten(1).mean(1)
    return total_variation(guess) + 10.0 * outside


class OverlayGuess(CounterAttack):
    """Knows S and α, not the key: tries every k-subset average of S (no block permutation)
    and keeps, per photo, the most plausible inversion (see :func:`implausibility`)."""

    knows = "parameters"  # the overlay pool and α; not the key
    targets: ClassVar[frozenset[str]] = frozenset({"overlay"})  # inverts an overlay blend

    params: ClassVar[dict[str, Param]] = {
        "alpha": Param(float, 0.45, "the α the platform assumes", low=0.0, high=1.0, low_open=True),
        "k": Param(int, 3, "overlays per photo the platform assumes", low=1, high=8),
        "overlays": Param(str, "scenes", "the pool S the platform knows"),
        "max_candidates": Param(int, 2000, "refuse pools with more k-subsets than this", low=1),
    }

    def dependencies(self) -> dict[str, str]:
        return {"overlays": overlay_pool(self.overlays, "sorted").fingerprint()}

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        pool = overlay_pool(self.overlays, "sorted")
        combos = list(itertools.combinations(range(len(pool)), self.k))
        if len(combos) > self.max_candidates:
            raise PrivbenchError(
                f"overlay-guess: {len(combos)} candidate averages exceed "
                f"max_candidates = {self.max_candidates}"
            )
        h, w = images.shape[-2:]
        mode = "L" if images.shape[1] == 1 else "RGB"
        resized = torch.stack(
            [
                torch.from_numpy(pool.resized(v, w, h, mode).copy())
                .reshape(h, w, -1)
                .permute(2, 0, 1)
                for v in range(len(pool))
            ]
        ).to(images.device, images.dtype)
        resized = resized / 255.0
        best = images.clone()
        best_tv = torch.full((len(images),), float("inf"), device=images.device)
        for combo in combos:
            o = resized[list(combo)].mean(0, keepdim=True)
            guess = (images - (1.0 - self.alpha) * o) / self.alpha
            score = implausibility(guess)
            better = score < best_tv
            best[better] = guess[better].clamp(0.0, 1.0)
            best_tv = torch.minimum(best_tv, score)
        return best
