"""Pretrained torchvision classifiers from local weights (no downloads).

The scene-privacy protocol of MediaEval 2019 Pixel Privacy (Sakha, MediaEval 2019) attacks
ResNet50-Places365: ``resnet50(num_classes=365)``, checkpoint keys prefixed ``module.`` (it was
trained with DataParallel), ImageNet normalisation, 256×256 input. Any torchvision architecture
works the same way from a registered weight name or a checkpoint path.

Labels: a pretrained model predicts its own class indices. With ``classes_file`` (the model's
class names in order, one per line, e.g. Places365's ``categories_places365.txt``) predictions
are mapped to the data set's classes by name; a prediction of a class the data set lacks is
−2 (recognised as something else). Without it, data-set label i is model class i.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness import weights
from harness.contracts import REFERENCE_PARAM, Context, DataSplit, InputSpec, Recognizer
from harness.errors import ModelFileError, PrivbenchError
from harness.imaging import apply_input_spec
from harness.params import Param
from harness.torch_modules import module_on

ARCHITECTURES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "vgg16_bn",
    "vgg13_bn",
    "densenet121",
    "mobilenet_v2",
    "googlenet",
    "inception_v3",
    "alexnet",
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_class_names(path: Path) -> list[str]:
    """Class names, one per line; a first token like '/a/airfield' becomes 'airfield'."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            token = line.split()[0]
            names.append(token.split("/", 2)[-1] if token.startswith("/") else token)
    return names


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict (``weights_only=True``), from {'state_dict': …} or bare, with
    DataParallel's ``module.`` prefix removed."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelFileError(f"{path}: not a loadable torch checkpoint ({exc})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


class TorchvisionClassifier(Recognizer):
    """A torchvision architecture with weights from ``weights`` (a registered name, see
    ``privbench weights list``) or ``checkpoint`` (a file path); batched, under inference mode,
    on the suite's device."""

    kind: ClassVar[str] = "classifier"
    normalisation: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]] = (
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    params: ClassVar[dict[str, Param]] = {
        "arch": Param(str, "resnet50", "torchvision architecture", choices=ARCHITECTURES),
        "weights": Param(str, None, "registered weight name (privbench weights list)"),
        "checkpoint": Param(str, None, "path of a checkpoint file (instead of weights)"),
        "num_classes": Param(int, 1000, "classes of the model's head", low=1),
        "input_size": Param(int, 224, "square input side", low=16, high=4096),
        "classes_file": Param(str, None, "the model's class names in order, one per line"),
        **REFERENCE_PARAM,
    }

    @classmethod
    def default_weights(cls, params: dict[str, Any]) -> str | None:
        """The registered weights used when neither ``weights`` nor ``checkpoint`` is set."""
        return None

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        name = params.get("weights") or cls.default_weights(params)
        lacking = weights.model_file_missing(params.get("checkpoint"), name)
        classes = params.get("classes_file")
        if classes and not Path(classes).expanduser().is_file():
            lacking.append(
                f"classes_file {Path(classes).expanduser()} not found (the model's class names, "
                "one per line in its output order, e.g. Places365's categories_places365.txt)"
            )
        return lacking

    def build_model(self) -> torch.nn.Module:
        """The untrained architecture the weights are loaded into."""
        import torchvision

        kwargs = (
            {"aux_logits": False, "init_weights": False}
            if self.arch in ("googlenet", "inception_v3")
            else {}
        )
        return getattr(torchvision.models, self.arch)(
            weights=None, num_classes=self.num_classes, **kwargs
        )

    def build_input_spec(self) -> InputSpec:
        """Square input with the class's ``normalisation`` (mean, std)."""
        s = self.input_size
        mean, std = self.normalisation
        return InputSpec(size=(s, s), channels="rgb", mean=mean, std=std, interpolation="bilinear")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.require_ready()
        name = self.weights or self.default_weights(self.config)
        path = weights.model_file(self.checkpoint, name)
        self.input_files = (path,)
        self.model = self.build_model()
        try:
            self.model.load_state_dict(load_state_dict(path), strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ModelFileError(
                f"{path} does not fit {self.arch}(num_classes={self.num_classes}): {first}"
            ) from None
        self.model.eval()
        self.input_spec = self.build_input_spec()
        self._to_dataset: np.ndarray | None = None

    def fit(self, data: DataSplit, ctx: Context) -> None:
        """Map model classes to the data set's labels by name (pretrained: nothing to train)."""
        if not self.classes_file:
            return
        model_names = read_class_names(Path(self.classes_file).expanduser())
        if len(model_names) != self.num_classes:
            raise PrivbenchError(
                f"{self.classes_file} lists {len(model_names)} classes but the "
                f"model has {self.num_classes}"
            )
        if not data.class_names:
            raise PrivbenchError(
                "classes_file needs a data set with class names (folder, cifar10, digits)"
            )
        index = {n: i for i, n in enumerate(data.class_names)}
        self._to_dataset = np.array([index.get(n, -2) for n in model_names], dtype=np.int64)

    def logit_index(self, labels: np.ndarray) -> np.ndarray:
        """The model's class index of each data-set label (by name with ``classes_file``);
        −1 where the model has no such class."""
        labels = np.asarray(labels, dtype=np.int64)
        if self._to_dataset is None:
            return np.where((labels >= 0) & (labels < self.num_classes), labels, -1)
        inverse = {int(d): i for i, d in enumerate(self._to_dataset) if d >= 0}
        return np.array([inverse.get(int(v), -1) for v in labels], dtype=np.int64)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable class scores (white-box use)."""
        module_on(self.model, images.device)
        return self.model(apply_input_spec(images, self.input_spec))

    def scores(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """The model's class logits [B, num_classes]."""
        with torch.inference_mode():
            return self.logits(images).float().cpu().numpy()

    def decide(self, scores: np.ndarray) -> np.ndarray:
        idx = scores.argmax(1).astype(np.int64)
        return idx if self._to_dataset is None else self._to_dataset[idx]

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        return self.decide(self.scores(images, ctx))


class Places365ResNet50(TorchvisionClassifier):
    """ResNet50-Places365 (Zhou et al. 2017), the MediaEval 2019 Pixel Privacy target: 365
    scene classes, 256×256 input, ImageNet normalisation; weights ``resnet50-places365``."""

    params: ClassVar[dict[str, Param]] = {
        **TorchvisionClassifier.params,
        "arch": Param(str, "resnet50", "torchvision architecture", choices=("resnet50",)),
        "weights": Param(str, "resnet50-places365", "registered weight name"),
        "num_classes": Param(int, 365, "classes of the model's head", low=1),
        "input_size": Param(int, 256, "square input side", low=16, high=4096),
    }
