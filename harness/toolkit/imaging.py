"""Image conversions shared by the engine and the methods.

uint8 [N, H, W, C] arrays ⇄ float32 [B, 3, H, W] tensors in [0, 1]; the upload quantiser; resizing
to a recognizer's :class:`~harness.api.contracts.InputSpec`; and the basic filters that several
defenses and counter-attacks share.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.api.contracts import InputSpec
from harness.core.params import Param


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, C] (C = 1 or 3) → float32 [N, 3, H, W] in [0, 1]; gray is replicated."""
    arr = images if images.flags.writeable else images.copy()
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    t = t.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1).contiguous()
    return t


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [0, 1] → uint8 [B, H, W, 3], rounding half to even, clipping."""
    q = torch.round(images.detach().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return q.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Round to the uint8 grid while staying a float tensor (what a PNG upload keeps)."""
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as baseline JPEG at ``quality`` with Pillow (libjpeg) and decode it."""
    arrays = to_uint8(images)
    out = np.empty_like(arrays)
    for i, arr in enumerate(arrays):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return to_tensor(out, images.device)


def rgb565(images: torch.Tensor) -> torch.Tensor:
    """Store as 16-bit RGB 5/6/5 and read back, as an Android ``Bitmap.Config.RGB_565`` does
    (Skia): round to 8 bits, keep the top 5/6/5 bits of R/G/B, expand back to 8 bits by bit
    replication (v5 → v5·8 + v5 // 4, v6 → v6·4 + v6 // 16). The protective U-Net's phone app
    stored its outputs this way before saving them as PNG (Ye et al., ACM MMSys 2022, §4)."""
    q = torch.round(images.clamp(0.0, 1.0) * 255.0).to(torch.int32)
    bits = torch.tensor([5, 6, 5], device=images.device, dtype=torch.int32).view(1, 3, 1, 1)
    top = q >> (8 - bits)
    expanded = (top << (8 - bits)) | (top >> (2 * bits - 8))
    return expanded.to(images.dtype) / 255.0


def simulate_upload(images: torch.Tensor, fmt: str, quality: int) -> torch.Tensor:
    """What the platform receives: PNG keeps the uint8 grid, JPEG re-encodes at ``quality``,
    RGB565 keeps 5/6/5 bits per channel (then PNG, which is lossless)."""
    if fmt == "png":
        return quantise(images)
    if fmt == "jpeg":
        return jpeg_roundtrip(images, quality)
    if fmt == "rgb565":
        return rgb565(images)
    raise ValueError(f"unknown upload format {fmt!r}; valid: png, jpeg, rgb565")


_TORCH_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "area": "area"}


def resize(
    images: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic"
) -> torch.Tensor:
    """Resize [B, 3, H, W] to ``size`` (H, W); antialiased when shrinking, clamped to [0, 1]."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    mode = _TORCH_MODES[interpolation]
    kwargs: dict[str, object] = {}
    if mode in ("bicubic", "bilinear"):
        kwargs = {"align_corners": False, "antialias": True}
    return F.interpolate(images, size=size, mode=mode, **kwargs).clamp_(0.0, 1.0)


def letterbox(
    images: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear"
) -> torch.Tensor:
    """Resize [B, C, H, W] into ``size`` (H, W) keeping the aspect ratio and centre it between
    black bars, as deepface's ``resize_image`` does (sides truncated to integers)."""
    h, w = images.shape[-2:]
    factor = min(size[0] / h, size[1] / w)
    inner = (max(1, int(h * factor)), max(1, int(w * factor)))
    x = resize(images, inner, interpolation)
    dh, dw = size[0] - inner[0], size[1] - inner[1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def apply_input_spec(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Resize, reorder channels and normalise ``images`` as the recognizer's spec says."""
    x = resize(images, spec.size, spec.interpolation) if spec.size else images
    if spec.channels == "bgr":
        x = x.flip(1)
    elif spec.channels == "gray":
        x = rgb_to_gray(x)[:, :1]
    mean = torch.tensor(spec.mean[: x.shape[1]], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std[: x.shape[1]], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma (0.299, 0.587, 0.114), as Pillow's 'L'; replicated to 3 channels."""
    w = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
    y = (images * w.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return y.expand(-1, 3, -1, -1).contiguous()


def gaussian_kernel_size(sigma: float) -> int:
    """The usual odd kernel side covering ±3σ: 2·ceil(3σ) + 1."""
    return 2 * math.ceil(3.0 * sigma) + 1


GAUSSIAN_BLUR_PARAMS: dict[str, Param] = {
    "sigma": Param(float, 1.0, "standard deviation in pixels", low=0.0, low_open=True, high=100.0),
    "kernel_size": Param(int, 0, "odd kernel side; 0 = 2·ceil(3σ)+1", low=0, high=401, odd=True),
}


def gaussian_blur(images: torch.Tensor, sigma: float, kernel_size: int = 0) -> torch.Tensor:
    """Gaussian blur with reflect padding; ``kernel_size`` 0 means 2·ceil(3σ)+1.

    The kernel is capped to the largest odd side that reflect padding allows for the image.
    """
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    k = kernel_size or gaussian_kernel_size(sigma)
    limit = 2 * (min(images.shape[-2:]) - 1) + 1
    k = min(k, limit if limit % 2 == 1 else limit - 1)
    return tv_blur(images, kernel_size=[k, k], sigma=[sigma, sigma])


def median_filter(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-channel k×k median with reflect borders (scipy.ndimage, the reference implementation)."""
    from scipy.ndimage import median_filter as nd_median

    arr = images.detach().cpu().numpy()
    out = nd_median(arr, size=(1, 1, kernel_size, kernel_size), mode="reflect")
    return torch.from_numpy(out).to(images.device)


def pixelate(images: torch.Tensor, block: int) -> torch.Tensor:
    """Replace each block×block cell by its mean; border cells average the pixels they have."""
    if block <= 1:
        return images.clone()
    h, w = images.shape[-2:]
    pooled = F.avg_pool2d(
        images, kernel_size=block, stride=block, ceil_mode=True, count_include_pad=False
    )
    up = pooled.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    return up[..., :h, :w].contiguous()
