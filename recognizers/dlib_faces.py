"""dlib's face recognizer: ResNet-29 128-d descriptors (King 2017, "dlib-models").

An independent, real, pretrained identifier for black-box / transfer evaluation (it is not
differentiable). Optional extra ``[dlib]`` (dlib-bin and face-recognition-models). The model
files are found by path: ``face_recognition_models`` cannot be imported on setuptools ≥ 81 (it
needs pkg_resources), so privbench locates its data folder without importing it.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import InputSpec
from harness.core.errors import ModelFileError
from harness.core.params import Param
from harness.toolkit.imaging import apply_input_spec, to_uint8
from recognizers.gallery import REJECTION_PARAMS, GalleryIdentifier

INSTALL = 'pip install -e ".[dlib]"  (dlib-bin and face-recognition-models)'
SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_model_file(name: str) -> Path:
    """Path of a .dat file shipped by face-recognition-models; ModelFileError otherwise."""
    spec = find_spec("face_recognition_models")
    if find_spec("dlib") is None or spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the dlib recognizer needs the optional extra: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; reinstall face-recognition-models")
    return path


class DlibIdentifier(GalleryIdentifier):
    """dlib ResNet face descriptor on the whole crop (resized to ``input_size``), aligned by
    the 5-point landmark model; cosine nearest gallery entry (the descriptors' own rule is a
    Euclidean distance below 0.6). CPU only, one face at a time (about 170 ms each)."""

    params: ClassVar[dict[str, Param]] = {
        "input_size": Param(int, 150, "square side crops are resized to", low=32, high=2048),
        **REJECTION_PARAMS,
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        try:
            dlib_model_file(SHAPE_5)
            dlib_model_file(RESNET)
        except ModelFileError as exc:
            return [str(exc)]
        return []

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        import dlib

        self._dlib = dlib
        self.input_files = (dlib_model_file(SHAPE_5), dlib_model_file(RESNET))
        self._shape = dlib.shape_predictor(str(self.input_files[0]))
        self._net = dlib.face_recognition_model_v1(str(self.input_files[1]))
        s = self.input_size
        self.input_spec = InputSpec(size=(s, s), channels="rgb", interpolation="bicubic")

    def runs_on_host(self) -> bool:
        return True

    def embed(self, images: torch.Tensor) -> np.ndarray:
        crops = to_uint8(apply_input_spec(images, self.input_spec))
        s = self.input_size
        box = self._dlib.rectangle(0, 0, s - 1, s - 1)
        feats = np.stack(
            [
                np.asarray(
                    self._net.compute_face_descriptor(
                        np.ascontiguousarray(c), self._shape(np.ascontiguousarray(c), box)
                    ),
                    dtype=np.float32,
                )
                for c in crops
            ]
        )
        return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)
