"""Face identification by embedding: enrol a gallery, answer with the nearest entry.

The linking and identification protocols (Rajabi et al., PETS 2021, §6; Oh, Fritz and Schiele, ICCV
2017) ask whether the platform's face identifier still links a protected photo to an enrolled
identity. Subclasses supply ``embed`` (L2-normalised embeddings); this class enrols (cached by
content) and answers with the cosine-nearest gallery entry, or −1 below an optional ``threshold``.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import Context, DataSplit, ImageSet, Recognizer
from harness.core.code_version import declare_kind_code
from harness.core.errors import ParamError, PrivbenchError
from harness.core.identity import method_identity
from harness.core.params import Param
from harness.toolkit.imaging import to_tensor

# The cache entries this module computes itself: their keys hold its code version.
declare_kind_code(["gallery"], [__name__])

REJECTION_PARAMS: dict[str, Param] = {
    "threshold": Param(
        float, None, "reject probes whose best cosine is below this", low=-1.0, high=1.0
    ),
    "far": Param(
        float,
        None,
        "instead of threshold: reject below the cosine that this share "
        "of impostor pairs in the clean gallery exceeds (false-accept rate)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    ),
}


class GalleryIdentifier(Recognizer):
    """Embedding + enrolled gallery + cosine nearest neighbour."""

    kind: ClassVar[str] = "identifier"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params.get("threshold") is not None and params.get("far") is not None:
            raise ParamError(f"{cls.__name__}.far: set threshold or far, not both")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._gallery: np.ndarray | None = None
        self._gallery_labels: np.ndarray | None = None
        self._threshold: float | None = None

    @abstractmethod
    def embed(self, images: torch.Tensor) -> np.ndarray:
        """L2-normalised float32 [B, D] embeddings."""

    def fit(self, data: DataSplit, ctx: Context) -> None:
        enroll = data.enroll

        def compute() -> dict[str, np.ndarray]:
            parts = [
                self.embed(to_tensor(enroll.images[i : i + ctx.batch_size], ctx.device))
                for i in range(0, len(enroll), ctx.batch_size)
            ]
            return {"embeddings": np.concatenate(parts)}

        # the embeddings do not depend on how matches are scored or rejected
        identity = method_identity(self, exclude=("reference", *REJECTION_PARAMS))
        key = {"recognizer": identity, "enroll": enroll.fingerprint()}
        self._gallery = ctx.cache.arrays("gallery", key, compute)["embeddings"]
        self._gallery_labels = enroll.labels.copy()
        self._threshold = self.config.get("threshold")
        if self.config.get("far") is not None:
            self._threshold = self.calibrate(self.config["far"])

    def with_templates(self, extra: ImageSet, ctx: Context) -> GalleryIdentifier:
        """A copy whose gallery also holds ``extra`` under its labels (this one is unchanged):
        how an identifier adapts to new photos of known identities without retraining."""
        if self._gallery is None or self._gallery_labels is None:
            raise RuntimeError(f"{type(self).__name__}: fit() must enroll a gallery first")
        parts = [
            self.embed(to_tensor(extra.images[i : i + ctx.batch_size], ctx.device))
            for i in range(0, len(extra), ctx.batch_size)
        ]
        adapted = copy.copy(self)
        adapted._gallery = np.concatenate([self._gallery, *parts])
        adapted._gallery_labels = np.concatenate([self._gallery_labels, extra.labels])
        return adapted

    def calibrate(self, far: float) -> float:
        """The cosine above which a share ``far`` of impostor pairs (different identities) of
        the enrolled gallery lie: accepting only above it falsely accepts that share."""
        assert self._gallery is not None and self._gallery_labels is not None
        sims = self._gallery @ self._gallery.T
        impostor = sims[self._gallery_labels[:, None] != self._gallery_labels[None, :]]
        if impostor.size == 0:
            raise PrivbenchError("far needs a gallery with at least two identities")
        return float(np.quantile(impostor, 1.0 - far))

    def scores(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """Cosine similarity of each probe to each enrolled gallery entry, [B, gallery]."""
        if self._gallery is None or self._gallery_labels is None:
            raise RuntimeError(f"{type(self).__name__}: fit() must enroll a gallery first")
        return self.embed(images) @ self._gallery.T

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """The label of the most similar entry, −1 where its cosine is below the threshold."""
        assert self._gallery_labels is not None
        best = scores.argmax(1)
        labels = self._gallery_labels[best].astype(np.int64)
        if self._threshold is not None:
            labels[scores[np.arange(len(best)), best] < self._threshold] = -1
        return labels

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        return self.decide(self.scores(images, ctx))
