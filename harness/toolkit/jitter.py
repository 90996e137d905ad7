"""The random photo processings of Oh, Fritz and Schiele (ICCV 2017, §4.3 and §5.2): the owner
averages gradients over them to make an AIP robust, and the platform applies them (and sums the
recognizer's scores over several draws) to neutralise one.

- ``T``: translate by a whole number of pixels, up to 5% of the height and width either way
  (at least one pixel), filling with black;
- ``N``: add Gaussian noise of σ 10 levels on the 0-255 scale;
- ``B``: Gaussian blur with an odd kernel side drawn from ``blur_kernels``, with the kernel
  ``cv2.GaussianBlur(…, (k, k), 0)`` uses for that side, reflect-101 borders;
- ``C``: crop up to 10% off each side independently (at least one pixel), then zoom back to
  the full size (bilinear, corners aligned, as ``scipy.ndimage.zoom(order=1)``).

``O`` is the identity. Every processing is a torch operation, so a gradient taken through it
is the processing's adjoint: for ``T`` the gradient is shifted back (pixels that left the frame
get none), for ``B`` it is blurred with the same symmetric kernel, for ``C`` it is zoomed back
into the cropped window. That is how the released code undoes each processing by hand.

Each image draws from its own generator, so the draws of a photo do not depend on the batch it
was in. ART's expectation-over-transformation preprocessors are not used: they have no
translation and no Gaussian blur, their crop is centred, and they draw from numpy's global
generator image after image, which ties a photo's draws to its position in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

KINDS = ("O", "T", "N", "B", "C")
TRANSLATION = 0.05  # largest shift, a fraction of each side
NOISE_LEVELS = 10.0  # σ on the 0-255 scale
CROP = 0.10  # largest cut from each side, a fraction of that dimension
OWNER_BLUR_KERNELS = (3, 5, 7, 9)  # what the owner robustifies against (released code)
PLATFORM_BLUR_KERNELS = (1, 3, 5, 7, 9)  # what the platform draws (1 leaves the photo as is)


def opencv_blur(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[B, C, H, W] blurred as ``cv2.GaussianBlur(…, (k, k), 0)`` does: OpenCV's own kernel
    for that side (its fixed tables up to 7, the σ rule beyond), separable, reflect-101
    borders. Differentiable."""
    import cv2

    k = kernel_size
    taps = torch.from_numpy(cv2.getGaussianKernel(k, 0)[:, 0]).to(images)
    c = images.shape[1]
    x = F.pad(images, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def reach(fraction: float, side: int) -> int:
    """The largest shift or cut in whole pixels: ``fraction`` of ``side``, rounded, at least 1
    (on a thumbnail 5% is under a pixel, and a processing that never moves anything is none)."""
    return max(1, round(fraction * side))


def translate(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """[C, H, W] moved down by ``dy`` and right by ``dx`` pixels, black where nothing comes in."""
    h, w = image.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return torch.zeros_like(image)
    kept = image[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return F.pad(kept, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))


def crop_zoom(image: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """[C, H, W] with the given rows and columns cut off each side, zoomed back to H × W."""
    h, w = image.shape[-2:]
    window = image[..., top : h - bottom, left : w - right]
    if window.shape[-2:] == image.shape[-2:]:
        return image
    return F.interpolate(window[None], size=(h, w), mode="bilinear", align_corners=True)[0]


def jitter(
    kind: str,
    images: torch.Tensor,
    rngs: Sequence[np.random.Generator],
    blur_kernels: Sequence[int] = OWNER_BLUR_KERNELS,
) -> torch.Tensor:
    """One random draw of processing ``kind`` for each image of [B, 3, H, W], image ``i``
    drawing from ``rngs[i]``. Differentiable; not clipped (the caller decides)."""
    if kind == "O":
        return images
    if kind == "N":
        noise = np.stack([rng.standard_normal(images.shape[1:]) for rng in rngs])
        return images + torch.from_numpy(noise).to(images) * (NOISE_LEVELS / 255.0)
    h, w = images.shape[-2:]
    out = []
    for image, rng in zip(images, rngs, strict=True):
        if kind == "T":
            my, mx = reach(TRANSLATION, h), reach(TRANSLATION, w)
            dy, dx = rng.integers(-my, my + 1), rng.integers(-mx, mx + 1)
            out.append(translate(image, int(dy), int(dx)))
        elif kind == "B":
            k = int(rng.choice(blur_kernels))
            k = min(k, 2 * min(h, w) - 1)  # reflect padding needs k // 2 < side
            out.append(opencv_blur(image[None], k)[0] if k > 1 else image)
        elif kind == "C":
            cy, cx = reach(CROP, h), reach(CROP, w)
            top, bottom = rng.integers(0, cy + 1, size=2)
            left, right = rng.integers(0, cx + 1, size=2)
            out.append(crop_zoom(image, int(top), int(bottom), int(left), int(right)))
        else:
            raise ValueError(f"unknown processing {kind!r}; valid: {', '.join(KINDS)}")
    return torch.stack(out)
