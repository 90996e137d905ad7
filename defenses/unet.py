"""The protective U-Net generator (Ye et al., ACM MMSys 2022, §3.2; architecture of the
authors' released code).

Four 2× downsampling stages and four upsampling stages with skip connections; every stage is a
double 3×3 convolution with batch normalisation and LeakyReLU(0.2). The generator adds its
output to its (normalised) input and clamps the sum to the normalised image range, so the
protected photo is ``clamp(x + σ·U(x̂), 0, 1)`` in pixel space. With the paper's base width of
32 channels it has 7,766,051 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """[conv 3×3 (padding 1) → batch norm → LeakyReLU(0.2)] × 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2, inplace=True),
        )


class Down(nn.Sequential):
    """2×2 max-pool, then a double convolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(c_in, c_out))


class Up(nn.Module):
    """Transposed 2×2 convolution (stride 2) halving the channels, concatenation with the skip
    connection, then a double convolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(c_in, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class ProtectiveUNet(nn.Module):
    """The generator on normalised images ``x̂ = (x − μ)/σ``; returns normalised images.

    ``width`` is the first stage's channel count (32 in the paper; the later stages double it).
    Sides must be multiples of 16 (four 2× poolings); :meth:`protect` pads other sizes.
    """

    def __init__(
        self,
        width: int = 32,
        mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465),
        std: tuple[float, float, float] = (0.2471, 0.2435, 0.2616),
    ) -> None:
        super().__init__()
        w = width
        self.inc = DoubleConv(3, w)
        self.down1, self.down2 = Down(w, 2 * w), Down(2 * w, 4 * w)
        self.down3, self.down4 = Down(4 * w, 8 * w), Down(8 * w, 16 * w)
        self.up1, self.up2 = Up(16 * w, 8 * w), Up(8 * w, 4 * w)
        self.up3, self.up4 = Up(4 * w, 2 * w), Up(2 * w, w)
        self.outc = nn.Conv2d(w, 3, kernel_size=1)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x_norm: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x_norm)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        y = self.up4(self.up3(self.up2(self.up1(x5, x4), x3), x2), x1)
        low, high = (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std
        return torch.maximum(torch.minimum(self.outc(y) + x_norm, high), low)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def denormalise(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.std + self.mean

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → protected images in [0, 1], same shape. Sides that are not
        multiples of 16 are reflect-padded for the generator and cropped back."""
        h, w = images.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        x = F.pad(images, (0, pw, 0, ph), mode="reflect") if ph or pw else images
        out = self.denormalise(self.forward(self.normalise(x)))
        return out[..., :h, :w].clamp(0.0, 1.0)


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
