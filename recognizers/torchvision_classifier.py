"""Pretrained torchvision classifiers from local weights (no downloads).

The scene-privacy protocol of MediaEval 2019 Pixel Privacy (Sakha, MediaEval 2019) attacks
ResNet50-Places365: ``resnet50(num_classes=365)``, checkpoint keys prefixed ``module.`` (it was
trained with DataParallel), ImageNet normalisation, 256×256 input. Any torchvision architecture
works the same way from a registered weight name or a checkpoint path.

Labels: a pretrained model predicts its own class indices. With ``classes_file`` (the model's
class names in order, one per line, e.g. Places365's ``categories_places365.txt``, Zhou et al.,
TPAMI 2018) predictions are mapped to the data set's classes by name (:func:`map_classes`).
Names are compared after one flattening, '/' → '_' (:func:`flatten_class_name`): Places365's
``/c/church/indoor`` is the class ``church/indoor`` and matches a data-set class
``church/indoor`` (nested folders ``church/indoor/``) or ``church_indoor`` (one flat folder).
11 of the 60 sensitive categories of MediaEval 2019 Pixel Privacy (Sakha, MediaEval 2019) have
such names. A model class the data set lacks gets a label of its own below −1 (−2 for the first
such class in the model's order, −3 for the second, …): a prediction of it is "recognised as
something else", never equal to a true label (≥ 0) nor to −1 (no face / rejected), and two
different unmapped classes differ, so with ``reference: clean`` any change of the top-1 class
counts as fooled, as the task defines it. Without ``classes_file``, data-set label i is model
class i.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.api.contracts import (
    REFERENCE_PARAM,
    Context,
    DataSplit,
    InputSpec,
    Recognizer,
    WeightFile,
)
from harness.core.errors import ModelFileError, PrivbenchError
from harness.core.params import Param
from harness.toolkit import weights
from harness.toolkit.imaging import apply_input_spec
from harness.toolkit.torch_modules import module_on

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


def imagenet_input(size: int) -> InputSpec:
    """A ``size``² RGB input with ImageNet normalisation, resized bilinearly."""
    return InputSpec((size, size), "rgb", IMAGENET_MEAN, IMAGENET_STD, "bilinear")


IMAGENET_WEIGHTS = (
    WeightFile(
        name="resnet50-imagenet",
        filename="resnet50-11ad3fa6.pth",
        source="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        licence="BSD-3-Clause (torchvision)",
        sha256_prefix="11ad3fa6",
        note="torchvision ResNet50_Weights.IMAGENET1K_V2",
        input_spec=imagenet_input(224),
    ),
    WeightFile(
        name="resnet18-imagenet",
        filename="resnet18-f37072fd.pth",
        source="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        licence="BSD-3-Clause (torchvision)",
        sha256_prefix="f37072fd",
        note="torchvision ResNet18_Weights.IMAGENET1K_V1",
        input_spec=imagenet_input(224),
    ),
)
PLACES365_WEIGHTS = WeightFile(
    name="resnet50-places365",
    filename="resnet50_places365.pth.tar",
    source="http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar",
    licence="CC BY (Places365 models, MIT CSAIL)",
    note="torch checkpoint with a 'state_dict' whose keys start with 'module.'",
    input_spec=imagenet_input(256),
)


FIRST_UNMAPPED = -2  # the label of the first model class the data set lacks; then −3, −4, …


def read_class_names(path: Path) -> list[str]:
    """Class names, one per line, from each line's first token; Places365's index-letter prefix
    is dropped (Zhou et al., TPAMI 2018): '/a/airfield 0' gives 'airfield', '/c/church/indoor
    90' gives 'church/indoor' (the '/' inside the name is kept)."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            token = line.split()[0]
            names.append(token.split("/", 2)[-1] if token.startswith("/") else token)
    return names


def flatten_class_name(name: str) -> str:
    """The key class names are matched by: '/' → '_', so Places365's 'church/indoor' matches a
    data-set folder 'church/indoor' (nested) or 'church_indoor' (flat)."""
    return name.replace("/", "_")


def _flat_index(names: Sequence[str], what: str) -> dict[str, int]:
    """Flattened name → position; two names with one key are an error naming both."""
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        key = flatten_class_name(name)
        if key in index:
            raise PrivbenchError(
                f"{what}: classes {names[index[key]]!r} (#{index[key]}) and {name!r} (#{i}) "
                f"both match {key!r} (names are compared with '/' read as '_'); rename one"
            )
        index[key] = i
    return index


def map_classes(
    model_names: Sequence[str], data_names: Sequence[str], source: str = "classes_file"
) -> np.ndarray:
    """int64 [K]: the data-set label of each of the model's K classes, matched by flattened
    name (:func:`flatten_class_name`). The j-th model class (in model order) that the data set
    lacks gets ``FIRST_UNMAPPED − j`` (−2, −3, …): distinct, below −1 and never a true label.
    Raises if two model names (of ``source``), or two data-set names, flatten to one key."""
    _flat_index(model_names, source)
    data = _flat_index(data_names, "the data set")
    to_dataset = np.array([data.get(flatten_class_name(n), -1) for n in model_names], np.int64)
    unmapped = to_dataset < 0
    to_dataset[unmapped] = FIRST_UNMAPPED - np.arange(int(unmapped.sum()), dtype=np.int64)
    return to_dataset


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
    weight_files: ClassVar[tuple[WeightFile, ...]] = IMAGENET_WEIGHTS

    @classmethod
    def default_weights(cls, params: dict[str, Any]) -> str | None:
        """The registered weights used when neither ``weights`` nor ``checkpoint`` is set."""
        return None

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        name = params.get("weights") or cls.default_weights(params)
        lacking = weights.model_file_missing(params.get("checkpoint"), name, cls.weight_files)
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
        path = weights.model_file(self.checkpoint, name, self.weight_files)
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
        """Map model classes to the data set's labels by name (:func:`map_classes`;
        pretrained: nothing to train)."""
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
        self._to_dataset = map_classes(model_names, data.class_names, str(self.classes_file))

    def logit_index(self, labels: np.ndarray) -> np.ndarray:
        """The model's class index of each data-set label (by name with ``classes_file``);
        −1 where the model has no such class. The inverse of :meth:`decide`: with
        ``classes_file`` an unmapped class's own label (≤ −2) gives that model class back;
        −1 (no face / rejected) gives −1."""
        labels = np.asarray(labels, dtype=np.int64)
        if self._to_dataset is None:
            return np.where((labels >= 0) & (labels < self.num_classes), labels, -1)
        inverse = {int(d): i for i, d in enumerate(self._to_dataset)}
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
        """The data-set label of the top-1 class: a label ≥ 0 for a mapped class, the class's
        own label ≤ −2 for one the data set lacks (module docstring); the model index without
        ``classes_file``."""
        idx = scores.argmax(1).astype(np.int64)
        return idx if self._to_dataset is None else self._to_dataset[idx]

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        return self.decide(self.scores(images, ctx))


class Places365ResNet50(TorchvisionClassifier):
    """ResNet50-Places365 (Zhou et al., TPAMI 2018), the MediaEval 2019 Pixel Privacy target
    (Sakha, MediaEval 2019): 365 scene classes, 256×256 input, ImageNet normalisation; weights
    ``resnet50-places365``. Its ``categories_places365.txt`` names some classes with a '/'
    (``/c/church/indoor``): a data-set folder ``church/indoor/`` or ``church_indoor/`` matches
    (module docstring)."""

    params: ClassVar[dict[str, Param]] = {
        **TorchvisionClassifier.params,
        "arch": Param(str, "resnet50", "torchvision architecture", choices=("resnet50",)),
        "weights": Param(str, "resnet50-places365", "registered weight name"),
        "num_classes": Param(int, 365, "classes of the model's head", low=1),
        "input_size": Param(int, 256, "square input side", low=16, high=4096),
    }
    weight_files: ClassVar[tuple[WeightFile, ...]] = (PLACES365_WEIGHTS,)
