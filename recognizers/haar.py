"""OpenCV's Haar cascade face detectors (Viola & Jones 2001; Lienhart's frontal-face cascades).

The UEP reference code (the authors' released code) finds faces with an OpenCV Haar cascade before
perturbing them (docs/methods.md); the cascades ship inside opencv-python-headless < 5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from harness.api.contracts import Context, InputSpec, Recognizer
from harness.core.errors import ModelFileError
from harness.core.params import Param
from harness.toolkit.imaging import apply_input_spec, to_uint8

CASCADES = (
    "frontalface_default",
    "frontalface_alt",
    "frontalface_alt2",
    "frontalface_alt_tree",
    "profileface",
)


def cascade_path(name: str) -> Path:
    """The bundled cascade file; ModelFileError if this OpenCV build has none (OpenCV 5)."""
    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or ".")
    path = folder / f"haarcascade_{name}.xml"
    if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
        raise ModelFileError(
            f"{path.name} not found in OpenCV's data folder: the Haar cascades "
            "ship with opencv-python-headless < 5 (pip install "
            "'opencv-python-headless>=4.10,<5')"
        )
    return path


class HaarDetector(Recognizer):
    """Haar cascade face detector on the grayscale image, upscaled to ``input_size`` (small
    crops are below the cascade's 24×24 window). Returns the number of faces, −1 when none."""

    kind: ClassVar[str] = "detector"
    params: ClassVar[dict[str, Param]] = {
        "cascade": Param(str, "frontalface_default", "which bundled cascade", choices=CASCADES),
        "input_size": Param(int, 96, "square side images are resized to", low=24, high=4096),
        "scale_factor": Param(float, 1.1, "image pyramid step", low=1.0, low_open=True, high=2.0),
        "min_neighbors": Param(int, 3, "overlapping detections required", low=0, high=50),
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        try:
            cascade_path(params.get("cascade", "frontalface_default"))
        except ModelFileError as exc:
            return [str(exc)]
        return []

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.input_size
        self.input_spec = InputSpec(size=(s, s), channels="gray", interpolation="bicubic")
        self.input_files = (cascade_path(self.cascade),)
        self._net = cv2.CascadeClassifier(str(self.input_files[0]))

    def runs_on_host(self) -> bool:
        return True

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        gray = to_uint8(apply_input_spec(images, self.input_spec).expand(-1, 3, -1, -1))[..., 0]
        out = np.empty(len(images), dtype=np.int64)
        for i, g in enumerate(gray):
            found = self._net.detectMultiScale(
                np.ascontiguousarray(g), self.scale_factor, self.min_neighbors
            )
            out[i] = len(found) if len(found) else -1
        return out
