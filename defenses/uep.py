"""UEP: a universal ensemble perturbation added in tanh space (Rajabi et al., PETS 2021,
§5.1, Eq. 2-4, Fig. 3).

Learning. The owner trains a few small local CNNs on their own photos (default the paper's
three: two VGG-style nets at different resolutions and a FaceScrub-style net behind the 2×2
thumbnail layer; these are the ``small-cnn`` recognizers, trained and cached identically, so a
suite can attack them white-box). One perturbation δ (3 × size × size) is then learned over all
N images and all models at once, in batched passes:

    minimise ‖δ‖₂ + c · Σ_l Σ_i max(Y_l(x_i')_{y*} − max_{j≠y*} Y_l(x_i')_j, −κ)
    x_i' = ½·tanh(arctanh(2x_i − 1) + δ) + ½                      (β = 1 while learning)

on probability vectors Y_l, with y* each model's own clean prediction (the paper's y* =
argmax Y(x)). The paper prints the margin the other way round (max_{j≠y*} − y*), which,
minimised, would make the true class *more* certain; this is the untargeted Carlini-Wagner
margin it describes. δ is the free variable (the tanh change of variable keeps x' in (0, 1)).
For each c, ``steps`` Adam steps (rate ``lr``) run from δ = 0 and keep the smallest δ seen that
fools every local CNN on at least p·N images; c is then bisected over [c_low, c_high]
(success: c shrinks; failure: c grows) until the bracket is within ``tolerance`` or after
``search_rounds``. The paper's midpoint is arithmetic, (low + high)/2, which from [0.001, 1e5]
needs ~15 halvings before c reaches the useful range near 1-10; ``search: geometric`` bisects
√(low·high) instead and is the default. κ, the optimiser, rate, step count and rounds are not
given in the paper; the defaults here are documented in ``params``.

Application: x' = ½·tanh(arctanh(2x − 1) + β·δ) + ½, δ resized to the whole image or to each
Haar-detected face box (the reference code perturbs faces only). Recovery subtracts β·δ in tanh
space: exact up to the uint8 quantisation of the upload. The owner's artefact is δ (npz) plus,
in face mode, the boxes per image; its size is reported.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from defenses.uep_delta import learn_delta, tanh_apply, tanh_remove
from harness.api.contracts import Context, DataSplit, Defense, ImageSet
from harness.api.registry import RECOGNIZERS
from harness.core.cache import content_key
from harness.core.code_version import declare_kind_code
from harness.core.errors import PrivbenchError
from harness.core.identity import method_identity
from harness.core.params import Param
from harness.toolkit.imaging import resize, to_tensor, to_uint8
from recognizers.small_cnn import SmallCNN

# The cache entries this module computes itself: their keys hold its code version.
declare_kind_code(["uep", "uep-boxes", "haar-face-boxes"], [__name__])

# The paper's local ensemble (§5.1): two VGG-style nets at different resolutions and one
# FaceScrub-style net behind the thumbnail layer. Resolutions are scaled to small crops.
LOCAL_ENSEMBLE: tuple[dict[str, Any], ...] = (
    {"shape": "vgg5", "input_size": 64},
    {"shape": "vgg5", "input_size": 32},
    {"shape": "facescrub3", "input_size": 64},
)


def resize_delta(delta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """δ [3, s, s] resized to ``size`` (H, W); area-like (antialiased) when shrinking."""
    if tuple(delta.shape[-2:]) == tuple(size):
        return delta
    return F.interpolate(
        delta[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


def haar_face_boxes(image: np.ndarray, min_side: int = 96) -> list[tuple[int, int, int, int]]:
    """Faces as (x, y, w, h) by OpenCV's default frontal cascade with the reference code's
    ``detectMultiScale(gray, 1.1, 4)``; small images are upscaled to ``min_side`` first."""
    from recognizers.haar import cascade_path

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.shape[2] == 3 else image[..., 0]
    scale = max(1.0, min_side / min(gray.shape))
    if scale > 1.0:
        size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_CUBIC)
    detector = cv2.CascadeClassifier(str(cascade_path("frontalface_default")))
    found = detector.detectMultiScale(np.ascontiguousarray(gray), 1.1, 4)
    h, w = image.shape[:2]
    boxes = []
    for bx, by, bw, bh in found if len(found) else []:
        x0, y0 = int(bx / scale), int(by / scale)
        x1, y1 = min(w, math.ceil((bx + bw) / scale)), min(h, math.ceil((by + bh) / scale))
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


class UEP(Defense):
    """Universal ensemble perturbation (Rajabi et al., PETS 2021, §5.1), learned on the owner's
    photos."""

    reversible: ClassVar[bool] = True
    family: ClassVar[str | None] = "universal-perturbation"
    version: ClassVar[str] = "2"
    smoke: ClassVar[dict[str, Any]] = {
        "cnn_steps": 5,
        "steps": 3,
        "search_rounds": 2,
        "learn_images": 8,
    }
    params: ClassVar[dict[str, Param]] = {
        "beta": Param(float, 3.0, "strength β at application", low=0.0, low_open=True, high=20.0),
        "region": Param(
            str,
            "image",
            "perturb the whole image or each Haar face box",
            choices=("image", "faces"),
        ),
        "size": Param(int, 64, "side of δ (the working resolution)", low=8, high=512),
        "width": Param(int, 16, "first-stage channels of the local CNNs", low=4, high=256),
        "cnn_steps": Param(int, 500, "training steps of each local CNN", low=1, high=1_000_000),
        "kappa": Param(
            float, 0.1, "confidence κ of the margin (probability units)", low=0.0, high=1.0
        ),
        "steps": Param(int, 100, "Adam steps per value of c", low=1, high=100_000),
        "lr": Param(float, 0.05, "Adam step size on δ", low=0.0, low_open=True, high=10.0),
        "p": Param(
            float,
            0.7,
            "share of images every local CNN must be fooled on",
            low=0.0,
            low_open=True,
            high=1.0,
        ),
        "c_low": Param(float, 0.001, "lower end of the search on c", low=0.0, low_open=True),
        "c_high": Param(float, 100_000.0, "upper end of the search on c", low=0.0, low_open=True),
        "search": Param(
            str,
            "geometric",
            "midpoint of the c search (paper: arithmetic)",
            choices=("geometric", "arithmetic"),
        ),
        "search_rounds": Param(int, 8, "most values of c tried", low=1, high=100),
        "tolerance": Param(
            float,
            0.05,
            "stop when the c bracket is this tight (relative)",
            low=0.0,
            low_open=True,
            high=1.0,
        ),
        "learn_images": Param(int, None, "learn on at most this many fit images (seeded)", low=1),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.delta: torch.Tensor | None = None
        self.report: dict[str, float] = {}
        self._key = ""
        self._local_weights: frozenset[str] = frozenset()
        self._boxes: dict[str, list[tuple[int, int, int, int]]] = {}

    def local_models(self) -> list[SmallCNN]:
        """The local ensemble, as ``small-cnn`` recognizers (same cache identity)."""
        return [
            RECOGNIZERS.create("small-cnn", {**spec, "width": self.width, "steps": self.cnn_steps})
            for spec in LOCAL_ENSEMBLE
        ]

    def fit(self, train: ImageSet, ctx: Context) -> None:
        key = {
            "uep": method_identity(self, exclude=("beta", "region")),
            "fit": train.fingerprint(),
            "seed": ctx.seed,
        }
        self._key = content_key("uep", key)
        self._local_weights = frozenset(
            content_key("small-cnn", m.training_key(train, ctx)) for m in self.local_models()
        )
        stored = ctx.cache.arrays("uep", key, lambda: self._learn(train, ctx))
        self.delta = torch.from_numpy(stored["delta"])
        self.report = {k: float(stored[k]) for k in stored if k != "delta"}

    def _learn(self, train: ImageSet, ctx: Context) -> dict[str, np.ndarray]:
        models = self.local_models()
        split = DataSplit(fit=train, enroll=train, probe=train, protocol="uep-local")
        for m in models:
            m.fit(split, ctx)  # may come from the cache; its training time is stored with it
            for param in m.model.parameters():
                param.requires_grad_(False)
        cnn_seconds = sum(m.train_seconds for m in models)
        t1 = time.perf_counter()
        subset = train
        if self.learn_images is not None and self.learn_images < len(train):
            pick = ctx.rng("uep", "learn-images").choice(len(train), self.learn_images, False)
            subset = train.subset(np.sort(pick))
        images = resize(to_tensor(subset.images, ctx.device), (self.size, self.size), "bicubic")
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ctx.rng("uep", "search").integers(2**62))
            result = learn_delta(
                models,
                images,
                kappa=self.kappa,
                steps=self.steps,
                lr=self.lr,
                p=self.p,
                c_low=self.c_low,
                c_high=self.c_high,
                search=self.search,
                search_rounds=self.search_rounds,
                tolerance=self.tolerance,
            )
        t2 = time.perf_counter()
        delta = result.delta.detach().cpu().float().numpy()
        buf = io.BytesIO()
        np.savez_compressed(buf, delta=delta)
        return {
            "delta": delta,
            "learn_seconds": np.float64(cnn_seconds + t2 - t1),
            "cnn_seconds": np.float64(cnn_seconds),
            "search_seconds": np.float64(t2 - t1),
            "learn_images": np.float64(len(subset)),
            "fooled_share": np.float64(result.fooled_share),
            "reached_p": np.float64(result.reached),
            "c": np.float64(result.c),
            "search_rounds": np.float64(result.rounds),
            "delta_l2": np.float64(np.linalg.norm(delta)),
            "artefact_bytes": np.float64(len(buf.getvalue())),
        }

    def surrogate_weights(self) -> frozenset[str]:
        return self._local_weights

    def fit_report(self) -> dict[str, float]:
        boxes = sum(len(b) for b in self._boxes.values())
        return {**self.report, "target_share": self.p, "box_bytes": float(16 * boxes)}

    def _require_delta(self) -> torch.Tensor:
        if self.delta is None:
            raise PrivbenchError("uep: fit() must learn the perturbation before protect/recover")
        return self.delta

    def _boxes_for(self, image_id: str, image: torch.Tensor | None, ctx: Context) -> list:
        """Face boxes of ``image_id``. Protecting (``image`` given): detected on the clean image
        (cached by its content) and recorded under the id, in memory and in the cache, for
        recovery, as the reference code's facelocation.pkl. Recovering: the recorded boxes."""
        record = {"uep": self._key, "id": image_id}
        if image is None:
            if image_id not in self._boxes:
                stored = ctx.cache.stored_arrays("uep-boxes", record)
                if stored is None:
                    raise PrivbenchError(
                        f"uep: no face boxes stored for {image_id!r}; protect it first"
                    )
                self._boxes[image_id] = [tuple(int(v) for v in b) for b in stored["boxes"]]
            return self._boxes[image_id]
        pixels = to_uint8(image[None])[0]

        def detect() -> dict[str, np.ndarray]:
            found = haar_face_boxes(pixels)
            return {"boxes": np.asarray(found, dtype=np.int64).reshape(-1, 4)}

        digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        boxes = ctx.cache.arrays("haar-face-boxes", {"image": digest}, detect)
        ctx.cache.store_arrays("uep-boxes", record, boxes)
        self._boxes[image_id] = [tuple(int(v) for v in b) for b in boxes["boxes"]]
        return self._boxes[image_id]

    def _transform(
        self, images: torch.Tensor, ids: list[str], ctx: Context, protecting: bool
    ) -> torch.Tensor:
        delta = self._require_delta().to(images.device)
        op = tanh_apply if protecting else tanh_remove
        if self.region == "image":
            return op(images, resize_delta(delta, tuple(images.shape[-2:])), self.beta)
        out = images.clone()
        for i, image_id in enumerate(ids):
            for x, y, w, h in self._boxes_for(image_id, images[i] if protecting else None, ctx):
                patch = out[i : i + 1, :, y : y + h, x : x + w]
                out[i : i + 1, :, y : y + h, x : x + w] = op(
                    patch, resize_delta(delta, (h, w)), self.beta
                )
        return out

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return self._transform(images, ids, ctx, protecting=True)

    def recover(self, protected: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        return self._transform(protected, ids, ctx, protecting=False)
