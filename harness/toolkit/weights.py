"""Pretrained weights that do not ship in a package: where they live, how they are checked.

Every weight file has a registry entry: a name, the file name, its sha256 when published (or
the torchvision-style hash prefix in its file name), the public source for users with internet,
the licence and the recognizers that use it. Files live in ``$PRIVBENCH_HOME/weights``. Nothing
downloads: ``privbench weights add NAME PATH`` copies a file the user obtained, after checking
it. When no checksum is published, the first added file's sha256 is recorded in
``weights/checksums.json`` and every later use is checked against it (trust on first use; the
status says so). A missing or mismatched file is one message: which file, where it goes, where
to get it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.cache import privbench_home
from harness.core.errors import ModelFileError, UnknownNameError
from harness.core.files import atomic_write_json, sha256_of
from harness.core.params import suggest

# The zoo's weights are one zip of state dicts (933 MB); the repository publishes no checksums.
CIFAR10_ZOO_SOURCE = (
    "https://rutgers.box.com/shared/static/y9wi8ic7bshe2nn63prj9vsea7wibd4x.zip "
    "(state_dicts.zip of github.com/huyvnphan/PyTorch_CIFAR10)"
)
CIFAR10_ZOO = (
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "densenet161",
    "densenet169",
    "mobilenet_v2",
    "googlenet",
    "inception_v3",
)

CARTOONGAN_RELEASE = "http://vllab1.ucmerced.edu/~yli62/CartoonGAN/pytorch_pth/"
CARTOONGAN_STYLES = ("Hayao", "Hosoda", "Paprika", "Shinkai")

# deepface's recognition graphs (deepface 0.0.103, models/facial_recognition/onnx/).
DEEPFACE_RELEASE = "https://github.com/serengil/deepface_models/releases/download/v1.0/"
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
DEEPFACE_SOURCES = {
    "SFace": "the fp32 graph privbench caches for sface (the int8 file from "
    "github.com/opencv/opencv_zoo does not run in ONNX Runtime as is)",
}
DEEPFACE_LICENCES = {"SFace": "Apache-2.0 (OpenCV Zoo)"}


@dataclass(frozen=True)
class WeightFile:
    """One pretrained weight file."""

    name: str
    filename: str
    source: str
    licence: str
    used_by: tuple[str, ...]
    sha256: str | None = None  # full digest, when the publisher gives one
    sha256_prefix: str | None = None  # torchvision-style prefix embedded in the file name
    note: str = ""


WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="resnet50-places365",
            filename="resnet50_places365.pth.tar",
            source="http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar",
            licence="CC BY (Places365 models, MIT CSAIL)",
            used_by=("places365-resnet50",),
            note="torch checkpoint with a 'state_dict' whose keys start with 'module.'",
        ),
        WeightFile(
            name="facenet-vggface2",
            filename="20180402-114759-vggface2.pt",
            source="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
            "20180402-114759-vggface2.pt",
            licence="MIT (facenet-pytorch; trained on VGGFace2)",
            used_by=("facenet",),
            note="InceptionResnetV1 state dict with an 8631-way training head (dropped on load)",
        ),
        WeightFile(
            name="facenet-casia",
            filename="20180408-102900-casia-webface.pt",
            source="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
            "20180408-102900-casia-webface.pt",
            licence="MIT (facenet-pytorch; trained on CASIA-WebFace)",
            used_by=("facenet",),
            note="InceptionResnetV1 state dict with a 10575-way training head (dropped on load)",
        ),
        WeightFile(
            name="resnet50-imagenet",
            filename="resnet50-11ad3fa6.pth",
            source="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
            licence="BSD-3-Clause (torchvision)",
            used_by=("torchvision-classifier",),
            sha256_prefix="11ad3fa6",
            note="torchvision ResNet50_Weights.IMAGENET1K_V2",
        ),
        WeightFile(
            name="resnet18-imagenet",
            filename="resnet18-f37072fd.pth",
            source="https://download.pytorch.org/models/resnet18-f37072fd.pth",
            licence="BSD-3-Clause (torchvision)",
            used_by=("torchvision-classifier",),
            sha256_prefix="f37072fd",
            note="torchvision ResNet18_Weights.IMAGENET1K_V1",
        ),
        *(
            WeightFile(
                name=f"cifar10-{arch}",
                filename=f"cifar10/{arch}.pt",
                source=CIFAR10_ZOO_SOURCE,
                licence="MIT (huyvnphan/PyTorch_CIFAR10)",
                used_by=("cifar10-zoo",),
                note=f"state dict cifar10_models/state_dicts/{arch}.pt inside state_dicts.zip",
            )
            for arch in CIFAR10_ZOO
        ),
        *(
            WeightFile(
                name=f"deepface-{model.lower()}",
                filename=f"deepface/{filename}",
                source=DEEPFACE_SOURCES.get(model, DEEPFACE_RELEASE + filename),
                licence=DEEPFACE_LICENCES.get(model, "MIT (serengil/deepface_models)"),
                used_by=("deepface",),
                note=f"deepface's {model} graph, also found at ~/.deepface/weights/{filename}",
            )
            for model, filename in DEEPFACE_FILES.items()
        ),
        *(
            WeightFile(
                name=f"cartoongan-{style.lower()}",
                filename=f"cartoongan/{style}_net_G_float.pth",
                source=CARTOONGAN_RELEASE + f"{style}_net_G_float.pth (the PyTorch port of "
                "CartoonGAN, github.com/Yijunmaverick/CartoonGAN-Test-Pytorch-Torch)",
                licence="not stated by the publisher (research code)",
                used_by=("cartoongan",),
                note=f"generator state dict, {style} style",
            )
            for style in CARTOONGAN_STYLES
        ),
        WeightFile(
            name="nima-mobilenet",
            filename="nima/nima_mobilenet.pt",
            source="github.com/titu1994/neural-image-assessment (weights/mobilenet_weights.h5, "
            "the Keras NIMA the MediaEval 2019 organisers pointed to); `weights add` converts "
            "the .h5",
            licence="MIT (titu1994/neural-image-assessment; trained on AVA)",
            used_by=("nima", "nima_change"),
            note="MobileNetNIMA state dict (harness.metrics.nima), or the Keras .h5 to convert",
        ),
        WeightFile(
            name="nima-vgg16",
            filename="nima/nima_vgg16.pt",
            source="github.com/kentsyx/Neural-IMage-Assessment (a VGG-16 NIMA trained on AVA, "
            "epoch-82.pth)",
            licence="not stated by the publisher (research code)",
            used_by=("nima", "nima_change"),
            note="state dict with features.* (torchvision VGG-16) and classifier.1.*",
        ),
    )
}

# Files `weights add` converts before storing: registry name → (suffixes, converter).
CONVERTIBLE = {"nima-mobilenet": ((".h5", ".hdf5"), "harness.metrics.nima:keras_mobilenet_state")}


def weights_dir() -> Path:
    """``$PRIVBENCH_HOME/weights``."""
    return privbench_home() / "weights"


def get(name: str) -> WeightFile:
    """The registry entry ``name``; UnknownNameError with suggestions otherwise."""
    if name not in WEIGHTS:
        raise UnknownNameError(
            f"unknown weights {name!r}{suggest(name, list(WEIGHTS))}; known: {', '.join(WEIGHTS)}"
        )
    return WEIGHTS[name]


def _recorded() -> dict[str, str]:
    path = weights_dir() / "checksums.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError):
        return {}


def _check(w: WeightFile, digest: str) -> str | None:
    """None if ``digest`` is acceptable for ``w``, else what is wrong."""
    if w.sha256 and digest != w.sha256:
        return f"has sha256 {digest}, expected {w.sha256}"
    if w.sha256_prefix and not digest.startswith(w.sha256_prefix):
        return f"has sha256 {digest}, which does not start with {w.sha256_prefix}"
    recorded = _recorded().get(w.name)
    if not (w.sha256 or w.sha256_prefix) and recorded and digest != recorded:
        return f"has sha256 {digest}, but {recorded} was recorded when it was added"
    return None


def _missing_message(w: WeightFile, target: Path) -> str:
    file = Path(w.filename).name
    return (
        f"weights {w.name!r} not found: expected {target}. Get {file} from {w.source} "
        f"and run `privbench weights add {w.name} /path/to/{file}`"
    )


def locate(name: str) -> Path:
    """The verified local path of weights ``name``; ModelFileError saying what to do otherwise."""
    w = get(name)
    target = weights_dir() / w.filename
    if not target.is_file():
        raise ModelFileError(_missing_message(w, target))
    problem = _check(w, sha256_of(target))
    if problem:
        raise ModelFileError(
            f"{target} {problem}; replace it with the file from {w.source} "
            f"(`privbench weights add {w.name} PATH`)"
        )
    return target


def status(name: str) -> tuple[str, str]:
    """('ready' | 'missing' | 'mismatch', detail) without raising."""
    w = get(name)
    target = weights_dir() / w.filename
    if not target.is_file():
        return "missing", _missing_message(w, target)
    problem = _check(w, sha256_of(target))
    if problem:
        return "mismatch", f"{target} {problem}"
    how = (
        "checked against the published sha256"
        if w.sha256
        else "checked against the hash prefix in its file name"
        if w.sha256_prefix
        else "matches the sha256 recorded when it was added (none is published)"
    )
    return "ready", f"{target} ({how})"


def model_file_missing(checkpoint: str | None, name: str | None) -> list[str]:
    """Readiness of a model that takes ``checkpoint`` (a path) or registered weights ``name``."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        return [] if path.is_file() else [f"checkpoint {path} not found"]
    if not name:
        return ["set 'weights' (a registered name) or 'checkpoint' (a file path)"]
    state, detail = status(name)
    return [] if state == "ready" else [detail]


def model_file(checkpoint: str | None, name: str | None) -> Path:
    """The checkpoint path if given, else the verified registered weights ``name``."""
    if checkpoint:
        return Path(checkpoint).expanduser()
    if not name:
        raise ModelFileError("set 'weights' (a registered name) or 'checkpoint' (a file path)")
    return locate(name)


def add(name: str, source_file: str | Path) -> Path:
    """Verify ``source_file`` and copy it into the weights folder under its registry name."""
    w = get(name)
    src = Path(source_file).expanduser()
    if not src.is_file():
        raise ModelFileError(f"{src}: no such file")
    converted = _convert(name, src)
    if converted is not None:
        src = converted
    digest = sha256_of(src)
    problem = _check(w, digest)
    if problem:
        raise ModelFileError(f"{src} {problem}; not added (source: {w.source})")
    target = weights_dir() / w.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(target)
    if not (w.sha256 or w.sha256_prefix):
        recorded = _recorded()
        recorded[w.name] = digest
        atomic_write_json(weights_dir() / "checksums.json", recorded)
    return target


def _convert(name: str, src: Path) -> Path | None:
    """A converted copy of ``src`` (e.g. a Keras .h5 as a torch state dict) when ``name``
    takes one in that format, else None."""
    if name not in CONVERTIBLE or src.suffix.lower() not in CONVERTIBLE[name][0]:
        return None
    import importlib
    import tempfile

    import torch

    module, func = CONVERTIBLE[name][1].split(":")
    state = getattr(importlib.import_module(module), func)(src)
    out = Path(tempfile.mkdtemp()) / (src.stem + ".pt")
    torch.save(state, out)
    return out


def load_state_into(module: Any, path: Path | str, what: str) -> Any:
    """``module`` (eval mode, frozen) with the state dict at ``path`` loaded strictly;
    ModelFileError naming the file and ``what`` it should hold otherwise."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path} is not a {what} state dict: {str(exc).splitlines()[0]}"
        ) from None
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
