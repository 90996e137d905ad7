"""UEP's perturbation δ (Rajabi et al., PETS 2021, §5.1): the tanh change of variable (Eq. 4)
and its inverse, the margin loss (Eq. 3), and the binary search on c around an Adam
minimisation (Fig. 3) that learns δ. The method, its parameters and its artefact are in
:mod:`defenses.uep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

_EDGE = 1e-6  # keeps arctanh finite at x = 0 and 1 (the reference code scales by 1.999999999999)


def to_tanh_space(images: torch.Tensor) -> torch.Tensor:
    """arctanh(2x − 1), with 2x − 1 scaled by 1 − 1e-6 so that x = 0 and 1 stay finite."""
    return torch.atanh((2.0 * images - 1.0) * (1.0 - _EDGE))


def tanh_apply(images: torch.Tensor, delta: torch.Tensor, beta: float) -> torch.Tensor:
    """x' = ½·tanh(arctanh(2x − 1) + β·δ) + ½ (Eq. 4), computed in float64."""
    u = to_tanh_space(images.double())
    return (0.5 * torch.tanh(u + beta * delta.double()) + 0.5).to(images.dtype)


def tanh_remove(protected: torch.Tensor, delta: torch.Tensor, beta: float) -> torch.Tensor:
    """The inverse of :func:`tanh_apply`: subtract β·δ in tanh space."""
    x = protected.double()
    # x' = 0 or 1 exactly (a rounded upload) is read as the largest value apply can give.
    u = torch.atanh((2.0 * x - 1.0).clamp(-1.0 + 1e-15, 1.0 - 1e-15)) - beta * delta.double()
    return (0.5 * torch.tanh(u) / (1.0 - _EDGE) + 0.5).clamp(0.0, 1.0).to(protected.dtype)


def margin_loss(logits: torch.Tensor, target: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per image max(Y_{y*} − max_{j≠y*} Y_j, −κ) on probabilities Y = softmax(logits)."""
    prob = logits.float().softmax(1)
    true = prob.gather(1, target[:, None])[:, 0]
    other = prob.masked_fill(F.one_hot(target, prob.shape[1]).bool(), -1.0).amax(1)
    return (true - other).clamp(min=-kappa)


@dataclass
class SearchResult:
    """The learned δ and how the search went."""

    delta: torch.Tensor
    fooled_share: float  # share of the N images on which every local model is fooled
    reached: bool  # fooled_share ≥ p
    c: float  # the c whose run gave δ
    rounds: int


@dataclass
class _Best:
    """What the search keeps: the smallest δ seen that fools every local model on at least
    ``need`` images, and until there is one the δ that fooled on the most images."""

    fallback: torch.Tensor
    fallback_share: float = -1.0
    delta: torch.Tensor | None = None
    norm: float = math.inf
    c: float = float("nan")
    share: float = 0.0

    def offer(
        self, delta: torch.Tensor, norm: float, count: int, n: int, need: int, c: float
    ) -> bool:
        """Keep ``delta`` (its norm, images fooled of ``n``, the c it was found at) if it
        qualifies; whether it is now the best."""
        better = count >= need and norm < self.norm
        if better:
            self.delta, self.norm, self.c = delta.detach().clone(), norm, c
            self.share = count / n  # measured on this very δ, before the step that follows
        if self.delta is None and count / n > self.fallback_share:
            self.fallback, self.fallback_share = delta.detach().clone(), count / n
        return better


def _minimise(
    models: list[Any],
    targets: list[torch.Tensor],
    u: torch.Tensor,
    c: float,
    best: _Best,
    *,
    kappa: float,
    steps: int,
    lr: float,
    need: int,
) -> bool:
    """``steps`` Adam steps on ‖δ‖₂ + c·f (Eq. 3) from δ = 0 over the images ``u`` (in tanh
    space), offering every δ to ``best`` before its step; whether one reached p."""
    n = len(u)
    delta = torch.zeros_like(u[0], requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    found = False
    for _ in range(steps):
        x = 0.5 * torch.tanh(u + delta) + 0.5
        fooled = torch.ones(n, dtype=torch.bool, device=u.device)
        f = x.new_zeros(())
        for model, y in zip(models, targets, strict=True):
            logits = model.logits(x)
            f = f + margin_loss(logits, y, kappa).sum()
            fooled &= logits.detach().argmax(1) != y
        norm = delta.norm()
        found |= best.offer(delta, float(norm.detach()), int(fooled.sum()), n, need, c)
        loss = norm + c * f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return found


def learn_delta(
    models: list[Any],
    images: torch.Tensor,
    *,
    kappa: float,
    steps: int,
    lr: float,
    p: float,
    c_low: float,
    c_high: float,
    search: str,
    search_rounds: int,
    tolerance: float,
) -> SearchResult:
    """The binary search on c of Fig. 3 around an Adam minimisation of Eq. 3, over all
    ``images`` [N, 3, S, S] and all ``models`` (each with a differentiable ``logits``) at once:
    success (a δ reaching p) shrinks c, failure grows it, until the bracket is within
    ``tolerance`` (a ratio for the geometric search) or after ``search_rounds``."""
    with torch.no_grad():
        targets = [m.logits(images).argmax(1) for m in models]
    u = to_tanh_space(images)
    best = _Best(fallback=torch.zeros_like(images[0]))
    need = math.ceil(p * len(images))
    low, high = c_low, c_high
    rounds = 0
    while rounds < search_rounds:
        c = math.sqrt(low * high) if search == "geometric" else (low + high) / 2.0
        rounds += 1
        if _minimise(models, targets, u, c, best, kappa=kappa, steps=steps, lr=lr, need=need):
            high = c
        else:
            low = c
        if (
            high / low <= 1.0 + tolerance
            if search == "geometric"
            else high - low <= tolerance * high
        ):
            break
    if best.delta is None:
        return SearchResult(best.fallback, max(best.fallback_share, 0.0), False, high, rounds)
    return SearchResult(best.delta, best.share, True, best.c, rounds)
