"""Faces: scikit-image's ``lfw_subset`` (real LFW face crops and non-faces) with its
near-duplicate-linking and detection protocols, and the altered views its fit split is made of."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from harness.api.contracts import Dataset, DataSplit, ImageSet, apply_smoke
from harness.core.errors import ParamError
from harness.core.params import Param
from harness.datasets.splits import limit


def _gray_to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def augmented_views(
    images: np.ndarray, views: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``views`` altered copies of each uint8 [N, H, W, C] image, none equal to its original:
    a shift of 1-2 pixels in x or y (never none), a rotation of up to ±6° and a scale of
    0.94-1.06 about the centre (reflected borders), a mirror half the time, and brightness
    ±12 grey levels with contrast ×0.88-1.12. Returns (views [N·views, H, W, C], index of
    each view's original)."""
    import cv2

    n, h, w, c = images.shape
    out = np.empty((n * views, h, w, c), dtype=np.uint8)
    source = np.repeat(np.arange(n), views)
    for j, i in enumerate(source):
        original = images[i]
        while True:
            dx, dy = 0, 0
            while dx == 0 and dy == 0:
                dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
            m = cv2.getRotationMatrix2D(
                ((w - 1) / 2, (h - 1) / 2),
                float(rng.uniform(-6, 6)),
                float(rng.uniform(0.94, 1.06)),
            )
            m[:, 2] += (dx, dy)
            img = cv2.warpAffine(
                original, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            ).reshape(h, w, c)
            if rng.random() < 0.5:
                img = img[:, ::-1]
            x = img.astype(np.float64)
            x = (x - x.mean()) * rng.uniform(0.88, 1.12) + x.mean() + rng.uniform(-12, 12)
            view = np.clip(np.round(x), 0, 255).astype(np.uint8)
            if not np.array_equal(view, original):
                break
        out[j] = view
    return out, source


class LfwSubset(Dataset):
    """scikit-image's ``lfw_subset``: 100 real 25×25 grayscale face crops from Labeled Faces in
    the Wild (one photo per person) and 100 non-face crops.

    Protocols: *near-duplicate linking* (gallery = the clean faces, each its own identity;
    probes = their protected versions: can the platform link a protected photo to its original,
    as reverse image search does? With one photo per person this is not face recognition; use
    a ``folder`` data set with the ``recognition`` protocol for that) and *detection* (faces as
    probes, non-faces as negatives). Classifiers train on the fit split: ``fit_views`` altered
    copies of each face (:func:`augmented_views`), never the probe photos themselves. With
    ``fit_faces`` the fit split is instead that many other faces (a hold-out: the owner's
    models learn on photos that are not protected). Ids: ``lfw-000`` … ``lfw-099`` (views:
    ``lfw-007~v3``), ``nonface-000`` … ``nonface-099``.
    """

    protocol = "near-duplicate-linking+detection"
    params: ClassVar[dict[str, Param]] = {
        "max_probes": Param(
            int,
            None,
            "use only this many faces (a seeded subset); all 100 by default",
            low=1,
            high=100,
        ),
        "fit_faces": Param(
            int,
            None,
            "hold out: this many faces (seeded) fit the owner's models; the rest are the "
            "probes and the gallery. Default: the fit split is altered views of the probes",
            low=1,
            high=99,
        ),
        "fit_views": Param(
            int, 8, "altered copies of each face in the fit split (without fit_faces)", low=1
        ),
    }

    @classmethod
    def smoke_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Eight probes (and, with ``fit_faces``, at most eight held-out fit faces besides)."""
        held_out = params.get("fit_faces")
        if held_out is None:
            return apply_smoke(params, {"max_probes": 8, "fit_views": 2})
        fit = min(held_out, 8)
        return {
            **params,
            "fit_faces": fit,
            "max_probes": min(params.get("max_probes") or 100, fit + 8),
        }

    def load(self, seed: int) -> DataSplit:
        from skimage import data

        raw = data.lfw_subset()
        faces = _gray_to_u8(raw[:100])[..., None]
        nonfaces = _gray_to_u8(raw[100:])[..., None]
        face_set = ImageSet(
            faces, np.arange(100, dtype=np.int64), [f"lfw-{i:03d}" for i in range(100)]
        )
        face_set = limit(face_set, self.max_probes, np.random.default_rng(seed))
        negatives = ImageSet(
            nonfaces, np.full(100, -1, dtype=np.int64), [f"nonface-{i:03d}" for i in range(100)]
        )
        probe = face_set
        if self.fit_faces is None:
            views, source = augmented_views(
                face_set.images, self.fit_views, np.random.default_rng([seed, 2])
            )
            k = np.arange(len(source)) % self.fit_views
            fit = ImageSet(
                views,
                face_set.labels[source],
                [f"{face_set.ids[i]}~v{j}" for i, j in zip(source, k, strict=True)],
            )
        else:
            if self.fit_faces >= len(face_set):
                raise ParamError(
                    f"lfw-subset.fit_faces: {self.fit_faces} leaves no held-out faces "
                    f"(there are {len(face_set)}); use at most {len(face_set) - 1}"
                )
            order = np.random.default_rng([seed, 1]).permutation(len(face_set))
            fit = face_set.subset(np.sort(order[: self.fit_faces]))
            probe = face_set.subset(np.sort(order[self.fit_faces :]))
        return DataSplit(
            fit=fit,
            enroll=probe,
            probe=probe,
            negatives=negatives,
            protocol=self.protocol,
        )
