"""The CIFAR-10 classifier zoo of huyvnphan/PyTorch_CIFAR10, used as targets and auxiliary
models by the protective U-Net paper (Ye et al., MMSys 2022, §4.1.3, Table 1).

Those are torchvision's ImageNet architectures with a CIFAR stem, trained at 32×32 on inputs
normalised with mean (0.4914, 0.4822, 0.4465) and std (0.2471, 0.2435, 0.2616) (the values in
the repository's ``data.py``, which trained the zoo; its README's std (0.2023, 0.1994, 0.2010)
is wrong). The published weights are state dicts named ``<arch>.pt`` inside
``state_dicts.zip``; their keys are torchvision's, so each model is built here by editing a
torchvision model rather than re-implementing it. The edits, per the repository's
``cifar10_models/`` (v3):

- VGG*_bn: global 1×1 average pool and a 512→4096 first classifier layer (not 25088→4096).
- ResNet*: 3×3 stride-1 stem conv; the 3×3 stride-2 max-pool after it is kept.
- DenseNet*: 3×3 stride-1 ``conv0``; ``pool0`` kept.
- MobileNet_v2: stride 1 in the stem and in the second inverted-residual stage.
- GoogLeNet: a 192-channel 3×3 stride-1 ``conv1``; ``maxpool1``, ``conv2``, ``conv3``,
  ``maxpool2`` removed; ``maxpool3`` and ``maxpool4`` are 3×3, stride 2, padding 1.
- Inception_v3: a 192-channel 3×3 stride-1 ``Conv2d_1a_3x3``; ``Conv2d_2a_3x3`` to
  ``Conv2d_4a_3x3`` and both stem max-pools removed.

Max-pools have no parameters, so a wrong stem would still load the weights and predict badly;
the parameter counts are checked against the repository's table (``PUBLISHED_PARAMS``) in the
tests, and a real state dict's keys and shapes are checked strictly at load time.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torchvision
from torch import nn

from harness.api.contracts import InputSpec, WeightFile
from harness.core.params import Param
from recognizers.torchvision_classifier import TorchvisionClassifier

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

# Parameter counts in millions, from the repository's README table (Ye et al., Table 1).
PUBLISHED_PARAMS: dict[str, float] = {
    "vgg11_bn": 28.150,
    "vgg13_bn": 28.334,
    "vgg16_bn": 33.647,
    "vgg19_bn": 38.959,
    "resnet18": 11.174,
    "resnet34": 21.282,
    "resnet50": 23.521,
    "densenet121": 6.956,
    "densenet161": 26.483,
    "densenet169": 12.493,
    "mobilenet_v2": 2.237,
    "googlenet": 5.491,
    "inception_v3": 21.640,
}
ARCHITECTURES = (
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
# The zoo's weights are one zip of state dicts (933 MB); the repository publishes no checksums.
ZOO_SOURCE = (
    "https://rutgers.box.com/shared/static/y9wi8ic7bshe2nn63prj9vsea7wibd4x.zip "
    "(state_dicts.zip of github.com/huyvnphan/PyTorch_CIFAR10)"
)
WEIGHT_FILES = tuple(
    WeightFile(
        name=f"cifar10-{arch}",
        filename=f"cifar10/{arch}.pt",
        source=ZOO_SOURCE,
        licence="MIT (huyvnphan/PyTorch_CIFAR10)",
        note=f"state dict cifar10_models/state_dicts/{arch}.pt inside state_dicts.zip",
        input_spec=InputSpec((32, 32), "rgb", CIFAR10_MEAN, CIFAR10_STD, "bilinear"),
    )
    for arch in ARCHITECTURES
)
PAPER_ZOO = (
    "vgg13_bn",
    "vgg16_bn",
    "resnet18",
    "resnet34",
    "densenet121",
    "mobilenet_v2",
    "googlenet",
    "inception_v3",
)


def _basic_conv(in_channels: int, out_channels: int) -> nn.Module:
    """torchvision's Inception BasicConv2d (conv without bias, BN eps 1e-3, ReLU), 3×3 same."""
    from torchvision.models.inception import BasicConv2d

    return BasicConv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def build_cifar10_model(arch: str, num_classes: int = 10) -> nn.Module:
    """The CIFAR-10 variant of torchvision architecture ``arch`` (untrained, eval mode)."""
    models = torchvision.models
    if arch.startswith("vgg"):
        model = getattr(models, arch)(weights=None, num_classes=num_classes)
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        model.classifier[0] = nn.Linear(512, 4096)
    elif arch.startswith("resnet"):
        model = getattr(models, arch)(weights=None, num_classes=num_classes)
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif arch.startswith("densenet"):
        model = getattr(models, arch)(weights=None, num_classes=num_classes)
        width = model.features.conv0.out_channels
        model.features.conv0 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    elif arch == "mobilenet_v2":
        setting = [
            [1, 16, 1, 1],
            [6, 24, 2, 1],
            [6, 32, 3, 2],
            [6, 64, 4, 2],
            [6, 96, 3, 1],
            [6, 160, 3, 2],
            [6, 320, 1, 1],
        ]
        model = models.mobilenet_v2(
            weights=None, num_classes=num_classes, inverted_residual_setting=setting
        )
        model.features[0][0].stride = (1, 1)
    elif arch == "googlenet":
        model = models.googlenet(
            weights=None, num_classes=num_classes, aux_logits=False, init_weights=False
        )
        model.conv1 = _basic_conv(3, 192)
        model.maxpool1 = model.conv2 = model.conv3 = model.maxpool2 = nn.Identity()
        model.maxpool3 = nn.MaxPool2d(3, stride=2, padding=1)
        model.maxpool4 = nn.MaxPool2d(3, stride=2, padding=1)
    elif arch == "inception_v3":
        model = models.inception_v3(
            weights=None, num_classes=num_classes, aux_logits=False, init_weights=False
        )
        model.Conv2d_1a_3x3 = _basic_conv(3, 192)
        for name in ("Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1"):
            setattr(model, name, nn.Identity())
        model.Conv2d_4a_3x3 = model.maxpool2 = nn.Identity()
    else:
        raise ValueError(f"no CIFAR-10 variant of {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (what the zoo's table counts)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Cifar10Classifier(TorchvisionClassifier):
    """A CIFAR-10 zoo classifier (Ye et al.'s targets) from registered weights
    ``cifar10-<arch>`` or a ``checkpoint`` path: 32×32 input, CIFAR normalisation; batched,
    under inference mode, differentiable through ``logits``."""

    normalisation: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]] = (
        CIFAR10_MEAN,
        CIFAR10_STD,
    )
    params: ClassVar[dict[str, Param]] = {
        **TorchvisionClassifier.params,
        "arch": Param(str, "resnet18", "CIFAR-10 zoo architecture", choices=ARCHITECTURES),
        "weights": Param(str, None, "registered weight name (default cifar10-<arch>)"),
        "num_classes": Param(int, 10, "classes of the model's head", low=1),
        "input_size": Param(int, 32, "square input side", low=16, high=4096),
    }
    weight_files: ClassVar[tuple[WeightFile, ...]] = WEIGHT_FILES

    @classmethod
    def default_weights(cls, params: dict[str, Any]) -> str | None:
        return None if params.get("checkpoint") else f"cifar10-{params['arch']}"

    def build_model(self) -> torch.nn.Module:
        return build_cifar10_model(self.arch, self.num_classes)
