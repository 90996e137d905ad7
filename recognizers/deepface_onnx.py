"""DeepFace's face recognition models (VGG-Face, the identifier the UEP and k-RTIO papers
attacked, and its successors) run from deepface's own ONNX weight files, without deepface.

deepface (0.0.103) itself is not a dependency: it pulls a second OpenCV (5.x, which drops the
Haar cascades and cannot run the int8 SFace) and downloads every model at first use
(docs/methods.md). What it runs is plain ONNX: each recognition model is one graph file under
``$DEEPFACE_HOME/.deepface/weights``. This adapter reproduces deepface's ``represent`` on
already-cropped faces (``detector_backend='skip'``): the face is resized into the model's input
with black letterbox bars (``preprocessing.resize_image``), channels are BGR in [0, 1], then
deepface's ``normalization`` option; the graph takes NHWC float32. SFace is the exception: its
graph is OpenCV Zoo's, fed NCHW RGB on the 0–255 scale (the int8 file must first be dequantised,
see :mod:`recognizers.onnx_convert`; the ``sface`` recognizer is the direct route). deepface
truncates ``x·255`` to uint8 there; this adapter rounds (at most one grey level apart).

Weights: ``privbench weights add deepface-<model> FILE`` (deepface publishes no checksums, so
the first file added is recorded) or ``checkpoint: PATH`` to a file already in
``~/.deepface/weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import WeightFile
from harness.core.params import Param
from harness.toolkit import weights
from harness.toolkit.imaging import letterbox
from recognizers.gallery import REJECTION_PARAMS, GalleryIdentifier

# deepface's recognition graphs (deepface 0.0.103, models/facial_recognition/onnx/).
RELEASE = "https://github.com/serengil/deepface_models/releases/download/v1.0/"
DEEPFACE_FILES = {
    "VGG-Face": "vgg_face_weights.onnx",
    "Facenet": "facenet_weights.onnx",
    "Facenet512": "facenet512_weights.onnx",
    "ArcFace": "arcface_weights.onnx",
    "OpenFace": "openface_weights.onnx",
    "DeepFace": "VGGFace2_DeepFace_weights_val-0.9034.onnx",
    "DeepID": "deepid_weights.onnx",
    "GhostFaceNet": "ghostfacenet_v1.onnx",
    "SFace": "face_recognition_sface_2021dec.onnx",
}
_SOURCES = {
    "SFace": "the fp32 graph privbench caches for sface (the int8 file from "
    "github.com/opencv/opencv_zoo does not run in ONNX Runtime as is)",
}
_LICENCES = {"SFace": "Apache-2.0 (OpenCV Zoo)"}
WEIGHT_FILES = tuple(
    WeightFile(
        name=f"deepface-{model.lower()}",
        filename=f"deepface/{filename}",
        source=_SOURCES.get(model, RELEASE + filename),
        licence=_LICENCES.get(model, "MIT (serengil/deepface_models)"),
        note=f"deepface's {model} graph, also found at ~/.deepface/weights/{filename}",
    )
    for model, filename in DEEPFACE_FILES.items()
)


@dataclass(frozen=True)
class DeepfaceModel:
    """One of deepface's recognition graphs: file name, input (width, height), output size."""

    filename: str
    input_wh: tuple[int, int]
    dim: int
    nchw_rgb_255: bool = False  # SFace's OpenCV Zoo graph


_SHAPES = {
    "VGG-Face": ((224, 224), 4096),
    "Facenet": ((160, 160), 128),
    "Facenet512": ((160, 160), 512),
    "ArcFace": ((112, 112), 512),
    "OpenFace": ((96, 96), 128),
    "DeepFace": ((152, 152), 4096),
    "DeepID": ((47, 55), 160),
    "GhostFaceNet": ((112, 112), 512),
    "SFace": ((112, 112), 128),
}
DEEPFACE_MODELS: dict[str, DeepfaceModel] = {
    model: DeepfaceModel(filename, *_SHAPES[model], nchw_rgb_255=model == "SFace")
    for model, filename in DEEPFACE_FILES.items()
}
NORMALIZATIONS = ("base", "raw", "Facenet", "Facenet2018", "VGGFace", "VGGFace2", "ArcFace")
# deepface's per-channel means (BGR order, 0–255 scale) for the VGGFace normalisations.
_CHANNEL_MEANS = {
    "VGGFace": (93.5940, 104.7624, 129.1863),
    "VGGFace2": (91.4953, 103.8827, 131.0912),
}


def weight_name(model: str) -> str:
    """Registry name of a deepface model's weights, e.g. 'deepface-vgg-face'."""
    return f"deepface-{model.lower()}"


def normalize(x: np.ndarray, normalization: str) -> np.ndarray:
    """deepface ``preprocessing.normalize_input`` on BGR NHWC images in [0, 1]."""
    if normalization == "base":
        return x
    x = x * 255.0
    if normalization == "Facenet":  # per-image standardisation
        axes = (1, 2, 3)
        mean = x.mean(axis=axes, keepdims=True)
        std = np.maximum(x.std(axis=axes, keepdims=True), 1.0 / np.sqrt(x[0].size))
        return (x - mean) / std
    if normalization == "Facenet2018":
        return x / 127.5 - 1.0
    if normalization in _CHANNEL_MEANS:
        return x - np.asarray(_CHANNEL_MEANS[normalization], dtype=x.dtype)
    if normalization == "ArcFace":
        return (x - 127.5) / 128.0
    return x  # raw


class DeepfaceIdentifier(GalleryIdentifier):
    """A deepface recognition model (ONNX Runtime) + enrolled gallery + cosine nearest
    neighbour, as deepface's ``find``/``verify`` with ``distance_metric='cosine'``."""

    params: ClassVar[dict[str, Param]] = {
        **REJECTION_PARAMS,
        "model": Param(str, "VGG-Face", "deepface model", choices=tuple(DEEPFACE_MODELS)),
        "normalization": Param(str, "base", "deepface input normalisation", choices=NORMALIZATIONS),
        "weights": Param(str, None, "registered weight name (default deepface-<model>)"),
        "checkpoint": Param(str, None, "path of the model's .onnx file (instead of weights)"),
    }
    weight_files: ClassVar[tuple[WeightFile, ...]] = WEIGHT_FILES

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        name = params.get("weights") or weight_name(params["model"])
        return weights.model_file_missing(params.get("checkpoint"), name, cls.weight_files)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        import onnxruntime as ort

        self.require_ready()
        self.spec = DEEPFACE_MODELS[self.model]
        name = self.weights or weight_name(self.model)
        path = weights.model_file(self.checkpoint, name, self.weight_files)
        self.input_files = (path,)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def runs_on_host(self) -> bool:
        return True

    def model_input(self, images: torch.Tensor) -> np.ndarray:
        """What deepface feeds the graph for RGB [B, 3, H, W] faces in [0, 1]."""
        w, h = self.spec.input_wh
        x = letterbox(images.float(), (h, w)).clamp(0, 1).cpu().numpy()
        if self.spec.nchw_rgb_255:
            return np.round(x * 255.0).astype(np.float32)
        bgr_nhwc = np.ascontiguousarray(x[:, ::-1].transpose(0, 2, 3, 1))
        return normalize(bgr_nhwc, self.normalization).astype(np.float32)

    def embed(self, images: torch.Tensor) -> np.ndarray:
        x = self.model_input(images)
        # SFace's graph has a fixed batch of 1; the others take any batch.
        chunks = [x[i : i + 1] for i in range(len(x))] if self.spec.nchw_rgb_255 else [x]
        feats = np.concatenate([self._session.run(None, {self._input: c})[0] for c in chunks])
        feats = feats.reshape(len(x), -1).astype(np.float32)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)
