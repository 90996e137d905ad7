"""SFace face identifier and YuNet face detector, run through OpenCV (Rajabi et al., PETS 2021,
§6.2, evaluates k-RTIO against face detection and face recognition; these are the real pretrained
pair that works offline here).
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from harness.api.contracts import Context, InputSpec, Recognizer
from harness.core.params import Param
from harness.toolkit.imaging import apply_input_spec, resize, to_uint8
from harness.toolkit.torch_modules import build_module, module_on
from recognizers.gallery import REJECTION_PARAMS, GalleryIdentifier
from recognizers.onnx_convert import fp32_onnx, to_torch
from recognizers.opencv_zoo import SFACE, YUNET, model_missing, model_path, yunet_detector


def opencv_major() -> int:
    """The installed OpenCV's major version."""
    return int(cv2.__version__.split(".")[0])


def _bgr_uint8(images: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """Resize per ``spec`` and return uint8 [B, H, W, 3] in the spec's channel order."""
    return to_uint8(apply_input_spec(images, spec))


class SFaceIdentifier(GalleryIdentifier):
    """SFace (OpenCV Zoo, 2021dec int8): 128-d embedding, nearest enrolled gallery entry by
    cosine similarity. Inputs are resized to 112×112 (bicubic); the network sees RGB on the
    0–255 scale (as OpenCV's ``blobFromImage(..., swapRB=True)`` gives it). With ``threshold``
    set, a probe whose best cosine is below it is rejected (−1); OpenCV's published
    same-identity threshold is 0.363.

    Backends give the same embedding (cosine ≥ 0.9999): ``opencv`` (FaceRecognizerSF on the
    shipped int8 file), ``onnxruntime`` and ``torch`` (the dequantised graph; see
    :mod:`recognizers.onnx_convert`). Only ``torch`` is batched and differentiable to its input
    (white-box counter-attacks and adaptive defenses need it), and it runs on the suite's device.
    """

    version: ClassVar[str] = "1"
    input_spec = InputSpec(size=(112, 112), channels="bgr", interpolation="bicubic")
    params: ClassVar[dict[str, Param]] = {
        **REJECTION_PARAMS,
        "backend": Param(
            str, "opencv", "inference engine", choices=("opencv", "onnxruntime", "torch")
        ),
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        lacking = model_missing(SFACE)
        if params.get("backend", "opencv") == "opencv" and opencv_major() >= 5:
            lacking.append(
                f"OpenCV {cv2.__version__} cannot run the int8 SFace model through "
                "FaceRecognizerSF: set params: {backend: torch} (or onnxruntime), or install "
                "'opencv-python-headless>=4.10,<5'"
            )
        return lacking

    @classmethod
    def gradient_problem(cls, params: dict[str, Any]) -> str | None:
        backend = params.get("backend", "opencv")
        if backend != "torch":
            return f"has no gradients with backend {backend}; set params: {{backend: torch}}"
        return None

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.require_ready()
        self.input_files = (model_path(SFACE),)
        self._loaded: Any = None

    def runs_on_host(self) -> bool:
        return self.backend != "torch"

    @property
    def _net(self) -> Any:
        """The network, loaded on first use: a run whose predictions are all cached never
        converts it to torch nor moves it to a GPU."""
        if self._loaded is None:
            path = self.input_files[0]
            if self.backend == "opencv":
                self._loaded = cv2.FaceRecognizerSF.create(str(path), "")
            elif self.backend == "onnxruntime":
                import onnxruntime as ort

                self._loaded = ort.InferenceSession(
                    str(fp32_onnx(path, SFACE.sha256)), providers=["CPUExecutionProvider"]
                )
            else:
                self._loaded = build_module(lambda: to_torch(path, SFACE.sha256))
                for p in self._loaded.parameters():
                    p.requires_grad_(False)
        return self._loaded

    def embed_torch(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable L2-normalised embeddings [B, 128] (torch backend)."""
        if self.backend != "torch":
            raise RuntimeError("sface: embed_torch needs backend: torch")
        module_on(self._net, images.device)
        x = resize(images, (112, 112), "bicubic") * 255.0  # RGB, 0–255
        return torch.nn.functional.normalize(self._net(x), dim=1)

    def embed(self, images: torch.Tensor) -> np.ndarray:
        """L2-normalised float32 [B, 128] embeddings."""
        if self.backend == "torch":
            with torch.inference_mode():
                return self.embed_torch(images).float().cpu().numpy()
        crops = _bgr_uint8(images, self.input_spec)
        if self.backend == "onnxruntime":
            name = self._net.get_inputs()[0].name
            feats = np.concatenate(
                [
                    self._net.run(
                        None,
                        {
                            name: np.ascontiguousarray(
                                c[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32
                            )
                        },
                    )[0]
                    for c in crops
                ]
            )
        else:
            feats = np.concatenate([self._net.feature(np.ascontiguousarray(c)) for c in crops])
        return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)


class YuNetDetector(Recognizer):
    """YuNet face detector (OpenCV Zoo, 2023mar int8). Small crops are upscaled to
    ``input_size`` first (25×25 LFW crops are far below YuNet's smallest anchor). Returns the
    number of faces found, −1 when none.
    """

    kind: ClassVar[str] = "detector"
    params: ClassVar[dict[str, Param]] = {
        "input_size": Param(int, 128, "square side images are resized to", low=16, high=4096),
        "score_threshold": Param(float, 0.6, "minimum face score", low=0.0, high=1.0),
        "nms_threshold": Param(float, 0.3, "non-maximum suppression IoU", low=0.0, high=1.0),
    }

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        return model_missing(YUNET)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.input_size
        self.input_spec = InputSpec(size=(s, s), channels="bgr", interpolation="bicubic")
        self.input_files = (model_path(YUNET),)
        self._net = yunet_detector(s, self.score_threshold, self.nms_threshold)

    def runs_on_host(self) -> bool:
        return True

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        out = np.empty(len(images), dtype=np.int64)
        for i, img in enumerate(_bgr_uint8(images, self.input_spec)):
            _, faces = self._net.detect(np.ascontiguousarray(img))
            out[i] = len(faces) if faces is not None and len(faces) else -1
        return out
