"""The thin layer between privbench's surrogates and adversarial-robustness-toolbox (ART).

ART's attacks take numpy arrays and an ART estimator; privbench's defenses hold torch tensors
and a :class:`~defenses.surrogate.Surrogate`. This module wraps a surrogate in ART's
``PyTorchClassifier`` (on the suite's device), seeds the numpy generator ART draws random
starts from, and quantises results back into the ε-ball on the 0-255 grid of an upload.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from defenses.surrogate import Surrogate
from harness.api.contracts import Context, derive_seed


def art_classifier(surrogate: Surrogate, image_shape: tuple[int, ...], device: torch.device) -> Any:
    """ART's ``PyTorchClassifier`` over the surrogate's scores, inputs in [0, 1] (CHW)."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=surrogate.module(),
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(image_shape),
        nb_classes=surrogate.n_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def batch_seed(ctx: Context, method: str, images: torch.Tensor) -> int:
    """A seed for one batch, from the run seed and the batch's pixels (not its ids, which
    timing replaces): the same photos give the same random start."""
    digest = hashlib.sha256(images.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
    return derive_seed(ctx.seed, method, digest) % (2**32)


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """ART draws random starts from numpy's global generator: seed it for the call only."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.detach().float().cpu().numpy()


def from_numpy(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(like.device, like.dtype)


def quantise_in_ball(adv: torch.Tensor, clean: torch.Tensor, eps_levels: float) -> torch.Tensor:
    """``adv`` on the uint8 grid and inside the L∞ ball of radius ``eps_levels``/255 around
    ``clean``: round to the nearest level, then clip to the levels inside the ball. Rounding
    alone could step out when ε is not a whole number of levels or ``clean`` is not on the
    grid (a chained step's input); the ball always holds a level because ε ≥ 0.5."""
    c = clean.double() * 255.0
    lo = torch.ceil(c - eps_levels - 1e-9).clamp(0.0, 255.0)
    hi = torch.floor(c + eps_levels + 1e-9).clamp(0.0, 255.0)
    q = torch.round(adv.double() * 255.0)
    return (torch.minimum(torch.maximum(q, lo), hi) / 255.0).to(clean.dtype)
