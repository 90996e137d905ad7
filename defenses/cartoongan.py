"""CartoonGAN's generator (Chen, Lai and Liu, CVPR 2018, §3.1), as the released PyTorch test
code builds it, used by Sakha's first two Pixel Privacy runs (MediaEval 2019) in the Hayao
style.

Encoder: reflect-pad 3 + conv 7×7 (3→64); conv 3×3 stride 2 (64→128) + conv 3×3; conv 3×3
stride 2 (128→256) + conv 3×3; each stage ends in instance normalisation (ε = 1e-9, with a
learned scale and shift) and ReLU. Eight residual blocks (reflect-pad 1, conv 3×3, IN, ReLU,
reflect-pad 1, conv 3×3, IN, plus the input). Decoder: twice [transposed conv 3×3 stride 2,
conv 3×3, IN, ReLU], then reflect-pad 3 + conv 7×7 (64→3) and tanh. The network sees BGR in
[−1, 1]. Module names match the published state dicts, so the released ``*_net_G_float.pth``
files load as they are (``privbench weights add cartoongan-hayao FILE``).

Sizes: the released script first resizes the longer side to 450 px, which for a 256×256 photo
gives 452×452 out (odd sizes do not survive the two halvings and doublings).
``sizes: pad`` (default) reflect-pads each side to a multiple of 4 and crops back, so the
photo keeps its size and is never resampled; ``sizes: reference`` resizes the longer side to
450 (bicubic) as the released script does and resizes the result back to the photo's size.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.api.contracts import Context, Defense, InputSpec, WeightFile
from harness.core.errors import ModelFileError
from harness.core.params import Param
from harness.toolkit import weights
from harness.toolkit.imaging import resize
from harness.toolkit.torch_modules import module_on

STYLES = ("hayao", "hosoda", "paprika", "shinkai")
REFERENCE_LONG_SIDE = 450

RELEASE = "http://vllab1.ucmerced.edu/~yli62/CartoonGAN/pytorch_pth/"
# The released generators, one per style (BGR in [−1, 1], any size divisible by 4).
WEIGHT_FILES = tuple(
    WeightFile(
        name=f"cartoongan-{style}",
        filename=f"cartoongan/{style.capitalize()}_net_G_float.pth",
        source=RELEASE + f"{style.capitalize()}_net_G_float.pth (the PyTorch port of "
        "CartoonGAN, github.com/Yijunmaverick/CartoonGAN-Test-Pytorch-Torch)",
        licence="not stated by the publisher (research code)",
        note=f"generator state dict, {style.capitalize()} style",
        input_spec=InputSpec(channels="bgr", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    )
    for style in STYLES
)


class InstanceNormalization(nn.Module):
    """Instance normalisation with the released code's ε = 1e-9 (``nn.InstanceNorm2d`` uses
    1e-5) and a learned per-channel ``scale`` and ``shift``; biased variance over H×W."""

    def __init__(self, channels: int, eps: float = 1e-9) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.scale[None, :, None, None] + self.shift[None, :, None, None]


class CartoonGenerator(nn.Module):
    """The generator; attribute names follow the released state dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.refpad01_1 = nn.ReflectionPad2d(3)
        self.conv01_1 = nn.Conv2d(3, 64, 7)
        self.in01_1 = InstanceNormalization(64)
        self.conv02_1 = nn.Conv2d(64, 128, 3, 2, 1)
        self.conv02_2 = nn.Conv2d(128, 128, 3, 1, 1)
        self.in02_1 = InstanceNormalization(128)
        self.conv03_1 = nn.Conv2d(128, 256, 3, 2, 1)
        self.conv03_2 = nn.Conv2d(256, 256, 3, 1, 1)
        self.in03_1 = InstanceNormalization(256)
        for block in range(4, 12):
            for half in (1, 2):
                setattr(self, f"refpad{block:02d}_{half}", nn.ReflectionPad2d(1))
                setattr(self, f"conv{block:02d}_{half}", nn.Conv2d(256, 256, 3))
                setattr(self, f"in{block:02d}_{half}", InstanceNormalization(256))
        self.deconv01_1 = nn.ConvTranspose2d(256, 128, 3, 2, 1, 1)
        self.deconv01_2 = nn.Conv2d(128, 128, 3, 1, 1)
        self.in12_1 = InstanceNormalization(128)
        self.deconv02_1 = nn.ConvTranspose2d(128, 64, 3, 2, 1, 1)
        self.deconv02_2 = nn.Conv2d(64, 64, 3, 1, 1)
        self.in13_1 = InstanceNormalization(64)
        self.refpad12_1 = nn.ReflectionPad2d(3)
        self.deconv03_1 = nn.Conv2d(64, 3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BGR in [−1, 1] → BGR in [−1, 1]; H and W must be multiples of 4."""
        t = F.relu(self.in01_1(self.conv01_1(self.refpad01_1(x))))
        t = F.relu(self.in02_1(self.conv02_2(self.conv02_1(t))))
        t = F.relu(self.in03_1(self.conv03_2(self.conv03_1(t))))
        for block in range(4, 12):
            part = getattr(self, f"refpad{block:02d}_1")(t)
            part = F.relu(
                getattr(self, f"in{block:02d}_1")(getattr(self, f"conv{block:02d}_1")(part))
            )
            part = getattr(self, f"refpad{block:02d}_2")(part)
            t = getattr(self, f"in{block:02d}_2")(getattr(self, f"conv{block:02d}_2")(part)) + t
        t = F.relu(self.in12_1(self.deconv01_2(self.deconv01_1(t))))
        t = F.relu(self.in13_1(self.deconv02_2(self.deconv02_1(t))))
        return torch.tanh(self.deconv03_1(self.refpad12_1(t)))


def stylise(generator: CartoonGenerator, images: torch.Tensor, sizes: str) -> torch.Tensor:
    """RGB [B, 3, H, W] in [0, 1] → the cartoon, same shape, in [0, 1]."""
    h, w = images.shape[-2:]
    x = images
    if sizes == "reference":
        scale = REFERENCE_LONG_SIDE / max(h, w)
        x = resize(x, (max(1, round(h * scale)), max(1, round(w * scale))), "bicubic")
    xh, xw = x.shape[-2:]
    pad_h, pad_w = (-xh) % 4, (-xw) % 4
    mode = "reflect" if min(xh, xw) > max(pad_h, pad_w) else "replicate"
    x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    y = generator(x.flip(1) * 2.0 - 1.0).flip(1) * 0.5 + 0.5
    y = y[..., :xh, :xw]
    if sizes == "reference":
        y = resize(y, (h, w), "bicubic")
    return y.clamp(0.0, 1.0)


class CartoonGAN(Defense):
    """Style transfer with a CartoonGAN generator from local weights (see the module notes)."""

    family: ClassVar[str | None] = "generative"
    params: ClassVar[dict[str, Param]] = {
        "style": Param(str, "hayao", "registered style weights", choices=STYLES),
        "checkpoint": Param(str, None, "a generator state-dict file instead of the style's"),
        "sizes": Param(
            str,
            "pad",
            "pad to multiples of 4 (pad) or the released 450 px resize (reference)",
            choices=("pad", "reference"),
        ),
    }
    weight_files: ClassVar[tuple[WeightFile, ...]] = WEIGHT_FILES

    @classmethod
    def missing(cls, params: dict[str, Any]) -> list[str]:
        return weights.model_file_missing(
            params.get("checkpoint"), f"cartoongan-{params.get('style', 'hayao')}", cls.weight_files
        )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        lacking = self.missing(self.config)
        if lacking:
            raise ModelFileError("needs weights: " + " | ".join(lacking))
        path = weights.model_file(self.checkpoint, f"cartoongan-{self.style}", self.weight_files)
        self.input_files = (path,)
        self.generator = load_generator(path)

    def protect(self, images: torch.Tensor, ids: list[str], ctx: Context) -> torch.Tensor:
        module_on(self.generator, images.device)
        with torch.inference_mode():
            return stylise(self.generator, images, self.sizes)


def load_generator(path: Any) -> CartoonGenerator:
    """A generator with the state dict in ``path``; ModelFileError naming the file otherwise."""
    return weights.load_state_into(CartoonGenerator(), path, "CartoonGAN generator")
