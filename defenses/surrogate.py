"""The owner's white-box surrogate: a suite recognizer seen as a differentiable classifier.

Adversarial defenses (P-FGSM, least-likely, PGD, C&W, the Euclidean search) perturb a photo
against a model the owner can differentiate. privbench lets that model be any recognizer with
gradients to its input, named in the defense's parameters; the suite's recognizers then judge
the result, so the white-box number (surrogate = judge, same weights and training data: the
cache hands both the same model) and the transfer numbers come from one run.

- Classifiers (``logits``): their class scores, trained on the owner's fit split.
- Identifiers (``embed_torch``): scores against identity centroids, ``s · cos(e(x), c_k)``,
  where ``c_k`` is the normalised mean embedding of identity ``k`` in the owner's fit split
  (the owner's own photos; the platform's gallery is not the owner's to see). Cross-entropy on
  these scores pushes an embedding away from its own identity (untargeted) or toward another
  one (targeted). ``s`` only shapes the loss; privbench uses 30, inside the 30-64 range of the
  normalised-softmax face losses such as SFace's own training loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from harness.api.contracts import Context, DataSplit, ImageSet, Recognizer
from harness.api.registry import RECOGNIZERS
from harness.core.code_version import declare_kind_code
from harness.core.errors import ParamError, UnknownNameError
from harness.core.identity import method_identity
from harness.core.params import Param
from harness.toolkit.imaging import to_tensor

# The cache entries this module computes itself: their keys hold its code version.
declare_kind_code(["surrogate-centroids"], [__name__])

IDENTITY_SCALE = 30.0

SURROGATE_PARAMS: dict[str, Param] = {
    "surrogate": Param(
        str,
        "small-cnn",
        "differentiable recognizer the owner attacks white-box (small-cnn, sface with "
        "backend torch, facenet, cifar10-zoo, places365-resnet50, torchvision-classifier)",
    ),
    "surrogate_params": Param(dict, None, "the surrogate's parameters"),
}


def check_surrogate(owner: str, params: dict[str, Any]) -> None:
    """ParamError unless ``params['surrogate']`` names a recognizer with gradients whose
    ``surrogate_params`` are valid for it."""
    name = params["surrogate"]
    try:
        cls = RECOGNIZERS.get(name)
    except UnknownNameError as exc:
        raise ParamError(f"{owner}.surrogate: {exc}") from None
    try:
        resolved = RECOGNIZERS.resolve(name, params.get("surrogate_params") or {})
    except ParamError as exc:
        raise ParamError(f"{owner}.surrogate_params: {exc}") from None
    if cls.kind == "detector":
        raise ParamError(
            f"{owner}.surrogate: {name} is a detector; a surrogate must classify or identify"
        )
    problem = cls.gradient_problem(resolved)
    if problem:
        raise ParamError(f"{owner}.surrogate: {name} {problem}; it cannot be a surrogate")


def surrogate_missing(params: dict[str, Any]) -> list[str]:
    """What the surrogate lacks on this machine (weights, packages)."""
    name = params["surrogate"]
    resolved = RECOGNIZERS.resolve(name, params.get("surrogate_params") or {})
    return [f"surrogate {name}: {m}" for m in RECOGNIZERS.get(name).missing(resolved)]


def surrogate_smoke_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the surrogate's own smoke cuts in ``surrogate_params`` (a small-cnn
    surrogate trains for a few steps in a smoke run too)."""
    name = params["surrogate"]
    resolved = RECOGNIZERS.resolve(name, params.get("surrogate_params") or {})
    return {**params, "surrogate_params": RECOGNIZERS.get(name).smoke_params(resolved)}


class Surrogate:
    """A fitted recognizer as ``logits(x) -> [B, C]`` on images in [0, 1]."""

    def __init__(self, name: str, params: dict[str, Any] | None) -> None:
        self.name = name
        self.recognizer: Recognizer = RECOGNIZERS.create(name, params or {})
        self._centroids: torch.Tensor | None = None
        self.n_classes = 0

    @property
    def input_files(self) -> tuple[Any, ...]:
        return tuple(self.recognizer.input_files)

    def fit(self, train: ImageSet, ctx: Context) -> None:
        """Train (classifier) or build identity centroids (identifier) from the owner's data."""
        empty = train.subset(np.zeros(0, dtype=np.int64))
        split = DataSplit(fit=train, enroll=train, probe=empty, protocol="owner")
        self.recognizer.fit(split, ctx)
        if self.recognizer.kind == "classifier":
            classes = self.recognizer.classes
            self.n_classes = len(classes) if classes is not None else self._count_logits(train)
            return
        labels = np.unique(train.labels)
        identity = method_identity(self.recognizer, exclude=("reference", "threshold", "far"))
        key = {"surrogate": identity, "train": train.fingerprint()}

        def centroids() -> dict[str, np.ndarray]:
            parts = []
            for i in range(0, len(train), ctx.batch_size):
                batch = to_tensor(train.images[i : i + ctx.batch_size], ctx.device)
                with torch.inference_mode():
                    parts.append(self.recognizer.embed_torch(batch).float().cpu().numpy())
            emb = np.concatenate(parts)
            c = np.stack([emb[train.labels == k].mean(0) for k in labels])
            return {"centroids": c / np.linalg.norm(c, axis=1, keepdims=True).clip(min=1e-12)}

        c = ctx.cache.arrays("surrogate-centroids", key, centroids)["centroids"]
        self._centroids = torch.from_numpy(c).to(ctx.device)
        self.n_classes = len(labels)

    def _count_logits(self, train: ImageSet) -> int:
        with torch.inference_mode():
            return int(self.logits(to_tensor(train.images[:1])).shape[1])

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable scores [B, C]."""
        if self.recognizer.kind == "classifier":
            return self.recognizer.logits(images)
        assert self._centroids is not None, "fit() first"
        emb = self.recognizer.embed_torch(images)
        return IDENTITY_SCALE * emb @ self._centroids.to(emb.device, emb.dtype).T

    def module(self) -> nn.Module:
        """The surrogate as an ``nn.Module`` (what ART's PyTorchClassifier wraps)."""
        return _LogitsModule(self)


class _LogitsModule(nn.Module):
    def __init__(self, surrogate: Surrogate) -> None:
        super().__init__()
        self._surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._surrogate.logits(x)
