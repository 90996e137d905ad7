"""NIMA, neural image assessment (Talebi and Milanfar, IEEE TIP 2018, §III): a CNN predicts the
distribution p_1..p_10 of human aesthetic ratings (trained on AVA); the score is its mean
Σ i·p_i. The MediaEval 2019 Pixel Privacy task judged protected photos by it (clean test set:
4.64).

Two models, each loaded from local weights through the weights registry:

- ``mobilenet``: MobileNet v1 (α = 1) with global average pooling, dropout and a 10-way
  softmax, as in the Keras implementation the task organisers pointed to (titu1994's
  neural-image-assessment). Keras conventions are kept so its ``.h5`` weights convert
  exactly: TensorFlow "same" padding, batch-norm ε = 1e-3, ReLU6, inputs x/127.5 − 1 on RGB.
  ``privbench weights add nima-mobilenet mobilenet_weights.h5`` converts the Keras file.
- ``vgg16``: torchvision's VGG-16 features with a dropout + linear (25088 → 10) head, as in
  the common PyTorch reimplementation (ImageNet normalisation, 224×224 input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.api.contracts import InputSpec, MetricValue, QualityMetric, WeightFile
from harness.core.errors import ModelFileError
from harness.core.params import Param
from harness.metrics.quality import mean_metric
from harness.toolkit import weights
from harness.toolkit.imaging import resize
from harness.toolkit.torch_modules import module_on

# (output channels, stride) of MobileNet v1's 13 depthwise-separable blocks.
MOBILENET_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
KERAS_BN_EPS = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TensorFlow's 'same': total max(k − s, 0) or max(k − n mod s, 0), the extra
    pixel after (bottom, right)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max(kernel - (stride if n % stride == 0 else n % stride), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class _ConvBN(nn.Module):
    def __init__(self, conv: nn.Conv2d, stride: int) -> None:
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels, eps=KERAS_BN_EPS)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(tf_same_pad(x, self.conv.kernel_size[0], self.stride))
        return F.relu6(self.bn(x))


class MobileNetNIMA(nn.Module):
    """MobileNet v1 + NIMA head; ``forward`` takes RGB in [0, 1] and returns p [B, 10]."""

    def __init__(self) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {"conv1": _ConvBN(nn.Conv2d(3, 32, 3, 2, bias=False), 2)}
        c_in = 32
        for i, (c_out, stride) in enumerate(MOBILENET_BLOCKS, start=1):
            dw = nn.Conv2d(c_in, c_in, 3, stride, groups=c_in, bias=False)
            layers[f"conv_dw_{i}"] = _ConvBN(dw, stride)
            layers[f"conv_pw_{i}"] = _ConvBN(nn.Conv2d(c_in, c_out, 1, bias=False), 1)
            c_in = c_out
        self.layers = nn.ModuleDict(layers)
        self.dropout = nn.Dropout(0.75)
        self.dense = nn.Linear(1024, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * 2.0 - 1.0  # Keras mobilenet.preprocess_input: x/127.5 − 1 on 0-255
        for layer in self.layers.values():
            x = layer(x)
        return self.dense(self.dropout(x.mean(dim=(2, 3)))).softmax(1)


class VGG16NIMA(nn.Module):
    """VGG-16 features + NIMA head; RGB in [0, 1] at 224×224 → p [B, 10]."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import vgg16

        self.features = vgg16(weights=None).features
        self.classifier = nn.Sequential(nn.Dropout(0.75), nn.Linear(25088, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.new_tensor(IMAGENET_MEAN)[None, :, None, None]
        std = images.new_tensor(IMAGENET_STD)[None, :, None, None]
        x = self.features((images - mean) / std)
        return self.classifier(x.flatten(1)).softmax(1)


MODELS: dict[str, type[nn.Module]] = {"mobilenet": MobileNetNIMA, "vgg16": VGG16NIMA}
DEFAULT_INPUT = {"mobilenet": None, "vgg16": 224}


def mean_score(p: torch.Tensor) -> torch.Tensor:
    """Σ_{i=1..10} i·p_i per row."""
    return (p * torch.arange(1, 11, dtype=p.dtype, device=p.device)).sum(1)


def keras_mobilenet_state(h5_path: Path) -> dict[str, torch.Tensor]:
    """A :class:`MobileNetNIMA` state dict from a Keras ``.h5`` (``save_weights`` or a whole
    saved model): kernels are HWIO (depthwise HWC1), dense kernels in × out."""
    import h5py

    def arrays(group: Any) -> dict[str, np.ndarray]:
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        return {n.split("/")[-1].split(":")[0]: np.asarray(group[n]) for n in names}

    state: dict[str, torch.Tensor] = {}
    with h5py.File(h5_path, "r") as f:
        root = f.get("model_weights", f)
        for raw in root.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else raw
            found = arrays(root[name])
            if not found:
                continue
            if name.startswith("dense"):
                state["dense.weight"] = torch.from_numpy(found["kernel"].T.copy())
                state["dense.bias"] = torch.from_numpy(found["bias"].copy())
            elif name.endswith("_bn"):
                base = f"layers.{name[:-3]}.bn"
                for keras_name, torch_name in (
                    ("gamma", "weight"),
                    ("beta", "bias"),
                    ("moving_mean", "running_mean"),
                    ("moving_variance", "running_var"),
                ):
                    state[f"{base}.{torch_name}"] = torch.from_numpy(found[keras_name].copy())
            elif "depthwise_kernel" in found:
                k = found["depthwise_kernel"].transpose(2, 3, 0, 1)
                state[f"layers.{name}.conv.weight"] = torch.from_numpy(k.copy())
            elif "kernel" in found:
                k = found["kernel"].transpose(3, 2, 0, 1)
                state[f"layers.{name}.conv.weight"] = torch.from_numpy(k.copy())
    reference = MobileNetNIMA().state_dict()
    for k in reference:
        if k.endswith("num_batches_tracked") and k.rsplit(".", 1)[0] + ".weight" in state:
            state[k] = torch.tensor(0)
    lacking = [k for k in reference if k not in state]
    if lacking:
        raise ModelFileError(
            f"{h5_path} is not a Keras MobileNet NIMA file: no weights for {lacking[0]} "
            f"(and {len(lacking) - 1} more)"
        )
    return state


_LOADED: dict[tuple[str, str], nn.Module] = {}


def load_nima(model: str, path: Path) -> nn.Module:
    """The NIMA model ``model`` with the state dict at ``path`` (loaded once per process)."""
    key = (model, str(path))
    if key not in _LOADED:
        net = weights.load_state_into(MODELS[model](), path, f"NIMA {model}")
        _LOADED[key] = net
    return _LOADED[key]


NIMA_PARAMS: dict[str, Param] = {
    "model": Param(str, "mobilenet", "backbone", choices=tuple(MODELS)),
    "weights": Param(str, None, "registered weights (default nima-<model>)"),
    "checkpoint": Param(str, None, "a state-dict file instead of registered weights"),
    "input_size": Param(
        int,
        None,
        "resize to this square side first (default: native size for mobilenet, as the task's "
        "evaluation ran; 224 for vgg16, whose head needs it)",
        low=32,
        high=4096,
    ),
}


WEIGHT_FILES = (
    WeightFile(
        name="nima-mobilenet",
        filename="nima/nima_mobilenet.pt",
        source="github.com/titu1994/neural-image-assessment (weights/mobilenet_weights.h5, "
        "the Keras NIMA the MediaEval 2019 organisers pointed to); `weights add` converts "
        "the .h5",
        licence="MIT (titu1994/neural-image-assessment; trained on AVA)",
        note="MobileNetNIMA state dict (harness.metrics.nima), or the Keras .h5 to convert",
        input_spec=InputSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        convert=keras_mobilenet_state,
        convert_suffixes=(".h5", ".hdf5"),
    ),
    WeightFile(
        name="nima-vgg16",
        filename="nima/nima_vgg16.pt",
        source="github.com/kentsyx/Neural-IMage-Assessment (a VGG-16 NIMA trained on AVA, "
        "epoch-82.pth)",
        licence="not stated by the publisher (research code)",
        note="state dict with features.* (torchvision VGG-16) and classifier.1.*",
        input_spec=InputSpec((224, 224), "rgb", IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
    ),
)


class NIMA(QualityMetric):
    """Mean NIMA score (1-10, higher is more aesthetic) of the uploaded protected photos, with
    a t-interval; the ``none`` defense's row is the clean photos' score."""

    display_order: ClassVar[int] = 75
    by_default: ClassVar[bool] = False  # needs weights: only where a suite names it
    higher_is_better = True
    params: ClassVar[dict[str, Param]] = NIMA_PARAMS
    weight_files: ClassVar[tuple[WeightFile, ...]] = WEIGHT_FILES
    parity: ClassVar[dict[str, Any]] = {
        "score": "sum_i i*p_i over 10 bins",
        "trained_on": "AVA",
        "mediaeval_2019_clean_mean": 4.64,
    }

    @classmethod
    def weights_name(cls, params: dict[str, Any]) -> str:
        return params.get("weights") or f"nima-{params.get('model', 'mobilenet')}"

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        return weights.model_file_missing(
            params.get("checkpoint"), cls.weights_name(params), cls.weight_files
        )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.lacking = self.missing(self.config)
        self._net: nn.Module | None = None

    def net(self) -> nn.Module:
        if self._net is None:
            path = weights.model_file(
                self.checkpoint, self.weights_name(self.config), self.weight_files
            )
            self.input_files = (path,)
            self._net = load_nima(self.model, path)
        return self._net

    def scores(self, images: torch.Tensor) -> np.ndarray:
        """NIMA mean scores [B] of RGB images in [0, 1]."""
        net = module_on(self.net(), images.device)
        side = self.input_size or DEFAULT_INPUT[self.model]
        x = resize(images.float(), (side, side), "bilinear") if side else images.float()
        with torch.inference_mode():
            return mean_score(net(x).double()).cpu().numpy()

    def per_image(self, original: torch.Tensor, protected: torch.Tensor) -> np.ndarray:
        if self.lacking:
            return np.full(len(protected), np.nan)
        return self.scores(protected)

    def compute(self, records: Any) -> MetricValue:
        if self.lacking:
            return MetricValue(None, 0, note="needs weights: " + " | ".join(self.lacking))
        return mean_metric(records.quality.get(self.key, np.zeros(0)), "no images")


class NIMAChange(NIMA):
    """Paired change of the NIMA score, protected minus clean, per photo, with a t-interval:
    how much more or less aesthetic the protection makes a photo."""

    display_order: ClassVar[int] = 76

    def per_image(self, original: torch.Tensor, protected: torch.Tensor) -> np.ndarray:
        if self.lacking:
            return np.full(len(protected), np.nan)
        return self.scores(protected) - self.scores(original)
