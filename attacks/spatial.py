"""Counter-attacks against geometric defenses: undo a rotation and shift before recognising.

``face-align``: what face pipelines do anyway. YuNet finds the face and its five landmarks
(eyes, nose tip, mouth corners); a similarity transform (rotation, uniform scale, shift) maps
them onto a canonical layout and the photo is warped accordingly. The canonical layout is the
median landmark layout of the protected pool the platform receives (``template: pool``;
random rotations and shifts are centred on no change, so the median recovers the usual pose),
or the ArcFace five-point template (Deng et al., CVPR 2019) scaled to the photo
(``template: arcface``). Photos without a detected face stay as they are.

``spatial-tta``: the platform votes. It recognises every photo under a grid of small
rotations and shifts (the identity included) and answers with the most frequent label, the
untransformed answer breaking ties (test-time augmentation against Engstrom et al.'s spatial
attack, ICML 2019, §5).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from defenses.euclidean import TRANSFORM_LIMIT_PARAMS, check_granularity
from harness.api.contracts import Context, CounterAttack, Recognizer
from harness.core.params import Param
from harness.toolkit.geometry import rotate_translate, transform_grid
from harness.toolkit.imaging import to_tensor, to_uint8
from recognizers.opencv_zoo import YUNET, model_missing, model_path, yunet_detector

# ArcFace's 112×112 five-point template (left eye, right eye, nose, left and right mouth
# corner), as fractions of the crop.
ARCFACE_TEMPLATE = (
    np.array(
        [
            [38.2946, 51.6963],
            [73.5318, 51.5014],
            [56.0252, 71.7366],
            [41.5493, 92.3655],
            [70.7299, 92.2041],
        ]
    )
    / 112.0
)


class FaceAlign(CounterAttack):
    """Re-detect the face and warp its landmarks onto a canonical layout."""

    knows = "algorithm"  # that the protection moves the face (a rotation, shift or scale)
    targets: ClassVar[frozenset[str]] = frozenset({"spatial-transform"})  # undoes the warp
    params: ClassVar[dict[str, Param]] = {
        "template": Param(str, "pool", "canonical layout", choices=("pool", "arcface")),
        "detector_size": Param(int, 128, "side photos are resized to for YuNet", low=32),
        "score_threshold": Param(float, 0.6, "minimum face score", low=0.0, high=1.0),
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        return model_missing(YUNET)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.input_files = (model_path(YUNET),)
        self._net = yunet_detector(self.detector_size, self.score_threshold, 0.3)
        self._template: np.ndarray | None = None

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Five landmarks of the most confident face as fractions of the size, or None."""
        s = self.detector_size
        bgr = cv2.resize(image[..., ::-1], (s, s), interpolation=cv2.INTER_CUBIC)
        _, faces = self._net.detect(np.ascontiguousarray(bgr))
        if faces is None or not len(faces):
            return None
        best = faces[int(np.argmax(faces[:, -1]))]
        return best[4:14].reshape(5, 2).astype(np.float64) / s

    def correction(self, photo: np.ndarray) -> np.ndarray | None:
        """The 2×3 similarity (pixels) that maps the photo's landmarks onto the template, or
        None without a face."""
        assert self._template is not None, "fit() first"
        points = self.landmarks(photo)
        if points is None:
            return None
        scale = np.array([photo.shape[1], photo.shape[0]], dtype=np.float64)
        matrix, _ = cv2.estimateAffinePartial2D(
            points * scale, self._template * scale, method=cv2.LMEDS
        )
        return matrix

    def fit(self, protected: torch.Tensor, ctx: Context) -> None:
        if self.template == "arcface":
            self._template = ARCFACE_TEMPLATE
            return
        found = [p for p in map(self.landmarks, to_uint8(protected)) if p is not None]
        self._template = np.median(np.stack(found), axis=0) if found else ARCFACE_TEMPLATE

    def transform(self, images: torch.Tensor, ctx: Context) -> torch.Tensor:
        assert self._template is not None, "fit() first"
        photos = to_uint8(images)
        out = photos.copy()
        h, w = photos.shape[1:3]
        for i, photo in enumerate(photos):
            matrix = self.correction(photo)
            if matrix is None:
                continue
            out[i] = cv2.warpAffine(
                photo, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)
            ).reshape(photo.shape)
        return to_tensor(out, images.device)


class SpatialVote(CounterAttack):
    """Majority vote of the recognizer over a grid of small rotations and shifts."""

    knows = "algorithm"  # that the protection is a small rotation and shift
    targets: ClassVar[frozenset[str]] = frozenset({"spatial-transform"})  # votes over inverses

    smoke: ClassVar[dict[str, Any]] = {"granularity": [2, 2, 2]}
    params: ClassVar[dict[str, Param]] = {
        **TRANSFORM_LIMIT_PARAMS,
        "max_translation": Param(
            float, 0.1, "largest shift, a fraction of the width or height", low=0.0, high=1.0
        ),
        "max_rotation": Param(float, 10.0, "largest rotation in degrees", low=0.0, high=180.0),
        "granularity": Param(list, [3, 3, 3], "grid points per dimension [x, y, rotation]"),
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        check_granularity("spatial-tta", params["granularity"])

    def wrap(self, recognizer: Recognizer) -> Recognizer:
        grid = transform_grid(
            self.max_translation,
            self.max_rotation,
            check_granularity("spatial-tta", self.granularity),
        )
        return VotingRecognizer(recognizer, grid)


class VotingRecognizer(Recognizer):
    """``inner`` queried under each transform of ``grid``; the most frequent label wins."""

    def __init__(self, inner: Recognizer, grid: np.ndarray) -> None:
        super().__init__(**inner.config)
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]
        self.grid = grid

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        votes = []
        for tx, ty, angle in self.grid:
            n = len(images)
            moved = rotate_translate(
                images, torch.full((n,), angle), torch.full((n,), tx), torch.full((n,), ty)
            )
            votes.append(np.asarray(self.inner.predict(moved, ctx), dtype=np.int64))
        identity = np.flatnonzero(~self.grid.any(axis=1))
        plain = (
            votes[int(identity[0])]
            if len(identity)
            else np.asarray(self.inner.predict(images, ctx), dtype=np.int64)
        )
        return np.array([_vote([v[i] for v in votes], plain[i]) for i in range(len(plain))])


def _vote(labels: list[int], untransformed: int) -> int:
    counts = Counter(labels)
    top = max(counts.values())
    winners = [label for label, c in counts.items() if c == top]
    return untransformed if untransformed in winners else min(winners)
