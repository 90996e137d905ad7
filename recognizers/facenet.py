"""MTCNN face detector and FaceNet (InceptionResnetV1) identifier from facenet-pytorch.

facenet-pytorch pins torch < 2.3 and numpy < 2, so it is an optional, separate install that
skips its dependencies: ``pip install requests && pip install --no-deps facenet-pytorch==2.6.0``.
MTCNN's weights ship in its wheel (ready offline). FaceNet's VGGFace2 / CASIA-WebFace weights do
not: they are registered weight files (``privbench weights list``) or a ``checkpoint`` path.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import Context, InputSpec, Recognizer, WeightFile
from harness.core.errors import ModelFileError
from harness.core.params import Param
from harness.toolkit import weights
from harness.toolkit.imaging import apply_input_spec, resize, to_uint8
from harness.toolkit.torch_modules import module_on
from recognizers.gallery import REJECTION_PARAMS, GalleryIdentifier

INSTALL = "pip install requests && pip install --no-deps facenet-pytorch==2.6.0"
RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
WEIGHT_FILES = (
    WeightFile(
        name="facenet-vggface2",
        filename="20180402-114759-vggface2.pt",
        source=RELEASE + "20180402-114759-vggface2.pt",
        licence="MIT (facenet-pytorch; trained on VGGFace2)",
        note="InceptionResnetV1 state dict with an 8631-way training head (dropped on load)",
    ),
    WeightFile(
        name="facenet-casia",
        filename="20180408-102900-casia-webface.pt",
        source=RELEASE + "20180408-102900-casia-webface.pt",
        licence="MIT (facenet-pytorch; trained on CASIA-WebFace)",
        note="InceptionResnetV1 state dict with a 10575-way training head (dropped on load)",
    ),
)


def facenet_missing() -> list[str]:
    """[] when facenet-pytorch (and its undeclared need, requests) can be imported."""
    lacking = [m for m in ("facenet_pytorch", "requests") if find_spec(m) is None]
    return [f"needs the optional package facenet-pytorch: {INSTALL}"] if lacking else []


class MtcnnDetector(Recognizer):
    """MTCNN (Zhang et al. 2016) face detector, P/R/O-net weights from the facenet-pytorch
    wheel. Small crops are upscaled to ``input_size``. Returns the number of faces whose
    probability is at least ``min_probability``, −1 when none."""

    kind: ClassVar[str] = "detector"
    params: ClassVar[dict[str, Param]] = {
        "input_size": Param(int, 160, "square side images are resized to", low=32, high=4096),
        "min_face_size": Param(int, 20, "smallest face searched, in pixels", low=4),
        "min_probability": Param(
            float, 0.9, "keep faces at least this probable", low=0.0, high=1.0
        ),
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        return facenet_missing()

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.require_ready()
        s = self.input_size
        self.input_spec = InputSpec(size=(s, s), channels="rgb", interpolation="bicubic")
        self._nets: dict[str, Any] = {}

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        from facenet_pytorch import MTCNN

        key = str(ctx.device)
        if key not in self._nets:
            self._nets[key] = MTCNN(
                keep_all=True, min_face_size=self.min_face_size, device=ctx.device
            )
        batch = to_uint8(apply_input_spec(images, self.input_spec))
        _, probs = self._nets[key].detect(batch)
        out = np.full(len(images), -1, dtype=np.int64)
        for i, p in enumerate(probs):
            if p is not None:
                found = int(
                    np.sum(
                        np.asarray([q for q in np.atleast_1d(p) if q is not None], dtype=np.float64)
                        >= self.min_probability
                    )
                )
                out[i] = found if found else -1
        return out


class FaceNetIdentifier(GalleryIdentifier):
    """FaceNet (Schroff et al. 2015; InceptionResnetV1 as in facenet-pytorch): 512-d embedding
    of a 160×160 crop standardised as (x·255 − 127.5)/128, cosine nearest gallery entry.
    Batched and differentiable (``embed_torch``) on the suite's device."""

    params: ClassVar[dict[str, Param]] = {
        "weights": Param(
            str,
            "facenet-vggface2",
            "registered weights",
            choices=("facenet-vggface2", "facenet-casia"),
        ),
        "checkpoint": Param(str, None, "a state-dict file instead of registered weights"),
        **REJECTION_PARAMS,
    }
    weight_files: ClassVar[tuple[WeightFile, ...]] = WEIGHT_FILES

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        return facenet_missing() + weights.model_file_missing(
            params.get("checkpoint"), params.get("weights"), cls.weight_files
        )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.require_ready()
        from facenet_pytorch import InceptionResnetV1

        path = weights.model_file(self.checkpoint, self.weights, self.weight_files)
        self.input_files = (path,)
        state = torch.load(path, map_location="cpu", weights_only=True)
        # the published files include the training head (8631 / 10575 identities): drop it
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        self.model = InceptionResnetV1(pretrained=None, classify=False).eval()
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                f"{path} is not an InceptionResnetV1 state dict: {str(exc).splitlines()[0]}"
            ) from None
        for p in self.model.parameters():
            p.requires_grad_(False)

    def embed_torch(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable L2-normalised embeddings [B, 512]."""
        module_on(self.model, images.device)
        x = (resize(images, (160, 160), "bilinear") * 255.0 - 127.5) / 128.0
        return torch.nn.functional.normalize(self.model(x), dim=1)

    def embed(self, images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.embed_torch(images).float().cpu().numpy()
