"""Adversarial perturbations against the owner's white-box surrogate: PGD, iterative
least-likely, P-FGSM and Carlini-Wagner L2.

These are the perturbation components of the MediaEval 2019 Pixel Privacy runs (Sakha,
MediaEval 2019, §2). The attacks run through adversarial-robustness-toolbox (ART) where ART
has them; P-FGSM's per-image stopping rule and tail-class target are written here (ART has no
attack that stops each image at a target probability). Budgets are on the 0-255 scale
(``eps: 8`` is 8/255) and hold after the upload: every result is rounded to the uint8 grid
inside the ε-ball (:func:`~defenses.art_adapter.quantise_in_ball`). A lossy upload (JPEG)
moves pixels by itself, beyond any budget.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from defenses.art_adapter import (
    art_classifier,
    batch_seed,
    from_numpy,
    quantise_in_ball,
    seeded_numpy,
    to_numpy,
)
from defenses.surrogate import (
    SURROGATE_PARAMS,
    Surrogate,
    check_surrogate,
    surrogate_missing,
    surrogate_smoke_params,
)
from harness.api.contracts import Context, Defense, ImageSet, derive_seed
from harness.core.errors import ParamError
from harness.core.identity import method_identity
from harness.core.params import Param

EPS_PARAM = Param(
    float,
    8.0,
    "L∞ budget in levels of the 0-255 scale (8 means 8/255)",
    low=0.5,
    high=255.0,
)


class SurrogateDefense(Defense):
    """A defense computed against a fitted :class:`Surrogate` named in its parameters."""

    params: ClassVar[dict[str, Param]] = dict(SURROGATE_PARAMS)
    method_name: ClassVar[str] = "adversarial"
    family: ClassVar[str | None] = "adversarial-perturbation"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        check_surrogate(cls.method_name, params)
        if "eps" in params:
            check_budget(cls.method_name, params)

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        return surrogate_missing(params)

    @classmethod
    def smoke_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return surrogate_smoke_params(super().smoke_params(params))

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.surrogate = Surrogate(self.config["surrogate"], self.config.get("surrogate_params"))
        self.input_files = self.surrogate.input_files
        self._fitted_on: str | None = None

    def fit(self, train: ImageSet, ctx: Context) -> None:
        fingerprint = train.fingerprint()
        if self._fitted_on != fingerprint:
            self.surrogate.fit(train, ctx)
            self._fitted_on = fingerprint

    def dependencies(self) -> dict[str, Any]:
        # the surrogate is made by name (an entry point), so its code is not among this
        # module's imports: its identity carries it
        surrogate = method_identity(self.surrogate.recognizer, exclude=("reference",))
        return {**super().dependencies(), "surrogate": surrogate}

    def surrogate_weights(self) -> frozenset[str]:
        identity = self.surrogate.recognizer.weights_identity()
        return frozenset([identity]) if identity else frozenset()

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Surrogate class probabilities, without gradients."""
        with torch.no_grad():
            return self.surrogate.logits(images).float().softmax(1)


class ArtLinfDefense(SurrogateDefense):
    """An L∞ attack through ART's ProjectedGradientDescent, then quantised into the ball."""

    targeted: ClassVar[bool] = False

    def targets(self, probs: torch.Tensor) -> torch.Tensor:
        """The label the attack moves away from (untargeted) or toward (targeted)."""
        return probs.argmax(1)

    def schedule(self) -> tuple[float, int, bool]:
        """(step in levels, iterations, random start)."""
        raise NotImplementedError

    def art_attack(self, images: torch.Tensor, device: torch.device) -> Any:
        """ART's ProjectedGradientDescent with this defense's budget and schedule."""
        from art.attacks.evasion import ProjectedGradientDescent

        step, iterations, random_start = self.schedule()
        return ProjectedGradientDescent(
            art_classifier(self.surrogate, tuple(images.shape[1:]), device),
            norm=np.inf,
            eps=self.eps / 255.0,
            eps_step=step / 255.0,
            max_iter=iterations,
            targeted=self.targeted,
            num_random_init=1 if random_start else 0,
            batch_size=len(images),
            verbose=False,
        )

    def perturb(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        """ART's output before quantisation: float images in [0, 1]."""

        y = self.targets(self.scores(images)).cpu().numpy()
        attack = self.art_attack(images, ctx.device)
        with seeded_numpy(batch_seed(ctx, self.method_name, images)):
            adv = attack.generate(x=to_numpy(images), y=y)
        return from_numpy(adv, images)

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return quantise_in_ball(self.perturb(images, ctx), images, self.eps)


class PGD(ArtLinfDefense):
    """Untargeted L∞ projected gradient descent (Madry et al., ICLR 2018), moving away from
    the surrogate's clean prediction. Sakha (MediaEval 2019) used ε = 2/255 and states a
    step of "1/ε", which cannot be meant literally, and no iteration count or random start;
    privbench's defaults are therefore its own: step ε/4, 10 iterations, one random start."""

    method_name: ClassVar[str] = "pgd"
    smoke: ClassVar[dict[str, Any]] = {"iterations": 2}
    params: ClassVar[dict[str, Param]] = {
        **SurrogateDefense.params,
        "eps": EPS_PARAM,
        "step": Param(float, None, "step in levels (default ε/4)", low=0.0, low_open=True),
        "iterations": Param(int, 10, "gradient steps", low=1, high=10_000),
        "random_start": Param(bool, True, "start from a uniform point in the ε-ball"),
    }

    def schedule(self) -> tuple[float, int, bool]:
        step = self.step if self.step is not None else self.eps / 4.0
        return step, self.iterations, self.random_start


def kurakin_iterations(eps_levels: float) -> int:
    """min(ε + 4, 1.25·ε) with ε on the 0-255 scale (Kurakin et al., ICLR workshop 2017, §2.1)."""
    return max(1, int(min(eps_levels + 4.0, 1.25 * eps_levels)))


class LeastLikely(ArtLinfDefense):
    """Iterative least-likely class (Kurakin, Goodfellow and Bengio, ICLR workshop 2017, §2.1):
    targeted steps toward argmin of the surrogate's clean prediction, step 1/255 and
    min(ε + 4, 1.25·ε) iterations by default; no random start."""

    method_name: ClassVar[str] = "least-likely"
    targeted: ClassVar[bool] = True
    smoke: ClassVar[dict[str, Any]] = {"iterations": 2}
    params: ClassVar[dict[str, Param]] = {
        **SurrogateDefense.params,
        "eps": EPS_PARAM,
        "step": Param(float, 1.0, "step in levels", low=0.0, low_open=True),
        "iterations": Param(int, None, "steps (default Kurakin's rule)", low=1, high=10_000),
    }

    def targets(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.argmin(1)

    def schedule(self) -> tuple[float, int, bool]:
        n = self.iterations if self.iterations is not None else kurakin_iterations(self.eps)
        return self.step, n, False


def sigma_tail(probs: np.ndarray, sigma: float) -> np.ndarray:
    """Classes outside the most likely ones that hold σ of the mass: sort by probability
    (descending), keep those whose cumulative sum exceeds σ, never the top class (Li et al.,
    ICASSP 2019, §2). Falls back to the least likely class if nothing is left."""
    order = np.argsort(-probs, kind="stable")
    tail = order[np.cumsum(probs[order]) > sigma]
    tail = tail[tail != order[0]]
    return tail if len(tail) else order[-1:]


class PFGSM(SurrogateDefense):
    """P-FGSM, private fast gradient sign method (Li, Shamsabadi, Sanchez-Matilla, Mazzon and
    Cavallaro, ICASSP 2019, §2): a target class drawn from the σ-tail of the clean
    probabilities; signed steps of 1/255 that lower the cross-entropy toward it, clipped to
    the ε-ball and [0, 1]; each image stops once the target's probability exceeds
    ``stop`` (0.99), after at most ``iterations`` (100).

    ``target_rule: sigma-tail`` is the paper's rule. The released code overwrites that set
    with every class but the top one, so σ has no effect there: ``target_rule: released-code``
    reproduces it. The draw is seeded per image (run seed and pixels). Written here rather
    than through ART: ART has no attack that stops each image at a target probability.
    """

    method_name: ClassVar[str] = "p-fgsm"
    smoke: ClassVar[dict[str, Any]] = {"iterations": 2}
    params: ClassVar[dict[str, Param]] = {
        **SurrogateDefense.params,
        "eps": EPS_PARAM,
        "sigma": Param(
            float,
            0.99,
            "mass of the likely classes excluded from targets",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        "stop": Param(
            float,
            0.99,
            "stop when the target's probability exceeds this",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
        ),
        "iterations": Param(int, 100, "most steps per image", low=1, high=10_000),
        "step": Param(float, 1.0, "step in levels", low=0.0, low_open=True),
        "target_rule": Param(
            str, "sigma-tail", "how the target is drawn", choices=("sigma-tail", "released-code")
        ),
    }

    def draw_targets(self, probs: torch.Tensor, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """One target per image, seeded by the run seed and the image's pixels."""
        p = probs.cpu().double().numpy()
        pixels = images.detach().float().cpu().numpy()
        out = np.empty(len(p), dtype=np.int64)
        for i in range(len(p)):
            digest = hashlib.sha256(pixels[i].tobytes()).hexdigest()[:16]
            rng = np.random.default_rng(derive_seed(ctx.seed, "p-fgsm", digest))
            if self.target_rule == "released-code":
                choices = np.argsort(-p[i], kind="stable")[1:]
            else:
                choices = sigma_tail(p[i], self.sigma)
            out[i] = rng.choice(choices)
        return out

    def perturb(self, images: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, np.ndarray]:
        """Adversarial images before quantisation, and the steps each image took."""
        target = torch.from_numpy(self.draw_targets(self.scores(images), images, ctx))
        target = target.to(images.device)
        lo = (images - self.eps / 255.0).clamp(0.0, 1.0)
        hi = (images + self.eps / 255.0).clamp(0.0, 1.0)
        x = images.detach().clone()
        steps = np.zeros(len(images), dtype=np.int64)
        active = torch.ones(len(images), dtype=torch.bool, device=images.device)
        for _ in range(self.iterations):
            x.requires_grad_(True)
            logits = self.surrogate.logits(x).float()
            reached = logits.softmax(1).gather(1, target[:, None])[:, 0] > self.stop
            active = active & ~reached.detach()
            if not bool(active.any()):
                break
            loss = F.cross_entropy(logits, target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            move = (self.step / 255.0) * grad.sign() * active.view(-1, 1, 1, 1)
            x = torch.minimum(torch.maximum(x.detach() - move, lo), hi)
            steps += active.cpu().numpy()
        return x.detach(), steps

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        adv, _ = self.perturb(images, ctx)
        return quantise_in_ball(adv, images, self.eps)


class CarliniWagnerL2(SurrogateDefense):
    """Carlini-Wagner L2 (Carlini and Wagner, IEEE S&P 2017, §V.A) through ART's
    CarliniL2Method, untargeted. No L∞ budget: the result is only rounded to the uint8 grid.
    ART's implementation runs on numpy; it is slow and here for completeness."""

    method_name: ClassVar[str] = "cw-l2"
    smoke: ClassVar[dict[str, Any]] = {"binary_search_steps": 1, "iterations": 2}
    params: ClassVar[dict[str, Param]] = {
        **SurrogateDefense.params,
        "confidence": Param(float, 0.0, "required logit margin κ", low=0.0),
        "learning_rate": Param(float, 0.01, "Adam rate", low=0.0, low_open=True),
        "binary_search_steps": Param(int, 5, "searches over the constant c", low=1, high=100),
        "iterations": Param(int, 10, "optimiser steps per search", low=1, high=10_000),
        "initial_const": Param(float, 0.01, "first c", low=0.0, low_open=True),
    }

    def perturb(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        from art.attacks.evasion import CarliniL2Method

        y = self.scores(images).argmax(1).cpu().numpy()
        attack = CarliniL2Method(
            art_classifier(self.surrogate, tuple(images.shape[1:]), ctx.device),
            confidence=self.confidence,
            targeted=False,
            learning_rate=self.learning_rate,
            binary_search_steps=self.binary_search_steps,
            max_iter=self.iterations,
            initial_const=self.initial_const,
            batch_size=len(images),
            verbose=False,
        )
        one_hot = np.eye(self.surrogate.n_classes, dtype=np.float32)[y]
        with seeded_numpy(batch_seed(ctx, self.method_name, images)):
            adv = attack.generate(x=to_numpy(images), y=one_hot)
        return from_numpy(adv, images)

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return torch.round(self.perturb(images, ctx).clamp(0.0, 1.0) * 255.0) / 255.0


def check_budget(owner: str, params: dict[str, Any]) -> None:
    """Steps larger than the budget only bounce off the ball's walls: refuse them."""
    step = params.get("step")
    if step is not None and step > 2 * params["eps"]:
        raise ParamError(f"{owner}.step: {step} is more than twice eps ({params['eps']})")
